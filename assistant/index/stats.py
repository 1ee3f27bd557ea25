"""Index statistics for the administration page: documents and chunks in total, by file
type (the payload's `kind`) and by source folder (`root`), and the groups documents carry.

Built on the index contract alone, so the same on every backend. Counts by root and the
groups come from the engine's facets (`root` and `groups` have keyword indexes); `kind`
has no payload index, so the counts by type come from one pass over each document's first
chunk (one point per document, with the document's chunk count in its payload).
Operators only: nothing here is filtered by groups.
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath
from typing import Any

from assistant.index.base import Field, Index

_FIRST_CHUNK_FIELDS = [Field.ROOT, Field.SOURCE, Field.KIND, Field.CHUNKS]


def kind_of(payload: dict[str, Any]) -> str:
    kind = str(payload.get(Field.KIND) or PurePosixPath(str(payload.get(Field.SOURCE, ""))).suffix)
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
    for payload in index.first_chunks(_FIRST_CHUNK_FIELDS):
        kind = kind_of(payload)
        kind_documents[kind] += 1
        kind_chunks[kind] += int(payload.get(Field.CHUNKS) or 1)
    stats["by_kind"] = [
        {"kind": kind, "documents": count, "chunks": kind_chunks[kind]}
        for kind, count in sorted(kind_documents.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    root_documents = index.facet(Field.ROOT, first_chunks=True)
    root_chunks = index.facet(Field.ROOT)
    stats["by_root"] = [
        {"root": root, "documents": root_documents.get(root, 0), "chunks": chunks}
        for root, chunks in sorted(
            root_chunks.items(), key=lambda kv: (-root_documents.get(kv[0], 0), kv[0])
        )
    ]
    return stats


def groups_in_index(index: Index) -> list[str]:
    """Every group some document may be read by."""
    return sorted(index.facet(Field.GROUPS))
