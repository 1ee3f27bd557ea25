"""The server backend: a Qdrant server or cluster through qdrant-client (`TAIMATSU_QDRANT_URL`).

The schema, filters and queries are those of the embedded backend (edge_index.py), in
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
from typing import Any, cast

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from qdrant_client.local.qdrant_local import QdrantLocal

from assistant.embedder import ModelStamp
from assistant.errors import ModelMismatch, StoreError
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
from assistant.settings import Settings

TIMEOUT = 30  # seconds per request: connect, write with wait=True, or query
STAMP_KEY = "taimatsu"  # the stamp's key in the collection metadata
RRF_K = 60  # as the embedded backend's Fusion.Rrf(k=60); the server's default k is 2
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


def _match(key: str, value: str | int) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def groups_filter(groups: list[str]) -> models.Filter:
    """The asker's groups as an engine filter: a chunk is visible if it shares one."""
    return models.Filter(
        must=[models.FieldCondition(key="groups", match=models.MatchAny(any=sorted(set(groups))))]
    )


def document_filter(root: str, source: str, keep_hash: str | None = None) -> models.Filter:
    must_not = [_match("doc_hash", keep_hash)] if keep_hash else None
    return models.Filter(must=[_match("root", root), _match("source", source)], must_not=must_not)


def _operations(op: Operation) -> list[tuple[int, models.UpdateOperation]]:
    """A backend-neutral write as server updates, each with its number of points."""
    if isinstance(op, Upsert):
        # chunk 0 last: the manifest lists a version by its chunk 0, so a write split over
        # several requests and cut short leaves a version the next run sees as missing
        ordered = sorted(op.points, key=lambda p: p.payload.get("chunk") == 0)
        return [
            (len(batch), models.UpsertOperation(upsert=models.PointsList(points=batch)))
            for start in range(0, len(ordered), POINTS_PER_REQUEST)
            if (batch := [_point(p) for p in ordered[start : start + POINTS_PER_REQUEST]])
        ]
    if isinstance(op, DeleteDocument):
        selector = models.FilterSelector(filter=document_filter(op.root, op.source, op.keep_hash))
        return [(0, models.DeleteOperation(delete=selector))]
    payload = models.SetPayload(
        payload={"groups": op.groups}, filter=document_filter(op.root, op.source)
    )
    return [(0, models.SetPayloadOperation(set_payload=payload))]


def _point(p: ChunkPoint) -> models.PointStruct:
    keyword = models.SparseVector(indices=p.sparse_indices, values=p.sparse_values)
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
                    SPARSE: models.SparseVectorParams()  # IDF: per asker, see _weigh_terms
                },
                metadata={STAMP_KEY: stamp_record(stamp, time.time())},
                shard_number=self.settings.qdrant_shards,
                replication_factor=self.settings.qdrant_replicas,
            )
            indexes = [(f, models.PayloadSchemaType.KEYWORD) for f in KEYWORD_FIELDS]
            indexes += [(f, models.PayloadSchemaType.INTEGER) for f in INTEGER_FIELDS]
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

    # -- reads -----------------------------------------------------------------------

    def _scroll(
        self, flt: models.Filter, fields: list[str] | bool, vectors: list[str] | bool = False
    ) -> Iterator[models.Record]:
        offset = None
        while True:
            with self._server():
                records, offset = self.client.scroll(
                    collection_name=self.name,
                    scroll_filter=flt,
                    limit=1024,
                    offset=offset,
                    with_payload=fields,
                    with_vectors=vectors,
                )
            yield from records
            if offset is None:
                return

    def manifest(self, root: str) -> dict[str, DocInfo]:
        if not self.exists():
            return {}
        found: dict[str, DocInfo] = {}
        flt = models.Filter(must=[_match("root", root), _match("chunk", 0)])
        for record in self._scroll(flt, ["source", "doc_hash", "groups"]):
            payload = record.payload or {}
            info = found.setdefault(payload["source"], DocInfo())
            info.hashes.add(payload["doc_hash"])
            info.groups = list(payload.get("groups") or [])
        return found

    def document_groups(self, root: str, source: str) -> list[str] | None:
        if not self.exists():
            return None
        flt = models.Filter(
            must=[_match("root", root), _match("source", source), _match("chunk", 0)]
        )
        for record in self._scroll(flt, ["groups"]):
            return list((record.payload or {}).get("groups") or [])
        return None

    def roots(self) -> list[str]:
        if not self.exists():
            return []
        with self._server():
            facets = self.client.facet(
                collection_name=self.name, key="root", limit=100_000, exact=True
            )
        return sorted(str(hit.value) for hit in facets.hits)

    def points_of(self, root: str, source: str, doc_hash: str) -> list[ChunkPoint]:
        flt = models.Filter(
            must=[_match("root", root), _match("source", source), _match("doc_hash", doc_hash)]
        )
        points = []
        for record in self._scroll(flt, True, vectors=[DENSE, SPARSE]):
            vectors: Any = record.vector or {}
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
        with self._server():
            chunks = self.client.count(collection_name=self.name, exact=True).count
            documents = self.client.count(
                collection_name=self.name,
                count_filter=models.Filter(must=[_match("chunk", 0)]),
                exact=True,
            ).count
        return {"documents": documents, "chunks": chunks}

    def _weigh_terms(
        self, sparse: tuple[list[int], list[float]], visible: models.Filter
    ) -> tuple[list[int], list[float]]:
        """The query's keyword weights with their IDF over the chunks the asker may read
        (counted with the asker's filter; see assistant/index/base.py, visible_idf)."""

        def count(term: int | None) -> int:
            holding = [] if term is None else [_match(TERMS, term)]
            flt = models.Filter(must=[*(visible.must or []), *holding])  # type: ignore[misc]
            return self.client.count(self.name, count_filter=flt, exact=True).count

        with self._server():
            return visible_idf(sparse, count)

    def hybrid(
        self,
        dense: list[float],
        sparse: tuple[list[int], list[float]],
        groups: list[str],
        limit: int,
        candidates: int = 40,
        legs: Legs = "both",
    ) -> list[Hit]:
        flt = groups_filter(groups)
        depth = max(candidates, limit)
        if legs != "dense":
            sparse = self._weigh_terms(sparse, flt)
        keyword = models.SparseVector(indices=list(sparse[0]), values=list(sparse[1]))
        if legs == "both":
            query: Any = models.RrfQuery(rrf=models.Rrf(k=RRF_K))
            prefetch: Any = [
                models.Prefetch(query=dense, using=DENSE, filter=flt, limit=depth),
                models.Prefetch(query=keyword, using=SPARSE, filter=flt, limit=depth),
            ]
            using = None
        else:
            query = dense if legs == "dense" else keyword
            prefetch = None
            using = DENSE if legs == "dense" else SPARSE
        with self._server():
            response = self.client.query_points(
                collection_name=self.name,
                prefetch=prefetch,
                query=query,
                using=using,
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=True,  # for the hits' similarity and keyword coverage
            )
        hits = []
        for point in response.points:
            vectors: Any = point.vector or {}
            terms = vectors.get(SPARSE)
            hits.append(
                make_hit(
                    str(point.id),
                    float(point.score),
                    dict(point.payload or {}),
                    dense,
                    list(sparse[0]),
                    vectors.get(DENSE),
                    list(terms.indices) if terms else None,
                )
            )
        return hits
