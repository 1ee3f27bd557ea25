"""Index statistics for the administration page: documents and chunks in total, by file
type (the payload's `kind`) and by source folder (`root`), and the groups documents carry.

Callers see one function per question, whatever the backend; inside, each backend is asked
in its own terms. Counts by root and the groups come from the engine's facets (`root` and
`groups` have keyword indexes); `kind` has no payload index, so the counts by type come from
one pass over each document's first chunk (one point per document, with the document's
chunk count in its payload). Operators only: nothing here is filtered by groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from assistant.errors import StoreError
from assistant.index.base import Index

FACET_LIMIT = 100_000
_FIRST_CHUNK_FIELDS = ["root", "source", "kind", "chunks"]


def _edge_facet(index: Any, key: str, first_chunks: bool) -> dict[str, int]:
    from qdrant_edge import FacetRequest, FieldCondition, Filter, MatchValue

    flt = None
    if first_chunks:
        flt = Filter(must=[FieldCondition(key="chunk", match=MatchValue(value=0))])
    with index.shard() as shard:
        hits = shard.facet(FacetRequest(key=key, limit=FACET_LIMIT, exact=True, filter=flt))
    return {str(hit.value): int(hit.count) for hit in hits}


def _server_facet(index: Any, key: str, first_chunks: bool) -> dict[str, int]:
    from qdrant_client import models

    flt = None
    if first_chunks:
        flt = models.Filter(
            must=[models.FieldCondition(key="chunk", match=models.MatchValue(value=0))]
        )
    with index._server():  # the backend's one-sentence errors
        response = index.client.facet(
            collection_name=index.name, key=key, facet_filter=flt, limit=FACET_LIMIT, exact=True
        )
    return {str(hit.value): int(hit.count) for hit in response.hits}


def _edge_first_chunks(index: Any) -> Iterator[dict[str, Any]]:
    from qdrant_edge import FieldCondition, Filter, MatchValue, ScrollRequest

    flt = Filter(must=[FieldCondition(key="chunk", match=MatchValue(value=0))])
    offset = None
    with index.shard() as shard:
        while True:
            records, offset = shard.scroll(
                ScrollRequest(
                    offset=offset, limit=1024, filter=flt, with_payload=_FIRST_CHUNK_FIELDS
                )
            )
            for record in records:
                yield dict(record.payload or {})
            if offset is None:
                return


def _server_first_chunks(index: Any) -> Iterator[dict[str, Any]]:
    from qdrant_client import models

    flt = models.Filter(must=[models.FieldCondition(key="chunk", match=models.MatchValue(value=0))])
    offset = None
    while True:
        with index._server():
            records, offset = index.client.scroll(
                collection_name=index.name,
                scroll_filter=flt,
                limit=1024,
                offset=offset,
                with_payload=_FIRST_CHUNK_FIELDS,
                with_vectors=False,
            )
        for record in records:
            yield dict(record.payload or {})
        if offset is None:
            return


def _backend(index: Index) -> str:
    from assistant.index.edge import EdgeIndex

    if isinstance(index, EdgeIndex):
        return "edge"
    from assistant.index.server import ServerIndex

    if isinstance(index, ServerIndex):
        return "server"
    raise StoreError(f"no statistics for the index backend {type(index).__name__}")


def facet(index: Index, key: str, first_chunks: bool = False) -> dict[str, int]:
    """{value: points} of a keyword-indexed payload field; with first_chunks, each
    document counts once."""
    if not index.exists():
        return {}
    if _backend(index) == "edge":
        return _edge_facet(index, key, first_chunks)
    return _server_facet(index, key, first_chunks)


def _first_chunks(index: Index) -> Iterator[dict[str, Any]]:
    if _backend(index) == "edge":
        return _edge_first_chunks(index)
    return _server_first_chunks(index)


def kind_of(payload: dict[str, Any]) -> str:
    kind = str(payload.get("kind") or PurePosixPath(str(payload.get("source", ""))).suffix)
    return kind.lstrip(".").lower() or "?"


def index_stats(index: Index) -> dict[str, Any]:
    """{"documents", "chunks", "by_kind": [{"kind", "documents", "chunks"}],
    "by_root": [{"root", "documents", "chunks"}]}, rows by most documents first."""
    stats: dict[str, Any] = {"documents": 0, "chunks": 0, "by_kind": [], "by_root": []}
    if not index.exists():
        return stats
    stats.update(index.counts())
    kind_documents: Counter[str] = Counter()
    kind_chunks: Counter[str] = Counter()
    for payload in _first_chunks(index):
        kind = kind_of(payload)
        kind_documents[kind] += 1
        kind_chunks[kind] += int(payload.get("chunks") or 1)
    stats["by_kind"] = [
        {"kind": kind, "documents": count, "chunks": kind_chunks[kind]}
        for kind, count in sorted(kind_documents.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    root_documents = facet(index, "root", first_chunks=True)
    root_chunks = facet(index, "root")
    stats["by_root"] = [
        {"root": root, "documents": root_documents.get(root, 0), "chunks": chunks}
        for root, chunks in sorted(
            root_chunks.items(), key=lambda kv: (-root_documents.get(kv[0], 0), kv[0])
        )
    ]
    return stats


def groups_in_index(index: Index) -> list[str]:
    """Every group some document may be read by."""
    return sorted(facet(index, "groups"))


def engine_version(index: Index) -> str | None:
    """The Qdrant engine's version: the embedded library's, or the server's (its root
    endpoint, asked on the configured URL only); None when it cannot be told."""
    try:
        if _backend(index) == "edge":
            from importlib.metadata import version

            return f"qdrant-edge-py {version('qdrant-edge-py')}"
        with index._server():  # type: ignore[attr-defined]
            info = index.client.info()  # type: ignore[attr-defined]
        return f"Qdrant {info.version}"
    except Exception:  # a health line, never an error  # noqa: BLE001
        return None
