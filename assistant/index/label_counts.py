"""The keyword leg's document frequencies, kept per ACL label, so that an asker's IDF costs
one small SQLite read instead of one engine count per query term.

A chunk's label is its set of groups (payload `groups`, sorted, without repeats); an
asker sees a label when it shares a group with them, exactly as the engine's group filter
decides. Each chunk has one label, so over the labels the asker sees

    chunks(asker) = sum of chunks(label)      df(asker, term) = sum of df(label, term)

exactly: the same numbers as the engine's filtered counts (`visible_idf`), never a count
of a chunk the asker cannot read.

The table lives in SQLite beside the shard (`keyword-counts.sqlite` in the index's
generation folder, so a rebuild's table travels with it), with two numbers in `meta`:
`version`, which every write of the index raises *before* it applies its operations
(inside the writer's exclusive hold of the shard), and `counted`, the version the table
was counted at. A query uses the table only when the two are equal; otherwise — a write
since the last count, a run that crashed, a count that a writer overtook — it falls back
to the engine's per-term counts, which are exact too, only slower. The count itself
(`tally` over every point's groups and terms) runs at the end of each ingestion run
whose index is not counted at its current version.

The server backend keeps the per-term counts: its writers are other processes, on other
hosts, with no lock this table could raise a version under.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from assistant.errors import StoreError
from assistant.index.base import Field, Record
from assistant.sqlite import transaction

FILE_NAME = "keyword-counts.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY, groups TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS label_groups (
    grp TEXT NOT NULL, label INTEGER NOT NULL, PRIMARY KEY (grp, label)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS df (
    term INTEGER NOT NULL, label INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (term, label)) WITHOUT ROWID;
"""

_locks: dict[tuple[str, bool], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(path: Path, write: bool) -> threading.Lock:
    """Writers and readers of one file in this process each take turns among themselves;
    a query never waits for a count being stored (WAL: SQLite keeps them apart)."""
    with _locks_guard:
        return _locks.setdefault((str(path), write), threading.Lock())


def label_of(groups: Iterable[str] | None) -> tuple[str, ...]:
    """A chunk's ACL label: its groups, sorted, each once."""
    return tuple(sorted(set(groups or ())))


@dataclass(frozen=True)
class Tally:
    """Per label: its groups and chunks; per (term, label): the chunks holding the term."""

    labels: list[tuple[str, ...]]
    chunks: list[int]
    df: list[tuple[int, int, int]]  # (term, label number, chunks), sorted by term, label


def tally(pages: Iterable[list[Record]]) -> Tally:
    """Count pages of points read with their `groups` and `terms` payload fields. Each page
    is packed into numpy arrays as it comes (100,000 points hold millions of terms: as
    Python objects they would cost the garbage collector seconds)."""
    numbers: dict[tuple[str, ...], int] = {}
    keys: list[np.ndarray] = []
    labels_of: list[np.ndarray] = []
    for page in pages:
        payloads = [record.payload for record in page]
        label = np.fromiter(
            (numbers.setdefault(label_of(p.get(Field.GROUPS)), len(numbers)) for p in payloads),
            dtype=np.uint64,
            count=len(payloads),
        )
        terms = [sorted(set(p.get(Field.TERMS) or ())) for p in payloads]  # a chunk once
        lengths = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
        flat = np.fromiter(chain.from_iterable(terms), dtype=np.uint64, count=int(lengths.sum()))
        keys.append((flat << np.uint64(32)) | np.repeat(label, lengths))
        labels_of.append(label)
    if not numbers:
        return Tally([], [], [])
    unique, counts = np.unique(np.concatenate(keys), return_counts=True)
    chunks = np.bincount(np.concatenate(labels_of).astype(np.int64), minlength=len(numbers))
    df = zip(
        (unique >> np.uint64(32)).tolist(),
        (unique & np.uint64(0xFFFFFFFF)).tolist(),
        counts.tolist(),
        strict=True,
    )
    return Tally(list(numbers), chunks.tolist(), list(df))


class LabelCounts:
    """The table of one index generation (`folder`: the generation, found through the
    index's link at each use, so that a switched link is followed)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def path(self) -> Path:
        return self.folder.resolve() / FILE_NAME

    def _open(self, path: Path, write: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(path, _lock(path, write))

    @staticmethod
    def _meta(db: sqlite3.Connection) -> dict[str, int]:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())

    # -- the writer's side ---------------------------------------------------------------

    def bump(self) -> None:
        """Raise the version: called by every write of the index before it applies
        anything, while it holds the shard alone. If the file cannot be written (corrupt,
        say), it is removed instead — no table is as safe as a stale one."""
        path = self.path
        try:
            with self._open(path, write=True) as db:
                db.executescript(_SCHEMA)
                db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a count
                db.execute("PRAGMA synchronous=FULL")  # durable before the write it guards
                db.execute(
                    "INSERT INTO meta VALUES ('version', 1) "
                    "ON CONFLICT(key) DO UPDATE SET value = value + 1"
                )
        except sqlite3.Error as exc:
            try:
                for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    leftover.unlink(missing_ok=True)
            except OSError as gone:
                raise StoreError(
                    f"the keyword statistics {path} cannot be updated ({exc}) nor removed "
                    f"({gone}); remove it by hand and run again (nothing was written)"
                ) from exc

    def state(self) -> tuple[int, int | None] | None:
        """(the index's version, the version the table was counted at, if any); (0, None)
        before any write made the file; None when the file is unreadable."""
        path = self.path
        if not path.is_file():
            return 0, None
        try:
            with self._open(path) as db:
                meta = self._meta(db)
        except sqlite3.Error:
            return None
        return meta.get("version", 0), meta.get("counted")

    def save(self, version: int, counts: Tally) -> bool:
        """Store a count made of the index at `version`; nothing if a write has raised the
        version since (the count may have missed it). True when stored."""
        path = self.path
        with self._open(path, write=True) as db:
            db.executescript(_SCHEMA)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")  # no write's version raise slips in between
            if self._meta(db).get("version", 0) != version:
                return False
            db.execute("DELETE FROM df")
            db.execute("DELETE FROM label_groups")
            db.execute("DELETE FROM labels")
            db.executemany(
                "INSERT INTO labels VALUES (?, ?, ?)",
                (
                    (n, "\x1f".join(label), chunks)
                    for n, (label, chunks) in enumerate(
                        zip(counts.labels, counts.chunks, strict=True)
                    )
                ),
            )
            db.executemany(
                "INSERT INTO label_groups VALUES (?, ?)",
                ((group, n) for n, label in enumerate(counts.labels) for group in label),
            )
            db.executemany("INSERT INTO df VALUES (?, ?, ?)", counts.df)
            db.execute(
                "INSERT INTO meta VALUES ('counted', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (version,),
            )
        return True

    # -- the reader's side ---------------------------------------------------------------

    def lookup(self, groups: list[str], terms: list[int]) -> tuple[int, dict[int, int]] | None:
        """(chunks the asker may read, {term: those of them holding it}) from the table,
        or None when it is not counted at the index's current version (the caller then
        counts in the engine). The caller holds the shard, so no write runs meanwhile."""
        path = self.path
        if not path.is_file():
            return None
        wanted = sorted(set(groups))
        asked = sorted(set(terms))
        visible = f"SELECT label FROM label_groups WHERE grp IN ({','.join('?' * len(wanted))})"
        try:
            with self._open(path) as db:
                db.execute("BEGIN")  # one snapshot for the stamp and the counts
                meta = self._meta(db)
                if "counted" not in meta or meta["counted"] != meta.get("version", 0):
                    return None
                (total,) = db.execute(
                    f"SELECT COALESCE(SUM(chunks), 0) FROM labels WHERE id IN ({visible})",
                    wanted,
                ).fetchone()
                rows = db.execute(
                    f"SELECT term, SUM(n) FROM df WHERE term IN ({','.join('?' * len(asked))}) "
                    f"AND label IN ({visible}) GROUP BY term",
                    [*asked, *wanted],
                ).fetchall()
        except sqlite3.Error:
            return None  # an unreadable table: the engine's counts answer instead
        return int(total), {int(term): int(n) for term, n in rows}
