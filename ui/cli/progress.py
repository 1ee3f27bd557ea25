"""A terminal progress bar for ingestion: files, chunks, rate and ETA (tqdm)."""

from __future__ import annotations

import shutil
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

    # a terminal that reports no size (a bare pty, some consoles) would get no bar at all
    size = shutil.get_terminal_size((100, 24))
    bar = tqdm(
        total=0, unit="file", ncols=size.columns, nrows=size.lines, leave=False, mininterval=0.5
    )

    def update(done: int, total: int, chunks: int) -> None:
        bar.total = total
        bar.set_postfix(chunks=chunks, refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
        bar.refresh()  # the last state, however fast the run
    finally:
        bar.close()
