"""The index: one Qdrant Edge shard under `<data_dir>/index`, and its model stamp.

The engine locks its folder for one open handle, in one process. So that the ingestion
cron and the page work side by side, the shard is opened only for short critical
sections (open, write a batch or run a query, close) and an open that finds it held
waits and retries until `lock_timeout` (see ../shared/DESIGN.md, decision 3).

Each chunk is one point: a dense vector "dense", a sparse keyword vector "bm25", and a
payload with the document's root, relative source path, content hash, chunk number,
page/section, text and the groups that may read it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    Fusion,
    MatchAny,
    MatchValue,
    Modifier,
    PayloadSchemaType,
    Point,
    Prefetch,
    Query,
    QueryRequest,
    ScrollRequest,
    SparseVector,
    UpdateOperation,
)

from assistant.embedder import ModelStamp

SCHEMA_VERSION = 1
DENSE = "dense"
SPARSE = "bm25"
KEYWORD_FIELDS = ("groups", "root", "source", "doc_hash")
_process_locks: dict[str, threading.RLock] = {}
_process_locks_guard = threading.Lock()


class StoreError(RuntimeError):
    """An index problem with a one-sentence message a user can act on."""


class StoreBusy(StoreError):
    pass


class ModelMismatch(StoreError):
    pass


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


def _match(key: str, value: str | int) -> FieldCondition:
    return FieldCondition(key=key, match=MatchValue(value=value))


def groups_filter(groups: list[str]) -> Filter:
    """The asker's groups as an engine filter: a chunk is visible if it shares one."""
    return Filter(must=[FieldCondition(key="groups", match=MatchAny(any=sorted(set(groups))))])


def document_filter(root: str, source: str) -> Filter:
    return Filter(must=[_match("root", root), _match("source", source)])


class Store:
    def __init__(self, data_dir: Path, lock_timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "index"
        self.stamp_path = self.data_dir / "index.json"
        self.lock_timeout = lock_timeout
        key = str(self.path.resolve())
        with _process_locks_guard:
            self._thread_lock = _process_locks.setdefault(key, threading.RLock())

    # -- lifecycle -----------------------------------------------------------------

    def exists(self) -> bool:
        return self.stamp_path.is_file() and self.path.is_dir()

    def read_stamp(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.stamp_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"the index stamp {self.stamp_path} is unreadable ({exc}); "
                "run `taimatsu reindex` to rebuild the index"
            ) from exc

    def ensure(self, stamp: ModelStamp) -> None:
        """Create the shard for this model, or check that the existing one matches it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.data_dir / ".create.lock"), timeout=self.lock_timeout):
            current = self.read_stamp()
            if current is None:
                self._create(stamp)
                return
        model = current.get("model", {})
        if model.get("checksum") != stamp.checksum or model.get("dim") != stamp.dim:
            raise ModelMismatch(
                f"the index was built with the embedding model {model.get('name')!r} "
                f"(dimension {model.get('dim')}), not {stamp.name!r} (dimension {stamp.dim}); "
                "run `taimatsu reindex` to rebuild it with the configured model"
            )

    def _create(self, stamp: ModelStamp) -> None:
        config = EdgeConfig(
            vectors={DENSE: EdgeVectorParams(size=stamp.dim, distance=Distance.Cosine)},
            sparse_vectors={SPARSE: EdgeSparseVectorParams(modifier=Modifier.Idf)},
        )
        if self.path.exists():  # a crash between shard creation and stamp: start over
            import shutil

            shutil.rmtree(self.path)
        shard = EdgeShard.create(str(self.path), config)
        try:
            for field in KEYWORD_FIELDS:
                shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword))
            shard.update(UpdateOperation.create_field_index("chunk", PayloadSchemaType.Integer))
            shard.flush()
        finally:
            shard.close()
        record = {"schema": SCHEMA_VERSION, "model": stamp.as_dict(), "created": time.time()}
        tmp = self.stamp_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        os.replace(tmp, self.stamp_path)

    @contextmanager
    def shard(self) -> Iterator[EdgeShard]:
        """Open the shard for one short critical section, waiting while another holds it."""
        if not self.exists():
            raise StoreError(
                f"there is no index under {self.data_dir}; run `taimatsu ingest FOLDER` first"
            )
        deadline = time.monotonic() + self.lock_timeout
        if not self._thread_lock.acquire(timeout=self.lock_timeout):
            raise self._busy()
        try:
            shard = self._open_with_retry(deadline)
            try:
                yield shard
            finally:
                shard.close()
        finally:
            self._thread_lock.release()

    def _busy(self) -> StoreBusy:
        return StoreBusy(
            f"the index under {self.path} is held by another process "
            f"(waited {self.lock_timeout:.0f} s); try again when it finishes"
        )

    def _open_with_retry(self, deadline: float) -> EdgeShard:
        delay = 0.02
        while True:
            try:
                return EdgeShard.load(str(self.path))
            except Exception as exc:  # the binding raises a bare Exception
                if "WouldBlock" not in str(exc) and "lock" not in str(exc).lower():
                    raise StoreError(
                        f"the index under {self.path} cannot be opened ({exc}); "
                        "restore it from a backup or run `taimatsu reindex`"
                    ) from exc
                if time.monotonic() >= deadline:
                    raise self._busy() from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    # -- writes ----------------------------------------------------------------------

    def apply(self, operations: list[UpdateOperation]) -> None:
        """Apply operations in one critical section and flush them to disk."""
        if not operations:
            return
        with self.shard() as shard:
            for operation in operations:
                shard.update(operation)
            shard.flush()

    @staticmethod
    def point(point_id: str, dense: list[float], sparse: SparseVector, payload: dict) -> Point:
        return Point(point_id, {DENSE: dense, SPARSE: sparse}, payload)

    # -- reads -----------------------------------------------------------------------

    def manifest(self, root: str) -> dict[str, set[str]]:
        """{relative source: content hashes} of the documents indexed under `root`; more
        than one hash means a replacement was interrupted."""
        if not self.exists():
            return {}
        flt = Filter(must=[_match("root", root), _match("chunk", 0)])
        found: dict[str, set[str]] = {}
        offset = None
        with self.shard() as shard:
            while True:
                records, offset = shard.scroll(
                    ScrollRequest(
                        offset=offset, limit=1024, filter=flt, with_payload=["source", "doc_hash"]
                    )
                )
                for record in records:
                    payload = record.payload or {}
                    found.setdefault(payload["source"], set()).add(payload["doc_hash"])
                if offset is None:
                    return found

    def counts(self) -> dict[str, int]:
        with self.shard() as shard:
            chunks = shard.count(CountRequest(exact=True))
            documents = shard.count(
                CountRequest(exact=True, filter=Filter(must=[_match("chunk", 0)]))
            )
        return {"documents": documents, "chunks": chunks}

    def hybrid(
        self,
        dense: list[float],
        sparse: SparseVector,
        groups: list[str],
        limit: int,
        candidates: int = 40,
    ) -> list[Hit]:
        """Dense and keyword legs fused by reciprocal rank inside the engine, both legs
        filtered by the asker's groups (the filter is part of the query, never applied
        afterwards)."""
        flt = groups_filter(groups)
        depth = max(candidates, limit)
        request = QueryRequest(
            limit=limit,
            prefetches=[
                Prefetch(limit=depth, query=Query.Nearest(dense, using=DENSE), filter=flt),
                Prefetch(limit=depth, query=Query.Nearest(sparse, using=SPARSE), filter=flt),
            ],
            query=Fusion.Rrf(k=60),
            filter=flt,
            with_payload=True,
        )
        with self.shard() as shard:
            points = shard.query(request)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]
