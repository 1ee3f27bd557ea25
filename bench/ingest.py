"""Ingestion throughput per embedding runtime, side by side in one run.

    python bench/ingest.py FOLDER [--runtimes torch onnx onnx-int8] [--rounds 2]
                                  [--gold tests/data/eval/natural/en tests/data/eval/natural/ja]

Every runtime of the local model (`TAIMATSU_EMBED_RUNTIME`) is loaded first (the ONNX
ones exported into a temporary cache: the first-use cost, printed, not counted), then:

1. A full `Ingestor.run` over FOLDER into a fresh temporary index, per runtime, the
   runtimes taking turns for `--rounds` rounds (the best round counts: the machine is
   shared): the pipeline's chunks per second, its ratio to torch's, and the fraction of
   the run the model was busy (time inside `Embedder.embed`; target >= 0.90).
2. The raw encoder (`Embedder.embed` alone over exactly the texts the pipeline embedded,
   same batch size) per runtime: the pipeline's share of it. Target >= 0.85.
3. A second run over the unchanged folder, as a fraction of the first. Target < 0.03.
4. One question's embedding, median over the questions (ms), per runtime.
5. With `--gold`: each gold set's corpus ingested per runtime (its chunks per second
   too) and its questions scored through the product's retrieval, by-language (the
   default) and dense only: hit@5 and MRR@10 beside torch's (target: within 0.01).
6. Peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project, not bench/ingest.py
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from assistant.embedder import Embedder  # noqa: E402
from assistant.evaluation import Retriever, load_gold, score_retrieval  # noqa: E402
from assistant.index import Field, Index, open_index  # noqa: E402
from assistant.retrieval import Searcher  # noqa: E402
from assistant.settings import Settings  # noqa: E402
from ingest.pipeline import Ingestor  # noqa: E402

RUNTIMES = ("torch", "onnx", "onnx-int8")
QUESTIONS = (
    "How do I rebuild the index after changing the model?",
    "What does dpkg-buildpackage do?",
    "パッケージのメンテナーになるにはどうすればよいですか",
    "How are file permissions mapped to groups?",
)


def embedded_texts(index: Index) -> list[str]:
    """The texts the pipeline gave the model: heading path + chunk text."""
    texts = []
    for root in index.roots():
        for source, info in index.manifest(root).items():
            for doc_hash in info.hashes:
                for point in index.points_of(root, source, doc_hash):
                    section = point.payload.get(Field.SECTION)
                    text = point.payload.get(Field.TEXT, "")
                    texts.append(f"{section}\n{text}" if section else text)
    return texts


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ingest(settings: Settings, embedder: Embedder, folder: Path) -> tuple[int, float, float]:
    """Chunks, seconds and the model's busy fraction of one run into a fresh index."""
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    embedder.encode_seconds = 0.0
    start = time.perf_counter()
    summary = Ingestor(settings, embedder).run(folder)
    seconds = time.perf_counter() - start
    return summary.chunks_embedded, seconds, embedder.encode_seconds / seconds


def query_ms(embedder: Embedder, questions: list[str]) -> float:
    times = []
    for question in questions:
        start = time.perf_counter()
        embedder.embed_query(question)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--gold", type=Path, nargs="*", default=[], help="gold set folders")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of a set")
    args = parser.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"bench/ingest.py: {args.folder} is not a folder")
    runtimes: list[str] = args.runtimes
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = Settings()
        embedders: dict[str, Embedder] = {}
        for runtime in runtimes:
            embedder = Embedder(
                base.embed_model_dir, base.embed_batch_size, runtime, work / "models"
            )
            start = time.perf_counter()
            embedder.load()
            embedder.embed(["warm up the model"])
            log(f"{runtime}: loaded (and exported) in {time.perf_counter() - start:.1f} s")
            embedders[runtime] = embedder

        def settings_for(name: str) -> Settings:
            return base.model_copy(update={"data_dir": work / name})

        best: dict[str, tuple[int, float, float]] = {}
        for round_ in range(args.rounds):
            for runtime in runtimes:
                chunks, seconds, busy = ingest(
                    settings_for(f"folder-{runtime}"), embedders[runtime], args.folder
                )
                log(f"round {round_ + 1} {runtime}: {chunks} chunks in {seconds:.1f} s")
                if runtime not in best or seconds < best[runtime][1]:
                    best[runtime] = (chunks, seconds, busy)

        default = runtimes[-1]
        settings = settings_for(f"folder-{default}")
        start = time.perf_counter()
        second = Ingestor(settings, embedders[default]).run(args.folder)
        second_s = time.perf_counter() - start
        texts = embedded_texts(open_index(settings))
        raw: dict[str, float] = {}
        for runtime in runtimes:
            start = time.perf_counter()
            embedders[runtime].embed(texts)
            raw[runtime] = time.perf_counter() - start

        questions = list(QUESTIONS)
        gold_rows: list[tuple[str, str, int, float, dict[str, tuple[float, float]]]] = []
        for folder in args.gold:
            items = load_gold(folder / "gold.jsonl")[: args.limit]
            questions += [item.question for item in items[:40]]
            for runtime in runtimes:
                settings = settings_for(f"gold-{folder.name}-{runtime}")
                chunks, seconds, _ = ingest(settings, embedders[runtime], folder / "corpus")
                retriever = Retriever(Searcher(settings, embedders[runtime]), ["everyone"])
                scores = {}
                for mode in ("by-language", "dense"):
                    row = score_retrieval(
                        mode, items, lambda q, m=mode, r=retriever: r.search(q, m)
                    )
                    scores[mode] = (row.hit5, row.mrr10)
                log(f"{folder.name} {runtime}: {chunks} chunks in {seconds:.1f} s, {scores}")
                gold_rows.append((folder.name, runtime, chunks, seconds, scores))
        latency = {runtime: [] for runtime in runtimes}
        for _ in range(3):  # the runtimes take turns, the median of each counts
            for runtime in runtimes:
                latency[runtime].append(query_ms(embedders[runtime], questions))
        query = {runtime: statistics.median(values) for runtime, values in latency.items()}

    chunks = best[runtimes[0]][0]
    assert second.chunks_embedded == 0 and len(texts) == chunks
    ref = runtimes[0]
    print(f"{args.folder}: {second.files_seen} files, {chunks} chunks per run")
    print(
        f"{'runtime':12}{'ingest s':>10}{'chunks/s':>10}{'× ' + ref:>10}{'busy':>7}"
        f"{'raw s':>8}{'raw ch/s':>10}{'of raw':>8}{'query ms':>10}{'× ' + ref:>9}"
    )
    for runtime in runtimes:
        n, seconds, busy = best[runtime]
        rate, raw_rate = n / seconds, n / raw[runtime]
        print(
            f"{runtime:12}{seconds:>10.1f}{rate:>10.1f}"
            f"{best[ref][1] / seconds:>10.2f}{busy:>7.2f}{raw[runtime]:>8.1f}{raw_rate:>10.1f}"
            f"{rate / raw_rate:>8.2f}{query[runtime]:>10.1f}{query[ref] / query[runtime]:>9.2f}"
        )
    print("targets: busy >= 0.90, pipeline >= 0.85 of raw, ingestion and query >= 2x torch")
    print(
        f"second run ({default}), nothing changed: {second_s:.2f} s, "
        f"{second_s / best[default][1]:.3f} of the first (target < 0.03)"
    )
    if gold_rows:
        print(
            f"\n{'gold set':10}{'runtime':12}{'chunks':>7}{'chunks/s':>10}"
            f"{'hit@5':>8}{'MRR@10':>8}{'Δhit@5':>8}{'ΔMRR':>8}"
            f"{'dense hit@5':>12}{'MRR@10':>8}{'Δhit@5':>8}{'ΔMRR':>8}"
        )
        refs = {(name, "ref"): scores for name, rt, _, _, scores in gold_rows if rt == ref}
        for name, runtime, n, seconds, scores in gold_rows:
            cells = ""
            for mode in ("by-language", "dense"):
                hit5, mrr = scores[mode]
                rhit5, rmrr = refs[(name, "ref")][mode]
                cells += f"{hit5:>{12 if mode == 'dense' else 8}.3f}{mrr:>8.3f}"
                cells += f"{hit5 - rhit5:>+8.3f}{mrr - rmrr:>+8.3f}"
            print(f"{name:10}{runtime:12}{n:>7}{n / seconds:>10.1f}{cells}")
        print(f"target: every Δ within ±0.01 of {ref}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
