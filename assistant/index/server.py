"""The server backend: a Qdrant server or cluster through qdrant-client (`TAIMATSU_QDRANT_URL`).

The schema, filters and queries are those of base.py (shared with the embedded backend), in
qdrant-client's models. The collection `TAIMATSU_QDRANT_COLLECTION` is an alias of a
versioned collection `<name>-<ns>`, which carries the model stamp in its collection metadata;
a rebuild fills a new versioned collection and moves the alias in one atomic request, so the
stamp always travels with the vectors it describes and a reader sees the old index or the new
one, never neither. The server keeps its own data safe across processes: no lock, no file.
A server that goes away after it has answered (a restart) is waited for, about ten
seconds (RESTART_WAITS), before a call fails with the one-sentence "unreachable" error.

Only the configured URL is contacted: REST (no gRPC port), no version check, no telemetry.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, cast

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from qdrant_client.local.qdrant_local import QdrantLocal

from assistant.embedder import ModelStamp
from assistant.errors import ModelMismatch, StoreError
from assistant.index.base import (
    DENSE,
    FACET_LIMIT,
    IN_MEMORY_FIELDS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    RRF_K,
    SPARSE,
    ChunkPoint,
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
    document_filter,
    groups_filter,
    hits_of,
    keyword_weights,
    record_of,
    stamp_problem,
    stamp_record,
    with_terms,
)
from assistant.settings import Settings

TIMEOUT = 30  # seconds per request: connect, write with wait=True, or query
STAMP_KEY = "taimatsu"  # the stamp's key in the collection metadata
POINTS_PER_REQUEST = 1024  # a write larger than this goes in several requests
# pauses before each new attempt at a call that found a server, which had answered
# before, gone (restarting): about ten seconds in all, then the call fails
RESTART_WAITS = (0.1, 0.2, 0.4, 0.8, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5)
# calls that leave the same result when a server applied them twice: reads, and writes
# of points by id, removals and payload changes by filter
_REPEATABLE = frozenset(
    {
        "get_collection",
        "get_collections",
        "get_aliases",
        "scroll",
        "count",
        "facet",
        "query_points",
        "batch_update_points",
    }
)
_sleep = time.sleep  # tests replace it (and count the pauses)


@lru_cache(maxsize=4096)  # the same groups and terms, query after query
def _condition(condition: Condition) -> models.FieldCondition:
    if isinstance(condition, Match):
        return models.FieldCondition(
            key=condition.key, match=models.MatchValue(value=condition.value)
        )
    return models.FieldCondition(key=condition.key, match=models.MatchAny(any=[*condition.values]))


def _filter(where: Where | None) -> models.Filter | None:
    """A neutral filter (assistant/index/base.py) as qdrant-client's."""
    if where is None:
        return None
    return models.Filter(
        must=[_condition(c) for c in where.must] or None,
        must_not=[_condition(c) for c in where.must_not] or None,
    )


def _query(request: SearchRequest, terms: SparseTerms) -> dict[str, Any]:
    """query_points' arguments: the legs as in the embedded backend's `_query`."""
    flt = _filter(groups_filter(request.groups))
    keyword = models.SparseVector(indices=terms.indices, values=terms.values)
    if request.legs != "both":
        dense = request.legs == "dense"
        return {
            "query": request.dense if dense else keyword,
            "using": DENSE if dense else SPARSE,
            "query_filter": flt,
        }
    weights = None if request.weights is None else [*request.weights]
    return {
        "prefetch": [
            models.Prefetch(query=request.dense, using=DENSE, filter=flt, limit=request.depth),
            models.Prefetch(query=keyword, using=SPARSE, filter=flt, limit=request.depth),
        ],
        "query": models.RrfQuery(rrf=models.Rrf(k=RRF_K, weights=weights)),
    }  # no query_filter: as in the embedded backend, the prefetches carry the groups


def _operations(op: Operation) -> list[tuple[int, models.UpdateOperation]]:
    """A backend-neutral write as server updates, each with its number of points."""
    if isinstance(op, Upsert):
        # chunk 0 last: the manifest lists a version by its chunk 0, so a write split over
        # several requests and cut short leaves a version the next run sees as missing
        ordered = sorted(op.points, key=lambda p: p.payload.get(Field.CHUNK) == 0)
        return [
            (len(batch), models.UpsertOperation(upsert=models.PointsList(points=batch)))
            for start in range(0, len(ordered), POINTS_PER_REQUEST)
            if (batch := [_point(p) for p in ordered[start : start + POINTS_PER_REQUEST]])
        ]
    if isinstance(op, DeleteDocument):
        selector = models.FilterSelector(
            filter=_filter(document_filter(op.root, op.source, op.keep_hash))
        )
        return [(0, models.DeleteOperation(delete=selector))]
    payload = models.SetPayload(
        payload={Field.GROUPS: op.groups}, filter=_filter(document_filter(op.root, op.source))
    )
    return [(0, models.SetPayloadOperation(set_payload=payload))]


def _point(p: ChunkPoint) -> models.PointStruct:
    keyword = models.SparseVector(indices=p.sparse.indices, values=p.sparse.values)
    return models.PointStruct(
        id=p.id, vector={DENSE: p.dense, SPARSE: keyword}, payload=with_terms(p)
    )


def _display_url(url: str) -> str:
    """The URL as shown in messages: without a user:password@ part."""
    return re.sub(r"//[^/@]*@", "//", url, count=1)


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Missing(StoreError):
    """The collection (or its alias) does not exist."""


def _restarting(exc: Exception, repeatable: bool) -> bool:
    """What a restarting server gives: a refused connection or HTTP 503 (the call was not
    applied); or, for a call safe to repeat, a connection dropped mid-call or HTTP 502/504
    from a proxy in front of it (the call may have been applied)."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 503 or (repeatable and exc.status_code in (502, 504))
    source = exc.source if isinstance(exc, ResponseHandlingException) else exc
    if isinstance(source, httpx.ConnectError):
        return True
    dropped = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
    return repeatable and isinstance(source, dropped)


class _Patient:
    """The client, patient with a server that restarts: once the server has answered, a
    call that finds it gone is made again after the pauses of RESTART_WAITS, then fails.
    A server that never answered (a wrong URL, a server not started) fails at once."""

    def __init__(self, client: QdrantClient) -> None:
        self._inner = client
        self._answered = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            waits = iter(RESTART_WAITS if self._answered else ())
            while True:
                try:
                    result = attr(*args, **kwargs)
                except Exception as exc:
                    if not _restarting(exc, name in _REPEATABLE):
                        self._answered |= isinstance(exc, UnexpectedResponse)
                        raise
                    pause = next(waits, None)
                    if pause is None:
                        raise
                    _sleep(pause)
                    continue
                self._answered = True
                return result

        return call


def _patient(client: QdrantClient) -> QdrantClient:
    return client if isinstance(client, _Patient) else cast(QdrantClient, _Patient(client))


def field_params(name: str) -> models.KeywordIndexParams | models.IntegerIndexParams:
    """How a payload field is indexed, as the embedded index does (decisions §17): the
    integer fields for lookup only (never compared by range), and on disk unless every
    query filters on them."""
    on_disk = name not in IN_MEMORY_FIELDS
    if name in INTEGER_FIELDS:
        return models.IntegerIndexParams(
            type=models.IntegerIndexType.INTEGER, lookup=True, range=False, on_disk=on_disk
        )
    return models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, on_disk=on_disk)


class ServerIndex(Index):
    def __init__(
        self,
        settings: Settings,
        client: QdrantClient | None = None,
        *,
        collection: str | None = None,
    ) -> None:
        """`client`: an existing client (tests pass qdrant-client's local mode); otherwise
        one is made for `settings.qdrant_url`. `collection`: a versioned collection to use
        directly instead of the alias (a staging index for a rebuild)."""
        self.settings = settings
        self.alias = settings.qdrant_collection
        self.name = collection or self.alias  # what reads and writes address
        self.url = _display_url(settings.qdrant_url or "")
        self.client = _patient(client if client is not None else self._connect(settings))
        self.local = isinstance(getattr(self.client, "_client", None), QdrantLocal)
        where = "qdrant-client local mode" if self.local else f"Qdrant server at {self.url}"
        self.description = f"{where} (collection {self.name})"

    def _connect(self, settings: Settings) -> QdrantClient:
        if not settings.qdrant_url:  # qdrant-client would try localhost:6333
            raise StoreError("TAIMATSU_QDRANT_URL is empty; set it to the Qdrant server's URL")
        try:
            return QdrantClient(
                url=settings.qdrant_url,
                api_key=settings.qdrant_api_key or None,
                timeout=TIMEOUT,
                prefer_grpc=False,  # REST on the URL's port only
                check_compatibility=False,  # no version request at start (and no warning)
            )
        except ValueError as exc:
            raise StoreError(
                f"TAIMATSU_QDRANT_URL {self.url!r} is not a usable URL ({_one_line(str(exc))}); "
                "give one like http://qdrant:6333"
            ) from exc

    # -- errors ----------------------------------------------------------------------

    @contextmanager
    def _server(self) -> Iterator[None]:
        """Turn the client's failures into one-sentence StoreErrors."""
        try:
            yield
        except UnexpectedResponse as exc:
            raise self._http_error(exc) from exc
        except (ResponseHandlingException, httpx.HTTPError) as exc:
            source = getattr(exc, "source", exc)
            reason = _one_line(str(source) or source.__class__.__name__)
            if isinstance(source, httpx.TimeoutException):
                reason = f"no answer within {TIMEOUT} s"
            raise StoreError(
                f"the Qdrant server at {self.url} is unreachable ({reason}); check "
                "TAIMATSU_QDRANT_URL and that the server is running and reachable from here"
            ) from exc
        except ValueError as exc:  # local mode reports a missing collection so
            if "not found" not in str(exc):
                raise
            raise self._missing() from exc

    def _missing(self) -> _Missing:
        where = (
            "in qdrant-client local mode" if self.local else f"on the Qdrant server at {self.url}"
        )
        return _Missing(
            f"there is no collection {self.name!r} {where}; run `taimatsu ingest FOLDER` first"
        )

    def _http_error(self, exc: UnexpectedResponse) -> StoreError:
        if exc.status_code == 404:
            return self._missing()
        if exc.status_code in (401, 403):
            return StoreError(
                f"the Qdrant server at {self.url} refused the request (HTTP {exc.status_code}); "
                "check TAIMATSU_QDRANT_API_KEY"
            )
        try:
            detail = str(exc.structured()["status"]["error"])
        except (ValueError, KeyError, TypeError):
            detail = exc.reason_phrase or "no detail"
        return StoreError(
            f"the Qdrant server at {self.url} answered HTTP {exc.status_code} "
            f"({_one_line(detail)}); see the server's log"
        )

    # -- lifecycle -----------------------------------------------------------------

    def _info(self) -> models.CollectionInfo | None:
        try:
            with self._server():
                return self.client.get_collection(self.name)
        except _Missing:
            return None

    def exists(self) -> bool:
        return self._info() is not None

    def read_stamp(self) -> dict[str, Any] | None:
        info = self._info()
        metadata = info.config.metadata if info is not None else None
        stamp = (metadata or {}).get(STAMP_KEY)
        return stamp if isinstance(stamp, dict) else None

    def ensure(self, stamp: ModelStamp) -> None:
        info = self._info()
        if info is None:
            if self.name != self.alias:  # a staging index: its versioned collection itself
                self._create(self.name, stamp)
                return
            self._create_behind_alias(stamp)
            info = self._info()
            if info is None:
                raise self._missing()
        recorded = (info.config.metadata or {}).get(STAMP_KEY)
        if not isinstance(recorded, dict):
            raise self._foreign()
        problem = stamp_problem(recorded, stamp)
        if problem:
            raise ModelMismatch(problem)

    def _foreign(self) -> StoreError:
        return StoreError(
            f"the collection {self.name!r} at {self.url or 'local mode'} has no Taimatsu model "
            "stamp (made by another program, or a Qdrant server older than 1.16); set "
            "TAIMATSU_QDRANT_COLLECTION to another name"
        )

    def _create_behind_alias(self, stamp: ModelStamp) -> None:
        """A new versioned collection, then the alias to it. Two workers starting on an
        empty server at once may both get here: one alias wins, the other collection,
        still empty (every write goes through the alias), is dropped."""
        versioned = self._create(f"{self.alias}-{time.time_ns()}", stamp)
        try:
            with self._server():
                self.client.update_collection_aliases(
                    change_aliases_operations=[self._create_alias(versioned)]
                )
        except StoreError:
            if self.alias not in self._aliases():
                raise
        if self._aliases().get(self.alias) != versioned:
            with self._server():
                self.client.delete_collection(collection_name=versioned)

    def _create(self, name: str, stamp: ModelStamp) -> str:
        """A collection with the schema of the embedded backend and the model stamp."""
        with self._server():
            self.client.create_collection(
                collection_name=name,
                vectors_config={
                    DENSE: models.VectorParams(size=stamp.dim, distance=models.Distance.COSINE)
                },
                sparse_vectors_config={
                    SPARSE: models.SparseVectorParams()  # IDF: per asker, see keyword_weights
                },
                metadata={STAMP_KEY: stamp_record(stamp, time.time())},
                shard_number=self.settings.qdrant_shards,
                replication_factor=self.settings.qdrant_replicas,
            )
            indexes = [(f, field_params(f)) for f in (*KEYWORD_FIELDS, *INTEGER_FIELDS)]
            with warnings.catch_warnings():
                if self.local:  # "payload indexes have no effect in local mode": expected
                    warnings.simplefilter("ignore", UserWarning)
                for field, schema in indexes:
                    self.client.create_payload_index(
                        collection_name=name, field_name=field, field_schema=schema, wait=True
                    )
        return name

    def _create_alias(self, target: str) -> models.CreateAliasOperation:
        return models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=target, alias_name=self.alias)
        )

    def _aliases(self) -> dict[str, str]:
        with self._server():
            found = self.client.get_aliases().aliases
        return {a.alias_name: a.collection_name for a in found}

    def staging(self) -> ServerIndex:
        """A new versioned collection, made by its `ensure()` (which knows the model).
        Versioned collections no alias points at (an interrupted rebuild) are dropped."""
        in_use = set(self._aliases().values())
        versioned = re.compile(re.escape(self.alias) + r"-\d+")
        with self._server():
            for found in self.client.get_collections().collections:
                if versioned.fullmatch(found.name) and found.name not in in_use:
                    self.client.delete_collection(collection_name=found.name)
        return ServerIndex(self.settings, self.client, collection=f"{self.alias}-{time.time_ns()}")

    def promote(self, staging: Index) -> None:
        if (
            not isinstance(staging, ServerIndex)
            or staging.alias != self.alias
            or staging.name == self.alias
            or not staging.exists()
        ):
            raise StoreError("the rebuilt index is missing; run `taimatsu reindex` again")
        old = self._aliases().get(self.alias)
        switch: list[models.AliasOperations] = [self._create_alias(staging.name)]
        if old is not None:
            delete = models.DeleteAlias(alias_name=self.alias)
            switch.insert(0, models.DeleteAliasOperation(delete_alias=delete))
        elif self._info() is not None:  # a collection of that name, not our alias
            raise self._foreign()
        with self._server():  # one request: readers see the old collection or the new one
            self.client.update_collection_aliases(change_aliases_operations=switch)
        if old is not None and old != staging.name:
            try:
                with self._server():
                    self.client.delete_collection(collection_name=old)
            except StoreError:  # switched all the same; the next staging() drops it
                pass

    # -- writes ----------------------------------------------------------------------

    def write(self, operations: list[Operation]) -> None:
        """The operations in order, in as few requests as the size allows, each applied
        before the server answers (wait=True)."""
        requests: list[list[models.UpdateOperation]] = [[]]
        size = 0
        for op in operations:
            for points, update in _operations(op):
                if requests[-1] and size + points > POINTS_PER_REQUEST:
                    requests.append([])
                    size = 0
                requests[-1].append(update)
                size += points
        with self._server():
            for batch in requests:
                if batch:
                    self.client.batch_update_points(
                        collection_name=self.name, update_operations=batch, wait=True
                    )

    def optimize(self) -> None:
        """Nothing to do: the server builds its indexes itself."""

    def build_search_indexes(self) -> bool:
        """Nothing to do: the server's optimizers build its indexes in the background."""
        return False

    def refresh_keyword_counts(self) -> None:
        """Nothing to do: the server's keyword IDF is counted per query (its writers are
        other processes, on other hosts, with no lock a table's version could be raised
        under; see assistant/index/label_counts.py)."""

    def engine_version(self) -> str | None:
        """The server's version, from its root endpoint on the configured URL."""
        try:
            with self._server():
                info = self.client.info()
        except Exception:  # a health line, never an error  # noqa: BLE001
            return None
        return f"Qdrant {info.version}"

    # -- reads -----------------------------------------------------------------------

    def _page(
        self, where: Where, fields: list[str] | bool, vectors: bool, offset: Any, size: int
    ) -> tuple[list[Record], Any]:
        with self._server():
            records, offset = self.client.scroll(
                collection_name=self.name,
                scroll_filter=_filter(where),
                limit=size,
                offset=offset,
                with_payload=fields,
                with_vectors=vectors,
            )
        return [record_of(r) for r in records], offset

    def _count(self, where: Where | None) -> int:
        with self._server():
            return self.client.count(self.name, count_filter=_filter(where), exact=True).count

    def _facet(self, key: str, where: Where | None) -> dict[str, int]:
        with self._server():
            response = self.client.facet(
                collection_name=self.name,
                key=key,
                facet_filter=_filter(where),
                limit=FACET_LIMIT,
                exact=True,
            )
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def search(self, request: SearchRequest) -> list[Hit]:
        with self._server():
            terms = keyword_weights(request, self._count)
            response = self.client.query_points(
                collection_name=self.name,
                **_query(request, terms),
                limit=request.limit,
                with_payload=True,
                with_vectors=True,  # for the hits' similarity and keyword coverage
            )
        return hits_of(request, [record_of(p) for p in response.points])
