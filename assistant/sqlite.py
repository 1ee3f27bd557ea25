"""One short SQLite transaction at a time: the history and the token store keep their
tables in SQLite files in the data folder, each guarded by its own lock in-process (SQLite
serialises the processes)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def transaction(
    path: Path, lock: threading.Lock, foreign_keys: bool = False
) -> Iterator[sqlite3.Connection]:
    """A connection in one transaction (committed on success, rolled back on an error),
    closed after; `foreign_keys`: enforce them (SQLite does not by default)."""
    with lock:
        db = sqlite3.connect(path, timeout=10)
        try:
            if foreign_keys:
                db.execute("PRAGMA foreign_keys = ON")
            with db:
                yield db
        finally:
            db.close()
