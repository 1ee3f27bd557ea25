"""Where an ingestion run spends its time, stage by stage, in one run.

    python bench/ingestion.py [FOLDER] [--limit N]

Runs the real pipeline stages over FOLDER (default: the bundled samples) into a fresh
temporary index and prints each stage's seconds and its ratio to the embedding time,
side by side. The claim to check: everything but embedding costs little beside it.
A second pass over the unchanged folder shows what a cron run with nothing to do costs.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from qdrant_edge import UpdateOperation

from assistant import sparse
from assistant.embedder import Embedder
from assistant.settings import Settings
from assistant.store import Store
from ingest.chunker import Chunker
from ingest.parsers import ParseError, parse
from ingest.pipeline import Ingestor, chunk_id, walk

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=ROOT / "samples")
    parser.add_argument("--limit", type=int, default=0, help="at most N files (0: all)")
    args = parser.parse_args()
    files = list(walk(args.folder))[: args.limit or None]
    embedder = Embedder()
    embedder.embed(["warm up"])  # model load is not a per-document cost
    chunker = Chunker(embedder.count_tokens, 200, 30)
    seconds: dict[str, float] = defaultdict(float)
    chunks_total = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "data")
        store.ensure(embedder.stamp)
        for path in files:
            t0 = time.perf_counter()
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            t1 = time.perf_counter()
            try:
                sections = parse(path, data)
            except ParseError:
                continue
            t2 = time.perf_counter()
            chunks = chunker.chunks(sections)
            t3 = time.perf_counter()
            vectors = embedder.embed([c.embed_text for c in chunks])
            t4 = time.perf_counter()
            sparse_vectors = [sparse.embed_document(c.embed_text) for c in chunks]
            t5 = time.perf_counter()
            points = [
                Store.point(chunk_id(tmp, str(path), digest, n), v.tolist(), s, {"text": c.text})
                for n, (c, v, s) in enumerate(zip(chunks, vectors, sparse_vectors, strict=True))
            ]
            store.apply([UpdateOperation.upsert_points(points)])
            t6 = time.perf_counter()
            for stage, spent in zip(
                ("read+hash", "parse", "chunk", "embed", "keyword vectors", "store write"),
                (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5),
                strict=True,
            ):
                seconds[stage] += spent
            chunks_total += len(chunks)

        if not args.limit:  # the cron case: a whole run over a folder that did not change
            settings = Settings(data_dir=Path(tmp) / "cron")
            Ingestor(settings, embedder).run(args.folder)
            start = time.perf_counter()
            Ingestor(settings, embedder).run(args.folder)
            seconds["unchanged re-run (whole)"] = time.perf_counter() - start

    embed = seconds["embed"] or 1e-9
    print(f"{len(files)} files, {chunks_total} chunks, from {args.folder}")
    print(f"{'stage':<26}{'seconds':>10}{'x embed':>10}")
    for stage, spent in seconds.items():
        print(f"{stage:<26}{spent:>10.2f}{spent / embed:>10.3f}")
    other = sum(v for k, v in seconds.items() if k not in ("embed", "unchanged re-run (whole)"))
    print(f"{'all but embed':<26}{other:>10.2f}{other / embed:>10.3f}")


if __name__ == "__main__":
    main()
