"""The embedded backend: one Qdrant Edge shard under `<data_dir>/index`, with its model
stamp beside it (see EdgeIndex). The contract's shared reads and filters come from
assistant/index/base.py; this module translates them into the engine's types.

The engine locks its folder for one open handle, in one process. So that the ingestion
cron and the page work side by side, the shard is opened only for short critical
sections (open, write a batch or run a query, close) and an open that finds it held
waits and retries until `lock_timeout` (see ../shared/DESIGN.md, decision 3).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import FileLock
from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FacetRequest,
    FieldCondition,
    Filter,
    Fusion,
    IntegerIndexParams,
    KeywordIndexParams,
    MatchAny,
    MatchValue,
    Point,
    Prefetch,
    Query,
    QueryRequest,
    ScrollRequest,
    SparseVector,
    UpdateOperation,
)

from assistant.embedder import ModelStamp
from assistant.errors import ModelMismatch, StoreBusy, StoreError
from assistant.index.base import (
    DENSE,
    FACET_LIMIT,
    IN_MEMORY_FIELDS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    RRF_K,
    SPARSE,
    Condition,
    DeleteDocument,
    Field,
    Hit,
    Index,
    Match,
    Operation,
    Record,
    SearchRequest,
    SparseTerms,
    Upsert,
    Where,
    disk_full,
    document_filter,
    groups_filter,
    hits_of,
    is_disk_full,
    keyword_weights,
    record_of,
    stamp_problem,
    stamp_record,
    with_terms,
)
from assistant.index.edge_lock import SharedShard, open_handle_lock, try_flock
from assistant.index.label_counts import LabelCounts, tally

log = logging.getLogger(__name__)
_shared: dict[str, SharedShard] = {}
_shared_guard = threading.Lock()

# The engine writes through memory maps: on a full disk the process dies of SIGBUS rather
# than getting an error. So a write goes ahead only if the disk keeps this much free
# besides the write itself (the engine may fill a new 32 MiB WAL segment or storage chunk
# at any write), counted as WRITE_OVERHEAD times its points' bytes (WAL, storage, indexes).
MIN_FREE_BYTES = 64 * 2**20
COUNT_PAGE = 8192  # points per page of refresh_keyword_counts' scroll (~60 ms of shard)
# Points the engine searches one by one (it builds no vector index by itself: see
# build_search_indexes) before one is built: a dense leg over 20,000 costs ~3 ms, over
# 80,000 ~20 ms; building one for 80,000 takes minutes on two cores.
UNINDEXED_MIN = 20_000
SEGMENTS = 8  # segments a build keeps: a new batch's graph is built alone, not merged
WRITE_OVERHEAD = 4


def _bytes(op: Operation) -> int:
    """The size of a write's data, as stored (vectors, sparse terms, payload)."""
    if not isinstance(op, Upsert):
        return 4096
    return sum(
        4 * len(p.dense) + 8 * len(p.sparse.indices) + len(json.dumps(p.payload)) + 64
        for p in op.points
    )


@lru_cache(maxsize=4096)  # the same groups and terms, query after query
def _condition(condition: Condition) -> FieldCondition:
    if isinstance(condition, Match):
        return FieldCondition(key=condition.key, match=MatchValue(value=condition.value))
    return FieldCondition(key=condition.key, match=MatchAny(any=list(condition.values)))


def _filter(where: Where | None) -> Filter | None:
    """A neutral filter (assistant/index/base.py) as the engine's."""
    if where is None:
        return None
    return Filter(
        must=[_condition(c) for c in where.must] or None,
        must_not=[_condition(c) for c in where.must_not] or None,
    )


def _count_on(shard: EdgeShard, where: Where | None) -> int:
    return shard.count(CountRequest(exact=True, filter=_filter(where)))


def _query(request: SearchRequest, terms: SparseTerms) -> QueryRequest:
    """Dense and keyword prefetches, each filtered by the asker's groups, fused by RRF
    (weighted if the request says so); or one leg alone, with the same filter."""
    flt = _filter(groups_filter(request.groups))
    dense = Query.Nearest(request.dense, using=DENSE)
    keyword = Query.Nearest(SparseVector(terms.indices, terms.values), using=SPARSE)
    if request.legs != "both":
        return QueryRequest(
            limit=request.limit,
            query=dense if request.legs == "dense" else keyword,
            filter=flt,
            with_payload=True,
            with_vector=True,
        )
    weights = request.weights
    return QueryRequest(
        limit=request.limit,
        prefetches=[
            Prefetch(limit=request.depth, query=dense, filter=flt),
            Prefetch(limit=request.depth, query=keyword, filter=flt),
        ],
        query=Fusion.Rrf(k=RRF_K) if weights is None else Fusion.Rrf(k=RRF_K, weights=[*weights]),
        # no filter here: the fusion ranks only the prefetches' candidates, each already
        # filtered by the asker's groups; filtering them again cost 30% of the query
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
                    {DENSE: p.dense, SPARSE: SparseVector(p.sparse.indices, p.sparse.values)},
                    with_terms(p),
                )
                for p in op.points
            ]
        )
    if isinstance(op, DeleteDocument):
        return UpdateOperation.delete_points_by_filter(
            _filter(document_filter(op.root, op.source, op.keep_hash))
        )
    return UpdateOperation.set_payload_by_filter(
        _filter(document_filter(op.root, op.source)), {Field.GROUPS: op.groups}
    )


def _config(dim: int, optimizers: EdgeOptimizersConfig | None = None) -> EdgeConfig:
    return EdgeConfig(
        vectors={DENSE: EdgeVectorParams(size=dim, distance=Distance.Cosine)},
        sparse_vectors={SPARSE: EdgeSparseVectorParams()},  # IDF: see keyword_weights
        optimizers=optimizers,
    )


def _optimizers(dim: int) -> EdgeOptimizersConfig:
    """What a build does: every segment of at least half UNINDEXED_MIN points gets its
    graph (the engine's own threshold, in KB of vectors, could leave more unindexed than
    the build's trigger allows), and up to SEGMENTS segments are kept. With the engine's
    default (measured: 2 on this machine) each build merged the new points into the
    indexed segment and rebuilt its whole graph — 8,000 points indexed again for 2,000
    new ones, 14 s instead of 0.7 s; at 100,000 chunks, minutes for every build."""
    return EdgeOptimizersConfig(
        indexing_threshold=max(1, UNINDEXED_MIN * dim // 512), default_segment_number=SEGMENTS
    )


def _copy_folder(source: Path, target: Path) -> None:
    """Copy a generation's files into `target`, keeping the engine's sparse files sparse
    (and sharing blocks where the file system can): cp took 0.3 s and half the disk
    where shutil.copytree took 2 s for the same 839 MB index."""
    items = [str(p) for p in source.iterdir() if p.name != "handle.lock"]
    subprocess.run(
        ["cp", "-R", "--sparse=always", "--reflink=auto", *items, str(target)],
        check=True,
        capture_output=True,
    )


# How each payload field is indexed (decisions §17). The integer fields are only ever
# matched, never compared by range: the engine's default integer index keeps a range
# index too, rebuilt in memory at every open (70% of the 12-14 s it took to open a shard
# of 181,555 chunks). Fields no query filters on read their index from disk (the page
# cache) instead of loading it whole at the open: 0.5 s and 448 MB for that shard,
# against 1.9-2.6 s and 613 MB with every index in memory.
def _field_params(name: str) -> KeywordIndexParams | IntegerIndexParams:
    on_disk = name not in IN_MEMORY_FIELDS
    if name in INTEGER_FIELDS:
        return IntegerIndexParams(lookup=True, range=False, on_disk=on_disk)
    return KeywordIndexParams(on_disk=on_disk)


def _outdated(info: Any) -> list[str]:
    """The payload fields not indexed as `_field_params` says (a generation made before
    decisions §17)."""
    outdated = []
    for name, index in info.payload_schema.items():
        if name not in KEYWORD_FIELDS and name not in INTEGER_FIELDS:
            continue
        have, want = index.params, _field_params(name)
        ranged = name in INTEGER_FIELDS and getattr(have, "range", None) is not False
        if ranged or bool(getattr(have, "on_disk", None)) != bool(want.on_disk):
            outdated.append(name)
    return sorted(outdated)


def _index_fields(shard: EdgeShard, names: list[str], replace: bool = False) -> None:
    for name in names:
        if replace:
            shard.update(UpdateOperation.delete_field_index(name))
        shard.update(UpdateOperation.create_field_index(name, _field_params(name)))


class _Stale(Exception):
    """A write came while the copy was being optimized: the copy misses it."""


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
        self.label_counts = LabelCounts(self.link)  # the keyword leg's IDF, per ACL label
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
        config = _config(stamp.dim)
        lock = None
        try:
            generation.mkdir(parents=True)
            # held while it is built: no other process takes it for an unused leftover
            lock = open_handle_lock(generation)
            fcntl.flock(lock, fcntl.LOCK_EX)
            shard = EdgeShard.create(str(generation / "shard"), config)
            try:
                _index_fields(shard, [*KEYWORD_FIELDS, *INTEGER_FIELDS])
                shard.flush()
            finally:
                shard.close()
            stamp_file = generation / "stamp.json"
            stamp_file.write_text(json.dumps(stamp_record(stamp, time.time()), indent=2), "utf-8")
        except BaseException:  # a disk that filled up, say: leave no half-built generation
            shutil.rmtree(generation, ignore_errors=True)
            raise
        finally:
            if lock is not None:
                os.close(lock)
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
            # only a generation no process holds open (whoever opens a shard holds its
            # handle lock: trying the engine's open here could damage the holder's shard)
            fd = open_handle_lock(old)
            try:
                if not try_flock(fd, fcntl.LOCK_EX):
                    continue
                shutil.rmtree(old, ignore_errors=True)
            finally:
                os.close(fd)

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
        staging._shared.release()
        # held from the move to the switch: another process's end of a run (a run of
        # another shard of the sources) removes unused generations, and would take it
        lock = open_handle_lock(built)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            os.replace(built, generation)
            self._switch_to(generation)
        finally:
            os.close(lock)
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

    def _open_with_retry(self, deadline: float, path: Path) -> EdgeShard:
        """Open `path` (the shard of the current generation). Under the handle lock
        (assistant/index/edge_lock.py) nobody else has it open; a lock error means a
        process outside that protocol has it, and is waited for."""
        delay = 0.02
        while True:
            try:
                return EdgeShard.load(str(path))
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
                self.label_counts.bump()  # before anything changes: the table is stale now
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

    def optimize(self) -> None:
        with self.shard(write=True) as shard:
            shard.optimize()

    def build_search_indexes(self) -> bool:
        """The engine searches new points one by one until its optimizer builds their HNSW
        graph, and Qdrant Edge runs the optimizer only when asked, holding the shard for
        the whole build (minutes at 100,000 chunks: no page could query meanwhile). So
        the current generation is copied while no write can run, the copy optimized with
        nobody waiting, and the link switched to it if no write came since the copy;
        otherwise the copy is dropped and the next run tries again. A generation whose
        payload fields are not indexed as `_field_params` says (made before decisions
        §17) gets them the same way, once."""
        if not self.exists():
            return False
        # a generation a reader still held at the last switch (a page lets go within
        # seconds of its next query or of going idle): one index's worth of disk
        self._remove_old_generations(self.link.resolve())
        copy = self.data_dir / "generations" / str(time.time_ns())
        lock = None
        try:
            with self.shard() as shard:  # a reader's hold: no write runs while it is held
                info = shard.info()
                outdated = _outdated(info)
                unindexed = 2 * info.points_count - info.indexed_vectors_count
                if unindexed < UNINDEXED_MIN and not outdated:
                    return False  # (dense and keyword vectors; the keyword ones always count)
                version = self._version()
                current = self.link.resolve()
                if not self._room_to_copy(current):
                    return False
                copy.mkdir(parents=True)
                # held until the switch: nobody removes it as an unused leftover
                lock = open_handle_lock(copy)
                fcntl.flock(lock, fcntl.LOCK_EX)
                _copy_folder(current, copy)
            dim = int((self.read_stamp() or {})["model"]["dim"])
            built = EdgeShard.load(str(copy / "shard"), _config(dim, _optimizers(dim)))
            try:
                _index_fields(built, outdated, replace=True)
                built.optimize()
            finally:
                built.close()
            with self.shard(write=True):  # nobody reads or writes: the switch is atomic
                if version is None or self._version() != version:
                    raise _Stale
                self._switch_to(copy)
        except BaseException as exc:
            shutil.rmtree(copy, ignore_errors=True)
            if isinstance(exc, _Stale):
                return False
            raise
        finally:
            if lock is not None:
                os.close(lock)
        self._remove_old_generations(copy)  # the old one was held until the hold ended
        return True

    def _room_to_copy(self, generation: Path) -> bool:
        """Free disk for the copy and for the segments its optimization writes: twice the
        generation's blocks on disk (the engine's files are sparse: the share's 181,555
        chunks read 839 MB by size, 719 MB on disk, and the copy stays sparse)."""
        size = sum(f.stat().st_blocks * 512 for f in generation.rglob("*") if f.is_file())
        if shutil.disk_usage(self.data_dir).free >= 2 * size + MIN_FREE_BYTES:
            return True
        log.warning(
            "the vector index under %s was not built: a copy of it needs %.0f MB free",
            self.data_dir,
            2 * size / 2**20,
        )
        return False

    def _version(self) -> str | None:
        """The index's write version (raised by every write), None if unreadable."""
        state = self.label_counts.state()
        return state[0] if state else None

    def engine_version(self) -> str | None:
        try:
            return f"qdrant-edge-py {version('qdrant-edge-py')}"
        except PackageNotFoundError:
            return None

    # -- reads -----------------------------------------------------------------------

    def _page(
        self, where: Where, fields: list[str] | bool, vectors: bool, offset: Any, size: int
    ) -> tuple[list[Record], Any]:
        request = ScrollRequest(
            offset=offset,
            limit=size,
            filter=_filter(where),
            with_payload=fields,
            with_vector=vectors,
        )
        with self.shard() as shard:
            records, offset = shard.scroll(request)
        return [record_of(r) for r in records], offset

    def _count(self, where: Where | None) -> int:
        with self.shard() as shard:
            return _count_on(shard, where)

    def _facet(self, key: str, where: Where | None) -> dict[str, int]:
        request = FacetRequest(key=key, limit=FACET_LIMIT, exact=True, filter=_filter(where))
        with self.shard() as shard:
            hits = shard.facet(request)
        return {str(hit.value): int(hit.count) for hit in hits}

    def search(self, request: SearchRequest) -> list[Hit]:
        """The asker's IDF counts and the query in one critical section: from the table
        per ACL label when it is counted at the index's version (no write can run while
        the shard is held), else counted in the engine."""
        with self.shard() as shard:
            terms = keyword_weights(
                request, lambda where: _count_on(shard, where), self.label_counts.lookup
            )
            points = shard.query(_query(request, terms))
        return hits_of(request, [record_of(p) for p in points])

    def refresh_keyword_counts(self) -> None:
        """Count every point's groups and terms, page by page (a writer may come in
        between pages: the version read first, under the shard, then no longer matches and
        the count is not stored — the next run counts again)."""
        if not self.exists():
            return
        with self.shard():  # no write runs while it is held
            state = self.label_counts.state()
        if state is None or state[0] == state[1]:  # unreadable (a write replaces it), or fresh
            return
        self.label_counts.save(state[0], tally(self._pages(Where(), [Field.GROUPS, Field.TERMS])))

    def _pages(self, where: Where, fields: list[str]) -> Iterator[list[dict[str, Any]]]:
        """The payload `fields` of the points matching `where`, a page at a time, each
        page read in its own short hold of the shard (the engine's payloads as they come:
        `record_of` per point would cost more than the engine's scroll itself)."""
        offset = None
        while True:
            request = ScrollRequest(
                offset=offset,
                limit=COUNT_PAGE,
                filter=_filter(where) if where.must or where.must_not else None,
                with_payload=fields,
            )
            with self.shard() as shard:
                points, offset = shard.scroll(request)
            yield [point.payload or {} for point in points]
            if offset is None:
                return
