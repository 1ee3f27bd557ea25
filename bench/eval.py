"""Answer quality side by side: our pipeline's settings against a plain llama-index setup.

    python scripts/build_eval.py                     # corpora + gold under data/eval
    python bench/eval.py [--data data/eval] [--sets perl ja] [--chunk-sizes 200 128]

For each gold set, in one run:

- ours: the set's corpus ingested by the product's Ingestor (fresh index per chunk size,
  timed), then every question scored in each `TAIMATSU_RETRIEVAL` setting through the
  product's query path: by-language (the default), hybrid, dense only and keyword only
  (same group filter); `--modes` adds the ablations rrf:D:K and bylang;
- hybrid + reranker: with `--reranker DIR` (a cross-encoder folder), else reported as not
  measured; hybrid + served reranker: one more row whenever a /rerank endpoint is
  reachable (`--reranker-url URL` or `TAIMATSU_RERANKER_URL`);
- the embedding model is the configured one (`TAIMATSU_EMBED_BACKEND`, `_URL`, `_MODEL`,
  prefixes: a served model such as multilingual-e5 is measured the same way); sets whose
  `corpus` is the same folder (a symlink) share one index;
- plain llama-index: `VectorStoreIndex.from_documents(SimpleDirectoryReader(corpus))`
  with default settings and the same embedding model through `HuggingFaceEmbedding`
  (the packaged all-MiniLM-L6-v2 folder), timed, its retriever asked for 10 nodes.

Then the answer gate (`min_similarity`, `min_keyword_coverage`): the share of the set's
own questions that would be answered (the gold is in the index) beside the share of the
other set's questions, asked of this index, that would be answered too (nothing relevant
is there), for a grid of thresholds, on the best `top_k` passages of the default retrieval.

Prints one table per set and the gate table; writes JSON and an HTML report (inline SVG
chart) to bench/results/. Retrieval only: no model is needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from assistant.embedder import Embedder, TextEmbedder, default_model_dir  # noqa: E402
from assistant.evaluation import (  # noqa: E402  # noqa: E402
    MODES,
    GoldItem,
    Retriever,
    SettingScores,
    html_report,
    load_gold,
    score_retrieval,
    table,
)
from assistant.retrieval import (
    Searcher,  # noqa: E402
    language_of,  # noqa: E402
)
from assistant.retrieval.rerank import ServedReranker  # noqa: E402
from assistant.served_embedder import open_embedder  # noqa: E402
from assistant.settings import Settings  # noqa: E402
from ingest.pipeline import Ingestor  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIMILARITIES = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
COVERAGES = (0.3, 0.4, 0.5, 0.6)
NOT_MEASURED = "not measured: no local cross-encoder model (give one with --reranker DIR)"


class Saved:
    """Rows measured so far, one JSON line each in `<out>.rows.jsonl`, so that a run
    killed midway, restarted with --keep, measures only what is missing."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            path.unlink(missing_ok=True)
        lines = path.read_text("utf-8").splitlines() if path.exists() else []
        self.rows = {(r["set"], r["name"]): r for r in map(json.loads, lines)}

    def get(self, name: str, setting: str) -> dict | None:
        row = self.rows.get((name, setting))
        return {k: v for k, v in row.items() if k != "set"} if row else None

    def put(self, name: str, row: dict) -> dict:
        self.rows[(name, row["name"])] = {"set": name, **row}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"set": name, **row}, ensure_ascii=False) + "\n")
        return row


class QueryMemo:
    """The embedder with each question embedded once: every mode, the reranker row and
    the gate ask the same questions (a served model is slow per request). A question's
    vector depends on its text alone, so no score changes."""

    def __init__(self, inner: TextEmbedder) -> None:
        self.inner = inner
        self.queries: dict[str, list[float]] = {}

    def __getattr__(self, name: str):  # noqa: ANN204 - everything else is the embedder's
        return getattr(self.inner, name)

    def embed_query(self, text: str) -> list[float]:
        if text not in self.queries:
            self.queries[text] = self.inner.embed_query(text)
        return self.queries[text]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ours(
    name: str,
    corpus: Path,
    items: list[GoldItem],
    size: int,
    work: Path,
    embedder: TextEmbedder,
    keep: bool = False,
    modes: tuple[str, ...] = MODES,
    saved: Saved | None = None,
) -> tuple[list[dict], Searcher]:
    folder = corpus.resolve().parent.name  # sets over one corpus share its index
    settings = Settings().model_copy(
        update={"data_dir": work / f"{folder}-{size}", "chunk_size": size, "lock_timeout": 60}
    )
    timing = settings.data_dir / "bench-timing.json"
    if keep and timing.is_file():  # an index this script built and timed before
        chunks, seconds = json.loads(timing.read_text())
        log(f"{name}: reusing the index in {settings.data_dir} ({chunks} chunks, {seconds} s)")
    else:
        shutil.rmtree(settings.data_dir, ignore_errors=True)
        log(f"{name}: ingesting with chunk_size {size}")
        started = time.perf_counter()
        summary = Ingestor(settings, embedder).run(corpus)
        seconds = round(time.perf_counter() - started, 1)
        chunks = summary.chunks_embedded
        timing.write_text(json.dumps([chunks, seconds]))
        log(f"{name}: {chunks} chunks in {seconds} s")
    searcher = Searcher(settings, embedder)
    retriever = Retriever(searcher, ["everyone"])
    rows = []
    for mode in modes:
        setting = f"ours {mode}, chunk {size}"
        if saved and (done := saved.get(name, setting)):
            rows.append(done)
            continue
        row = score_retrieval(setting, items, lambda q, m=mode: retriever.search(q, m))
        row.extra.update(
            chunks=chunks,
            ingest_seconds=seconds,
            chunks_per_second=round(chunks / seconds, 2) if seconds else None,
            model=embedder.stamp.name,
        )
        rows.append(saved.put(name, row.as_json()) if saved else row.as_json())
        log(f"{name}: {row.name}: hit@5 {row.hit5:.3f} MRR {row.mrr10:.3f}")
    return rows, searcher


def reranked(
    name: str, items: list[GoldItem], searcher: Searcher, model: Path | None, url: str | None = None
) -> SettingScores:
    update = {"reranker_model_dir": model} if model else {"reranker_url": url}
    settings = searcher.settings.model_copy(update=update)
    retriever = Retriever(Searcher(settings, searcher.embedder), ["everyone"])
    size = settings.chunk_size
    what = "reranker" if model else f"served reranker {url}"
    return score_retrieval(
        f"ours hybrid + {what}, chunk {size}", items, lambda q: retriever.search(q, "hybrid")
    )


@dataclass(frozen=True)
class Found:
    """A retrieved node as the scoring reads it: its source and its text."""

    source: str
    text: str


def plain_llama_index(corpus: Path, items: list[GoldItem]) -> SettingScores:
    from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed = HuggingFaceEmbedding(model_name=str(default_model_dir()), device="cpu")
    embed.get_text_embedding("warm up")  # load the model outside the timing, as for ours
    log("llama-index: building VectorStoreIndex")
    started = time.perf_counter()
    documents = SimpleDirectoryReader(str(corpus), recursive=True).load_data()
    index = VectorStoreIndex.from_documents(documents, embed_model=embed)
    seconds = round(time.perf_counter() - started, 1)
    retriever = index.as_retriever(similarity_top_k=10)
    root = corpus.resolve()

    def search(question: str) -> list[Found]:
        nodes = retriever.retrieve(question)
        return [
            Found(
                Path(n.node.metadata["file_path"]).resolve().relative_to(root).as_posix(),
                n.node.get_content(),
            )
            for n in nodes
        ]

    row = score_retrieval("plain llama-index VectorStoreIndex (defaults)", items, search)
    row.extra.update(chunks=len(index.docstore.docs), ingest_seconds=seconds)
    log(f"llama-index: {row.extra['chunks']} nodes in {seconds} s, hit@5 {row.hit5:.3f}")
    return row


def best_signals(
    searcher: Searcher, items: list[GoldItem], k: int
) -> list[tuple[str, float, float]]:
    """(language, best similarity, best keyword coverage) over each question's top k."""
    retriever = Retriever(searcher, ["everyone"])
    out = []
    for item in items:
        passages = retriever.search(item.question, searcher.settings.retrieval, k)
        out.append(
            (
                language_of(item.question),
                max((p.similarity for p in passages), default=0.0),
                max((p.coverage for p in passages), default=0.0),
            )
        )
    return out


def answered(signals: list[tuple[str, float, float]], similarity: float, coverage: float) -> float:
    """Share let through by Answerer.answerable's rule."""
    passed = [cov >= coverage or (lang != "ja" and sim >= similarity) for lang, sim, cov in signals]
    return round(sum(passed) / len(passed), 3) if passed else 0.0


def gate_table(gates: dict[str, tuple[list, list]]) -> tuple[str, list[dict]]:
    lines = ["answer gate: share answered, own questions (gold indexed) / other set's (unrelated)"]
    rows = []
    header = "set   min_sim " + " ".join(f"cov>={c:<10}" for c in COVERAGES)
    lines.append(header)
    for name, (own, other) in gates.items():
        for sim in SIMILARITIES:
            cells = []
            for cov in COVERAGES:
                a, b = answered(own, sim, cov), answered(other, sim, cov)
                rows.append(
                    {
                        "set": name,
                        "min_similarity": sim,
                        "min_coverage": cov,
                        "answered_own": a,
                        "answered_unrelated": b,
                    }
                )
                cells.append(f"{a:.2f}/{b:.2f}".ljust(14))
            lines.append(f"{name:<5} {sim:<7} " + " ".join(cells))
    return "\n".join(lines), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/eval"))
    parser.add_argument("--sets", nargs="+", default=["perl", "ja"])
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[200, 128])
    parser.add_argument("--work", type=Path, default=None, help="index folders (default: temp)")
    parser.add_argument(
        "--keep", action="store_true", help="reuse indexes (and their timings) left in --work"
    )
    parser.add_argument(
        "--modes", nargs="+", default=list(MODES), help="also rrf:D:K (weighted fusion), bylang"
    )
    parser.add_argument("--reranker", type=Path, default=None, help="a cross-encoder folder")
    parser.add_argument(
        "--reranker-url",
        default=Settings().reranker_url,
        help="a /rerank endpoint (default TAIMATSU_RERANKER_URL); scored when reachable",
    )
    parser.add_argument("--no-llama-index", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of a set")
    parser.add_argument("--top-k", type=int, default=Settings().top_k, help="for the gate")
    parser.add_argument("--out", type=Path, default=RESULTS / "eval")
    parser.add_argument(
        "--gate-only", action="store_true", help="only the gate table, on indexes kept in --work"
    )
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=None, help="combine reports written before"
    )
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)

    work = args.work or Path(tempfile.mkdtemp(prefix="taimatsu-eval-"))
    inner = open_embedder(Settings())
    if isinstance(inner, Embedder):
        inner.model  # noqa: B018 - load the model before anything is timed
    embedder = QueryMemo(inner)
    log(f"embedding model: {embedder.stamp.as_dict() | {'probe': '...'}}")
    reranker_url = args.reranker_url if reachable(args.reranker_url) else None
    saved = Saved(args.out.with_suffix(".rows.jsonl"), args.keep)
    sections: list[tuple[str, list[dict]]] = []
    gold: dict[str, list[GoldItem]] = {}
    searchers: dict[str, Searcher] = {}
    for name in args.sets:
        items = load_gold(args.data / name / "gold.jsonl")[: args.limit]
        gold[name] = items
        corpus = args.data / name / "corpus"
        if args.gate_only:
            data_dir = work / f"{corpus.resolve().parent.name}-{args.chunk_sizes[0]}"
            settings = Settings().model_copy(
                update={"data_dir": data_dir, "chunk_size": args.chunk_sizes[0]}
            )
            searchers[name] = Searcher(settings, embedder)
            continue
        rows: list[dict] = []
        extra_rows: list[dict] = []
        for size in args.chunk_sizes:
            measured, searcher = ours(
                name, corpus, items, size, work, embedder, args.keep, tuple(args.modes), saved
            )
            rows += measured
            searchers.setdefault(name, searcher)  # the first size is the gate's
        if args.reranker and "hybrid" in args.modes:
            row = reranked(name, items, searchers[name], args.reranker)
            rows.append(saved.put(name, row.as_json()))
        if reranker_url and "hybrid" in args.modes:
            row = reranked(name, items, searchers[name], None, reranker_url)
            rows.append(saved.put(name, row.as_json()))
        elif "hybrid" in args.modes:
            first = args.chunk_sizes[0]
            extra_rows.append(
                {
                    "name": f"ours hybrid + reranker, chunk {first}",
                    "questions": len(items),
                    "note": NOT_MEASURED,
                }
            )
        if not args.no_llama_index:
            setting = "plain llama-index VectorStoreIndex (defaults)"
            done = saved.get(name, setting)
            rows.append(done or saved.put(name, plain_llama_index(corpus, items).as_json()))
        body = rows + extra_rows
        sections.append((f"{name}: {len(items)} questions", body))
        print(table(body, f"\n== {name}: {len(items)} questions =="), flush=True)

    gates = {}
    for name, searcher in searchers.items():
        others = [item for other, items in gold.items() if other != name for item in items]
        gates[name] = (
            best_signals(searcher, gold[name], args.top_k),
            best_signals(searcher, others, args.top_k),
        )
    gate_text, gate_rows = gate_table(gates)
    print("\n" + gate_text, flush=True)

    write(sections, gate_rows, args.out)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def reachable(url: str | None) -> bool:
    """A /rerank endpoint that answers a one-document request (else no row for it)."""
    if not url:
        return False
    return ServedReranker(url).scores("probe", ["probe"]) is not None


def write(sections: list[tuple[str, list[dict]]], gate_rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"sections": [{"name": n, "rows": r} for n, r in sections], "gate": gate_rows}
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    page = html_report(sections, "Taimatsu retrieval evaluation", "Reproduce: python bench/eval.py")
    out.with_suffix(".html").write_text(page, encoding="utf-8")
    log(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.html')}")


def merge(paths: list[Path], out: Path) -> None:
    """Reports of separate runs (one set each, or the gate) as one report."""
    sections, gate_rows = [], []
    for path in paths:
        report = json.loads(path.read_text(encoding="utf-8"))
        sections += [(s["name"], s["rows"]) for s in report["sections"]]
        gate_rows += report["gate"]
    for name, rows in sections:
        print(table(rows, f"\n== {name} =="))
    write(sections, gate_rows, out)


if __name__ == "__main__":
    main()
