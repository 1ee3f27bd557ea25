"""int8 recipes for the local model's ONNX graph, against its fp32 graph, in one run.

    python bench/int8_variants.py [--variants current ffn-out-0-2 ffn-out-all]
                                  [--gold tests/data/eval/natural/en ...] [--rounds 3]

The fp32 graph is exported once (`embed_onnx._export_fp32`, as `TAIMATSU_EMBED_RUNTIME=
onnx` does) into a temporary folder, and each variant quantized from it with
`onnxruntime.quantization.quantize_dynamic`. For each variant:

1. The cosine of its vectors to fp32's on real text: 60 chunk-sized texts of each
   natural corpus (English and Japanese: four consecutive gold passages of a document)
   and 30 questions of each gold set.
2. Its encoding time for those texts beside fp32's, the variants taking turns for
   `--rounds` rounds (the median counts: the machine is shared), as a ratio to fp32.
3. With `--gold`: each gold set's corpus ingested through the product's pipeline with
   that variant as `onnx-int8`, its questions scored by-language (the default) and
   dense only, hit@5 and MRR@10 beside fp32's (the issue's bar: within 0.01).

`current` is what onnx-int8 ships (assistant/embed_onnx.py `_quantize`). Results and the
per-layer sensitivity behind the choice of variants: docs/decisions.md §13.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project, not bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402

from assistant import embed_onnx  # noqa: E402
from assistant.embedder import Embedder  # noqa: E402
from assistant.evaluation import Retriever, load_gold, score_retrieval  # noqa: E402
from assistant.retrieval import Searcher  # noqa: E402
from assistant.settings import Settings  # noqa: E402
from ingest.pipeline import Ingestor  # noqa: E402

NATURAL = Path(__file__).resolve().parent.parent / "tests/data/eval/natural"
FFN_OUT = "/layer.{}/output/dense/MatMul"
# name: (quantize_dynamic options, MatMuls kept in fp32 by layer of the feed-forward output)
VARIANTS: dict[str, tuple[dict, tuple[int, ...]]] = {
    "current": ({}, ()),
    "ffn-out-0": ({}, (0,)),
    "ffn-out-0-2": ({}, (0, 1, 2)),
    "ffn-out-all": ({}, (0, 1, 2, 3, 4, 5)),
    "s8-weights": ({"weight_type": "QInt8"}, ()),
    "s8-reduce-range": ({"weight_type": "QInt8", "reduce_range": True}, ()),
    "per-tensor": ({"per_channel": False}, ()),
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def quantize(fp32: Path, out: Path, options: dict, kept_layers: tuple[int, ...]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "MatMul"]
    kept = [n for n in names if any(n.endswith(FFN_OUT.format(i)) for i in kept_layers)]
    settings = {
        "per_channel": True,
        "reduce_range": False,
        "weight_type": "QUInt8",
    } | options  # the current recipe's options (avx2 preset), then the variant's
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(
        str(fp32),
        str(out),
        per_channel=settings["per_channel"],
        reduce_range=settings["reduce_range"],
        weight_type=getattr(QuantType, settings["weight_type"]),
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=kept,
        extra_options={
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "DefaultTensorType": 1,
        },
    )


def sample_texts(rng: random.Random) -> list[str]:
    """60 chunk-sized texts of each natural corpus (four consecutive gold passages of one
    document: verbatim document text) and 30 questions of each gold set."""
    texts = []
    for lang in ("en", "ja"):
        items = load_gold(NATURAL / lang / "gold.jsonl")
        by_source: dict[str, list[str]] = {}
        for item in items:
            if item.passage and item.sources:
                by_source.setdefault(item.sources[0], []).append(item.passage)
        windows = [
            " ".join(passages[i : i + 4])
            for passages in by_source.values()
            for i in range(max(1, len(passages) - 3))
        ]
        texts += rng.sample(windows, 60)
        texts += rng.sample([item.question for item in items], 30)
    return texts


def gold_scores(embedder: Embedder, folder: Path, work: Path) -> dict[str, tuple[float, float]]:
    """A gold set scored on its corpus's index (a corpus two sets share, as en-ja shares
    ja's, is ingested once per variant)."""
    corpus = (folder / "corpus").resolve()
    key = "-".join(corpus.parts[-3:-1])
    settings = Settings().model_copy(update={"data_dir": work / f"index-{key}"})
    if not settings.data_dir.exists():
        Ingestor(settings, embedder).run(corpus)
    retriever = Retriever(Searcher(settings, embedder), ["everyone"])
    items = load_gold(folder / "gold.jsonl")
    scores = {}
    for mode in ("by-language", "dense"):
        row = score_retrieval(mode, items, lambda q, m=mode: retriever.search(q, m))
        scores[mode] = (row.hit5, row.mrr10)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--gold", type=Path, nargs="*", default=[], help="gold set folders")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    reference = Embedder(settings.embed_model_dir, runtime="torch")
    tokenizer, model_dir = reference.tokenizer, reference.model_dir
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = work / "fp32.onnx"
        max_length = embed_onnx._export_fp32(model_dir, fp32)
        files = {"fp32": fp32}
        for name in args.variants:
            files[name] = work / f"{name}.onnx"
            quantize(fp32, files[name], *VARIANTS[name])
            log(f"{name}: quantized")
        models = {
            name: embed_onnx.OnnxModel(path, tokenizer, max_length) for name, path in files.items()
        }
        texts = sample_texts(random.Random(11))
        times: dict[str, list[float]] = {name: [] for name in models}
        vectors: dict[str, np.ndarray] = {}
        for round_ in range(args.rounds):  # the variants take turns
            for name, model in models.items():
                start = time.perf_counter()
                vectors[name] = model.encode(texts, settings.embed_batch_size)
                times[name].append(time.perf_counter() - start)
            log(
                f"round {round_ + 1}: " + json.dumps({k: round(v[-1], 1) for k, v in times.items()})
            )

        scores: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
        for name, path in files.items():
            if not args.gold:
                break

            def export(model_dir: Path, runtime: str, out: Path, path: Path = path) -> int:
                shutil.copy(path, out / embed_onnx.MODEL_FILE)
                return max_length

            embed_onnx._export = export  # this variant is what onnx-int8 exports now
            cache = work / f"cache-{name}"
            embedder = Embedder(settings.embed_model_dir, runtime="onnx-int8", cache_dir=cache)
            scores[name] = {}
            for folder in args.gold:
                scores[name][folder.name] = gold_scores(embedder, folder, work / name)
                log(f"{name} {folder.name}: {scores[name][folder.name]}")

    fp32_s = statistics.median(times["fp32"])
    print(f"{len(texts)} texts; encoding time median of {args.rounds} rounds in turns")
    print(f"{'variant':18}{'mean cos':>10}{'min cos':>10}{'median s':>10}{'× fp32':>8}")
    for name in files:
        cosine = (vectors[name] * vectors["fp32"]).sum(axis=1)
        seconds = statistics.median(times[name])
        print(
            f"{name:18}{cosine.mean():>10.4f}{cosine.min():>10.4f}{seconds:>10.1f}"
            f"{fp32_s / seconds:>8.2f}"
        )
    if scores:
        print(f"\n{'variant':18}{'gold set':10}{'hit@5':>8}{'MRR@10':>8}{'dense':>8}{'MRR@10':>8}")
        for name, sets in scores.items():
            for set_name, row in sets.items():
                ref = scores["fp32"][set_name]
                cells = ""
                for mode in ("by-language", "dense"):
                    for i in (0, 1):
                        delta = row[mode][i] - ref[mode][i]
                        cells += f"{row[mode][i]:>8.3f}" if name == "fp32" else f"{delta:>+8.3f}"
                print(f"{name:18}{set_name:10}{cells}")
        print("fp32 rows: scores; variant rows: Δ to fp32 (target: every Δ within ±0.01)")


if __name__ == "__main__":
    main()
