"""The keyword leg's document frequencies, kept per ACL label, so that an asker's IDF costs
one small SQLite read instead of one engine count per query term.

A chunk's label is its set of groups (payload `groups`, sorted, without repeats); an
asker sees a label when it shares a group with them, exactly as the engine's group filter
decides. Each chunk has one label, so over the labels the asker sees

    chunks(asker) = sum of chunks(label)      df(asker, term) = sum of df(label, term)

exactly: the same numbers as the engine's filtered counts (`visible_idf`), never a count
of a chunk the asker cannot read.

The table lives in SQLite beside the shard (in the index's generation folder, so a
rebuild's table travels with it), stamped with the version of the index it was counted
at; every write of the index raises that version *before* it applies its operations
(inside the writer's exclusive hold of the shard). A query uses the table only when its
stamp equals the index's version; otherwise — a write since the last count, a run that
crashed, a count that a writer overtook — it falls back to the engine's per-term counts,
which are exact too, only slower. The count itself (`tally` over every point's groups and
terms) runs at the end of each ingestion run (and `reindex`) whose index is not counted
at its current version.

The server backend keeps the per-term counts: its writers are other processes, on other
hosts, with no lock this table could raise a version under.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from assistant.errors import StoreError
from assistant.index.base import Field
from assistant.sqlite import transaction

VERSION_FILE = "keyword-version.sqlite"  # the index's version, raised by every write
TABLE_FILE = "keyword-counts.sqlite"  # the counts, and the version they were counted at

_TABLE_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value NOT NULL);
CREATE TABLE labels (id INTEGER PRIMARY KEY, groups TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE label_groups (
    grp TEXT NOT NULL, label INTEGER NOT NULL, PRIMARY KEY (grp, label)) WITHOUT ROWID;
CREATE TABLE df (
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


COMPACT_AT = 4_000_000  # (term, label) pairs held before they are summed into the totals


def _summed(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, at = np.unique(keys, return_inverse=True)
    return unique, np.bincount(at, weights=counts, minlength=len(unique)).astype(np.int64)


def tally(pages: Iterable[list[dict[str, Any]]]) -> Tally:
    """Count pages of points' payloads (their `groups` and `terms` fields). Each page
    is packed into numpy arrays as it comes (100,000 points hold millions of terms: as
    Python objects they would cost the garbage collector seconds), and the pairs are
    summed every COMPACT_AT of them, so memory follows the distinct (term, label) pairs,
    not the size of the index."""
    numbers: dict[tuple[str, ...], int] = {}
    total_keys = np.zeros(0, dtype=np.uint64)
    total_counts = np.zeros(0, dtype=np.int64)
    pending: list[np.ndarray] = []
    held = 0
    chunks = np.zeros(0, dtype=np.int64)

    def compact() -> None:
        nonlocal total_keys, total_counts, pending, held
        if pending:
            fresh, counts = np.unique(np.concatenate(pending), return_counts=True)
            total_keys, total_counts = _summed(
                np.concatenate([total_keys, fresh]), np.concatenate([total_counts, counts])
            )
        pending, held = [], 0

    for page in pages:
        payloads = page
        label = np.fromiter(
            (numbers.setdefault(label_of(p.get(Field.GROUPS)), len(numbers)) for p in payloads),
            dtype=np.uint64,
            count=len(payloads),
        )
        per_label = np.bincount(label.astype(np.int64), minlength=len(numbers))
        chunks = np.pad(chunks, (0, len(per_label) - len(chunks))) + per_label
        terms = [sorted(set(p.get(Field.TERMS) or ())) for p in payloads]  # a chunk once
        lengths = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
        flat = np.fromiter(chain.from_iterable(terms), dtype=np.uint64, count=int(lengths.sum()))
        pending.append((flat << np.uint64(32)) | np.repeat(label, lengths))
        held += len(flat)
        if held >= COMPACT_AT:
            compact()
    compact()
    df = zip(
        (total_keys >> np.uint64(32)).tolist(),
        (total_keys & np.uint64(0xFFFFFFFF)).tolist(),
        total_counts.tolist(),
        strict=True,
    )
    return Tally(list(numbers), chunks.tolist(), list(df))


class LabelCounts:
    """The version and the table of one index generation (`folder`: the generation, found
    through the index's link at each use, so that a switched link is followed).

    Two SQLite files, in the default rollback-journal mode (WAL maps its index file into
    memory, and on a full disk a process touching it dies of SIGBUS): VERSION_FILE holds
    the index's version, `<epoch>:<writes>` (the epoch is drawn when the file is made, so
    a file lost and made again never repeats a version); TABLE_FILE holds the counts and
    the version they were counted at. A table is built under a temporary name and renamed
    into place while the version file's write lock is held, so it is installed only if no
    write came since its count began, and a reader opens either the old table or the new.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def path(self) -> Path:
        return self.folder.resolve() / TABLE_FILE

    def _open(self, path: Path, write: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(path, _lock(path, write))

    @staticmethod
    def _version(db: sqlite3.Connection) -> str | None:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "epoch" not in meta:
            return None
        return f"{meta['epoch']}:{meta.get('writes', 0)}"

    def _make_version(self, db: sqlite3.Connection, bump: bool) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL)")
        db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('epoch', ?), ('writes', 0)",
            (secrets.token_hex(8),),
        )
        if bump:
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'writes'")

    # -- the writer's side ---------------------------------------------------------------

    def bump(self) -> None:
        """Raise the version: called by every write of the index before it applies
        anything, while it holds the shard alone, and durable before it returns. If the
        file cannot be written (a full disk, a damaged file), the files are removed
        instead — no table is as safe as a stale one."""
        generation = self.folder.resolve()
        try:
            with self._open(generation / VERSION_FILE, write=True) as db:
                db.execute("PRAGMA synchronous=FULL")
                self._make_version(db, bump=True)
        except sqlite3.Error as exc:
            try:
                for name in (TABLE_FILE, VERSION_FILE, f"{VERSION_FILE}-journal"):
                    (generation / name).unlink(missing_ok=True)
            except OSError as gone:
                raise StoreError(
                    f"the keyword statistics in {generation} cannot be updated ({exc}) nor "
                    f"removed ({gone}); remove {VERSION_FILE} and {TABLE_FILE} there by hand "
                    "and run again (nothing was written)"
                ) from exc

    def state(self) -> tuple[str, str | None] | None:
        """(the index's version, the version the table was counted at, if any), the version
        file made if missing; None when a file cannot be read or made."""
        generation = self.folder.resolve()
        try:
            with self._open(generation / VERSION_FILE, write=True) as db:
                self._make_version(db, bump=False)
                version = self._version(db)
        except sqlite3.Error:
            return None
        return (version or "", self._counted(self.path))

    def _counted(self, table: Path) -> str | None:
        if not table.is_file():
            return None
        try:
            with self._open(table) as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'counted'").fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def save(self, version: str, counts: Tally) -> bool:
        """Store a count made of the index at `version`; nothing if a write has raised the
        version since (the count may have missed it). True when stored."""
        generation = self.folder.resolve()
        built = generation / f"{TABLE_FILE}.{os.getpid()}.tmp"
        built.unlink(missing_ok=True)
        try:
            with self._open(built, write=True) as db:
                db.executescript(_TABLE_SCHEMA)
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
                db.execute("INSERT INTO meta VALUES ('counted', ?)", (version,))
            with self._open(generation / VERSION_FILE, write=True) as db:
                db.execute("BEGIN IMMEDIATE")  # no write's version raise slips in between
                if self._version(db) != version:
                    return False
                os.replace(built, generation / TABLE_FILE)
            return True
        finally:
            built.unlink(missing_ok=True)

    # -- the reader's side ---------------------------------------------------------------

    def lookup(self, groups: list[str], terms: list[int]) -> tuple[int, dict[int, int]] | None:
        """(chunks the asker may read, {term: those of them holding it}) from the table,
        or None when it is not counted at the index's current version (the caller then
        counts in the engine). The caller holds the shard, so no write runs meanwhile."""
        generation = self.folder.resolve()
        table = generation / TABLE_FILE
        if not table.is_file():
            return None
        wanted = sorted(set(groups))
        asked = sorted(set(terms))
        visible = f"SELECT label FROM label_groups WHERE grp IN ({','.join('?' * len(wanted))})"
        try:
            with self._open(generation / VERSION_FILE) as db:
                version = self._version(db)
            with self._open(table) as db:
                db.execute("BEGIN")  # one snapshot for the stamp and the counts
                row = db.execute("SELECT value FROM meta WHERE key = 'counted'").fetchone()
                if version is None or row is None or str(row[0]) != version:
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
