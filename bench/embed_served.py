"""Embedding rate of the configured served model beside the packaged MiniLM, in one run.

    TAIMATSU_EMBED_BACKEND=openai TAIMATSU_EMBED_URL=http://127.0.0.1:8000/v1 \\
    TAIMATSU_EMBED_MODEL=multilingual-e5-small TAIMATSU_EMBED_INPUT_TYPE=true \\
        python bench/embed_served.py FOLDER [--chunks 192] [--rounds 2]

FOLDER is chunked as ingestion chunks it (the product's parser and chunker); the first
`--chunks` chunks are embedded by the local MiniLM and by the served model in
alternating rounds (so both see the same load), each in `TAIMATSU_EMBED_BATCH_SIZE`
batches, as ingestion sends them. Prints chunks per second of each and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from assistant.embedder import Embedder  # noqa: E402
from assistant.served_embedder import ServedEmbedder  # noqa: E402
from assistant.settings import Settings  # noqa: E402
from ingest.chunker import Chunker  # noqa: E402
from ingest.parsing import parse  # noqa: E402
from ingest.pipeline import walk  # noqa: E402


def chunk_texts(folder: Path, settings: Settings, embedder: Embedder, limit: int) -> list[str]:
    chunker = Chunker(embedder.count_tokens, settings.chunk_size, settings.chunk_overlap)
    texts: list[str] = []
    for path in walk(folder):
        texts += [c.embed_text for c in chunker.chunks(parse(path, path.read_bytes()))]
        if len(texts) >= limit:
            break
    return texts[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--chunks", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = Settings()
    if settings.embed_backend == "local":
        sys.exit("set TAIMATSU_EMBED_BACKEND, _URL and _MODEL to the served model to compare")
    local = Embedder(batch_size=settings.embed_batch_size)
    served = ServedEmbedder(settings)
    texts = chunk_texts(args.folder, settings, local, args.chunks)
    local.embed(texts[:2])  # load the model, open the connection: not timed
    served.embed(texts[:2])
    seconds = {"local": 0.0, "served": 0.0}
    for _ in range(args.rounds):
        for name, embedder in (("local", local), ("served", served)):
            start = time.perf_counter()
            embedder.embed(texts)
            seconds[name] += time.perf_counter() - start
    count = len(texts) * args.rounds
    rates = {name: count / s for name, s in seconds.items()}
    print(f"{args.folder}: {len(texts)} chunks x {args.rounds} rounds")
    print(f"{'':44}{'seconds':>9}{'chunks/s':>10}{'ratio':>7}")
    print(f"{'local ' + local.name:44}{seconds['local']:>9.1f}{rates['local']:>10.1f}{1:>7.2f}")
    label = f"served {served.backend} {served.model_name}"
    print(
        f"{label:44}{seconds['served']:>9.1f}{rates['served']:>10.1f}"
        f"{rates['served'] / rates['local']:>7.2f}"
    )


if __name__ == "__main__":
    main()
