"""A terminal progress bar for ingestion: files, chunks, rate and ETA (tqdm)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest.pipeline import Progress


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """A callback for Ingestor.run drawing a bar on stderr, or None when disabled (not a
    terminal, --quiet, --json): logs get one summary line, not a bar."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", dynamic_ncols=True, leave=False)

    def update(done: int, total: int, chunks: int) -> None:
        bar.total = total
        bar.set_postfix(chunks=chunks, refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
