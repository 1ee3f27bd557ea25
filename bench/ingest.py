"""Ingestion throughput beside the raw encoder, in one run.

    python bench/ingest.py FOLDER

1. A full `Ingestor.run` over FOLDER into a fresh temporary index (model loaded first,
   so loading is not counted): the pipeline's chunks per second.
2. `SentenceTransformer.encode` alone over exactly the texts the pipeline embedded, with
   the same batch size: the raw encoder's chunks per second. Target: the pipeline
   reaches at least 85% of it.
3. A second run over the unchanged folder, as a fraction of the first. Target: < 3%.
4. Peak resident memory of the process.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project, not bench/ingest.py
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from assistant.embedder import Embedder  # noqa: E402
from assistant.index import Field, Index, open_index  # noqa: E402
from assistant.settings import Settings  # noqa: E402
from ingest.pipeline import Ingestor  # noqa: E402


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


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python bench/ingest.py FOLDER")
    folder = Path(sys.argv[1])
    embedder = Embedder()
    embedder.embed(["warm up the model"])
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        start = time.perf_counter()
        first = Ingestor(settings, embedder).run(folder)
        pipeline_s = time.perf_counter() - start

        start = time.perf_counter()
        second = Ingestor(settings, embedder).run(folder)
        second_s = time.perf_counter() - start

        texts = embedded_texts(open_index(settings))
        start = time.perf_counter()
        embedder.model.encode(texts, batch_size=settings.embed_batch_size)
        raw_s = time.perf_counter() - start

    chunks = first.chunks_embedded
    assert second.chunks_embedded == 0 and len(texts) == chunks
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipeline_rate, raw_rate = chunks / pipeline_s, chunks / raw_s
    print(f"{folder}: {first.files_seen} files, {len(first.failed)} failed, {chunks} chunks")
    print(f"{'':34}{'seconds':>10}{'chunks/s':>10}{'ratio':>8}")
    print(f"{'raw SentenceTransformer.encode':34}{raw_s:>10.1f}{raw_rate:>10.1f}{1:>8.2f}")
    print(
        f"{'taimatsu ingest (whole pipeline)':34}{pipeline_s:>10.1f}{pipeline_rate:>10.1f}"
        f"{pipeline_rate / raw_rate:>8.2f}   target >= 0.85"
    )
    print(
        f"{'second run, nothing changed':34}{second_s:>10.2f}{'':>10}"
        f"{second_s / pipeline_s:>8.3f}   of the first run, target < 0.03"
    )
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
