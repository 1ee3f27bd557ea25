"""The embedded backend: one Qdrant Edge shard under `<data_dir>/index`, and its stamp
in `<data_dir>/index.json`.

The engine locks its folder for one open handle, in one process. So that the ingestion
cron and the page work side by side, the shard is opened only for short critical
sections (open, write a batch or run a query, close) and an open that finds it held
waits and retries until `lock_timeout` (see ../shared/DESIGN.md, decision 3).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    FacetRequest,
    FieldCondition,
    Filter,
    Fusion,
    MatchAny,
    MatchValue,
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
from assistant.errors import DiskFull, ModelMismatch, StoreBusy, StoreError
from assistant.index.base import (
    DENSE,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    SPARSE,
    TERMS,
    ChunkPoint,
    DeleteDocument,
    DocInfo,
    Hit,
    Index,
    Legs,
    Operation,
    Upsert,
    make_hit,
    stamp_problem,
    stamp_record,
    visible_idf,
    with_terms,
)
from assistant.index.edge_lock import SharedShard

_shared: dict[str, SharedShard] = {}
_shared_guard = threading.Lock()

# The engine writes through memory maps: on a full disk the process dies of SIGBUS rather
# than getting an error. So a write goes ahead only if the disk keeps this much free
# besides the write itself (the engine may fill a new 32 MiB WAL segment or storage chunk
# at any write), counted as WRITE_OVERHEAD times its points' bytes (WAL, storage, indexes).
MIN_FREE_BYTES = 64 * 2**20
WRITE_OVERHEAD = 4
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over file size


def is_disk_full(exc: BaseException) -> bool:
    """An OSError, or the engine's error (Rust's io::Error text "... (os error 28)"),
    saying that the disk, the quota or the file size limit is full."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL
    return any(f"(os error {code})" in str(exc) for code in _FULL)


def disk_full(folder: Path, detail: str = "") -> DiskFull:
    return DiskFull(
        f"the disk holding {folder} is full{detail}; free space on it and run again "
        "(what was written before is kept)"
    )


def _bytes(op: Operation) -> int:
    """The size of a write's data, as stored (vectors, sparse terms, payload)."""
    if not isinstance(op, Upsert):
        return 4096
    return sum(
        4 * len(p.dense) + 8 * len(p.sparse_indices) + len(json.dumps(p.payload)) + 64
        for p in op.points
    )


def _match(key: str, value: str | int) -> FieldCondition:
    return FieldCondition(key=key, match=MatchValue(value=value))


def groups_condition(groups: list[str]) -> FieldCondition:
    """The asker's groups as an engine condition: a chunk is visible if it shares one."""
    return FieldCondition(key="groups", match=MatchAny(any=sorted(set(groups))))


def groups_filter(groups: list[str]) -> Filter:
    return Filter(must=[groups_condition(groups)])


def document_filter(root: str, source: str, keep_hash: str | None = None) -> Filter:
    must_not = [_match("doc_hash", keep_hash)] if keep_hash else None
    return Filter(must=[_match("root", root), _match("source", source)], must_not=must_not)


def weigh_terms(
    shard: Any, sparse: tuple[list[int], list[float]], groups: list[str]
) -> tuple[list[int], list[float]]:
    """The query's keyword weights with their IDF over the chunks the asker may read,
    counted on the open shard with the asker's group filter, so that hidden chunks change
    neither the scores nor the order (assistant/index/base.py, visible_idf)."""
    visible = groups_condition(groups)

    def count(term: int | None) -> int:
        holding = [] if term is None else [_match(TERMS, term)]
        return shard.count(CountRequest(exact=True, filter=Filter(must=[visible, *holding])))

    return visible_idf(sparse, count)


def hybrid_request(
    dense: list[float],
    sparse: tuple[list[int], list[float]],
    groups: list[str],
    limit: int,
    candidates: int = 40,
    legs: Legs = "both",
) -> QueryRequest:
    """Dense and keyword prefetches, each filtered by the asker's groups, fused by RRF;
    or one leg alone (`legs`), with the same filter."""
    flt = groups_filter(groups)
    depth = max(candidates, limit)
    keyword = SparseVector(list(sparse[0]), list(sparse[1]))
    if legs != "both":
        return QueryRequest(
            limit=limit,
            query=Query.Nearest(dense, using=DENSE)
            if legs == "dense"
            else Query.Nearest(keyword, using=SPARSE),
            filter=flt,
            with_payload=True,
            with_vector=True,
        )
    return QueryRequest(
        limit=limit,
        prefetches=[
            Prefetch(limit=depth, query=Query.Nearest(dense, using=DENSE), filter=flt),
            Prefetch(limit=depth, query=Query.Nearest(keyword, using=SPARSE), filter=flt),
        ],
        query=Fusion.Rrf(k=60),
        filter=flt,
        with_payload=True,
        with_vector=True,
    )


def _operation(op: Operation) -> UpdateOperation:
    """A backend-neutral write as an Edge update."""
    if isinstance(op, Upsert):
        return UpdateOperation.upsert_points(
            [
                Point(
                    p.id,
                    {DENSE: p.dense, SPARSE: SparseVector(p.sparse_indices, p.sparse_values)},
                    with_terms(p),
                )
                for p in op.points
            ]
        )
    if isinstance(op, DeleteDocument):
        return UpdateOperation.delete_points_by_filter(
            document_filter(op.root, op.source, op.keep_hash)
        )
    return UpdateOperation.set_payload_by_filter(
        document_filter(op.root, op.source), {"groups": op.groups}
    )


class EdgeIndex(Index):
    """`<data_dir>/index` is a symlink to the current generation, a folder holding the
    shard and its stamp; a rebuild fills a new generation and switches the link in one
    atomic rename, so a reader opens either the old index or the new one, never neither."""

    def __init__(self, data_dir: Path, lock_timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.link = self.data_dir / "index"
        self.path = self.link / "shard"
        self.stamp_path = self.link / "stamp.json"
        self.lock_timeout = lock_timeout
        self.description = f"embedded (qdrant-edge) in {self.data_dir.resolve()}"
        key = str(self.link.absolute())
        with _shared_guard:
            if key not in _shared:
                _shared[key] = SharedShard(self.path, self.data_dir / "write.intent")
            self._shared = _shared[key]

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
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.data_dir / ".create.lock"), timeout=self.lock_timeout):
            current = self.read_stamp()
            if current is None:
                self._check_room([])
                try:
                    self._switch_to(self._new_generation(stamp))
                except Exception as exc:
                    if is_disk_full(exc):
                        raise disk_full(self.data_dir) from exc
                    raise
                return
        problem = stamp_problem(current, stamp)
        if problem:
            raise ModelMismatch(problem)

    def _new_generation(self, stamp: ModelStamp) -> Path:
        generation = self.data_dir / "generations" / str(time.time_ns())
        config = EdgeConfig(
            vectors={DENSE: EdgeVectorParams(size=stamp.dim, distance=Distance.Cosine)},
            sparse_vectors={SPARSE: EdgeSparseVectorParams()},  # IDF: see weigh_terms
        )
        try:
            shard = EdgeShard.create(str(generation / "shard"), config)
            try:
                for name in KEYWORD_FIELDS:
                    shard.update(
                        UpdateOperation.create_field_index(name, PayloadSchemaType.Keyword)
                    )
                for name in INTEGER_FIELDS:
                    shard.update(
                        UpdateOperation.create_field_index(name, PayloadSchemaType.Integer)
                    )
                shard.flush()
            finally:
                shard.close()
            stamp_file = generation / "stamp.json"
            stamp_file.write_text(json.dumps(stamp_record(stamp, time.time()), indent=2), "utf-8")
        except BaseException:  # a disk that filled up, say: leave no half-built generation
            shutil.rmtree(generation, ignore_errors=True)
            raise
        return generation

    def _switch_to(self, generation: Path) -> None:
        """Point the link at `generation` atomically, then remove generations nobody uses."""
        self._shared.release()
        tmp = self.data_dir / f".index-{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(generation, self.data_dir), tmp)
        os.replace(tmp, self.link)
        self._remove_old_generations(generation)

    def _remove_old_generations(self, keep: Path) -> None:
        for old in (self.data_dir / "generations").iterdir():
            if old.resolve() == keep.resolve():
                continue
            try:  # only a generation no process holds open
                EdgeShard.load(str(old / "shard")).close()
            except Exception:  # held, or a half-built leftover  # noqa: BLE001
                if (old / "shard").exists() and (old / "stamp.json").exists():
                    continue
            shutil.rmtree(old, ignore_errors=True)

    def staging(self) -> EdgeIndex:
        folder = self.data_dir / "reindex"
        if folder.exists():
            shutil.rmtree(folder)
        return EdgeIndex(folder, self.lock_timeout)

    def promote(self, staging: Index) -> None:
        if not isinstance(staging, EdgeIndex) or not staging.exists():
            raise StoreError("the rebuilt index is missing; run `taimatsu reindex` again")
        built = staging.link.resolve()
        generation = self.data_dir / "generations" / built.name
        generation.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, generation)
        staging._shared.release()
        self._switch_to(generation)
        shutil.rmtree(staging.data_dir, ignore_errors=True)

    @contextmanager
    def shard(self, write: bool = False) -> Iterator[EdgeShard]:
        """The shard for one short critical section (see assistant/index/edge_lock.py): a
        reader reuses this process's open handle unless a writer is waiting; a writer
        announces itself, waits for readers to let go, and holds the shard alone."""
        if not self.exists():
            raise StoreError(
                f"there is no index under {self.data_dir}; run `taimatsu ingest FOLDER` first"
            )
        deadline = time.monotonic() + self.lock_timeout
        access = self._shared.write if write else self._shared.read
        try:
            with access(deadline, self._open_with_retry) as shard:
                yield shard
        except TimeoutError:
            raise self._busy() from None

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
                if is_disk_full(exc):  # it replays its WAL on opening
                    raise disk_full(self.data_dir) from exc
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

    def write(self, operations: list[Operation]) -> None:
        if not operations:
            return
        converted = [_operation(op) for op in operations]  # before taking the lock
        self._check_room(operations)
        try:
            with self.shard(write=True) as shard:
                for operation in converted:
                    shard.update(operation)
                shard.flush()
        except StoreError:
            raise
        except Exception as exc:  # the disk filled up all the same (another writer)
            if is_disk_full(exc):
                raise disk_full(self.data_dir) from exc
            raise

    def _check_room(self, operations: list[Operation]) -> None:
        """Refuse, before anything is written, a write the disk has no room for."""
        need = MIN_FREE_BYTES + WRITE_OVERHEAD * sum(_bytes(op) for op in operations)
        free = shutil.disk_usage(self.data_dir).free
        if free < need:
            detail = f" ({free / 2**20:.0f} MB free, {need / 2**20:.0f} MB needed to write safely)"
            raise disk_full(self.data_dir, detail)

    # -- reads -----------------------------------------------------------------------

    def _scroll(self, shard: EdgeShard, flt: Filter, fields: list[str] | bool, vectors=False):
        offset = None
        while True:
            records, offset = shard.scroll(
                ScrollRequest(
                    offset=offset,
                    limit=1024,
                    filter=flt,
                    with_payload=fields,
                    with_vector=vectors,
                )
            )
            yield from records
            if offset is None:
                return

    def manifest(self, root: str) -> dict[str, DocInfo]:
        if not self.exists():
            return {}
        found: dict[str, DocInfo] = {}
        flt = Filter(must=[_match("root", root), _match("chunk", 0)])
        with self.shard() as shard:
            for record in self._scroll(shard, flt, ["source", "doc_hash", "groups"]):
                payload = record.payload or {}
                info = found.setdefault(payload["source"], DocInfo())
                info.hashes.add(payload["doc_hash"])
                info.groups = list(payload.get("groups") or [])
        return found

    def document_groups(self, root: str, source: str) -> list[str] | None:
        if not self.exists():
            return None
        flt = Filter(must=[*document_filter(root, source).must, _match("chunk", 0)])
        with self.shard() as shard:
            records, _ = shard.scroll(ScrollRequest(limit=1, filter=flt, with_payload=["groups"]))
        return list((records[0].payload or {}).get("groups") or []) if records else None

    def roots(self) -> list[str]:
        if not self.exists():
            return []
        with self.shard() as shard:
            facets = shard.facet(FacetRequest(key="root", limit=100_000, exact=True))
        return sorted(str(hit.value) for hit in facets)

    def points_of(self, root: str, source: str, doc_hash: str) -> list[ChunkPoint]:
        flt = Filter(must=[*document_filter(root, source).must, _match("doc_hash", doc_hash)])
        points = []
        with self.shard() as shard:
            for record in self._scroll(shard, flt, True, vectors=True):
                vectors = record.vector or {}
                sparse = vectors.get(SPARSE)
                points.append(
                    ChunkPoint(
                        str(record.id),
                        list(vectors[DENSE]),
                        list(sparse.indices) if sparse else [],
                        list(sparse.values) if sparse else [],
                        dict(record.payload or {}),
                    )
                )
        return sorted(points, key=lambda p: p.payload.get("chunk", 0))

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
        sparse: tuple[list[int], list[float]],
        groups: list[str],
        limit: int,
        candidates: int = 40,
        legs: Legs = "both",
    ) -> list[Hit]:
        with self.shard() as shard:
            weighted = sparse if legs == "dense" else weigh_terms(shard, sparse, groups)
            points = shard.query(hybrid_request(dense, weighted, groups, limit, candidates, legs))
        hits = []
        for point in points:
            vectors = point.vector or {}
            keyword = vectors.get(SPARSE)
            hits.append(
                make_hit(
                    str(point.id),
                    float(point.score),
                    dict(point.payload or {}),
                    dense,
                    list(sparse[0]),
                    vectors.get(DENSE),
                    list(keyword.indices) if keyword else None,
                )
            )
        return hits
