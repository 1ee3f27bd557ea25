"""The index: one contract (`base`), two backends (`edge`, embedded; `server`, a Qdrant
server or cluster), and `open_index`, which picks one from the settings. Nothing outside
this package imports a backend module: everything the product needs is on `Index` and
the names below."""

from __future__ import annotations

from typing import TYPE_CHECKING

from assistant.index.base import (
    DENSE,
    SCHEMA_VERSION,
    SPARSE,
    ChunkPoint,
    DeleteDocument,
    DocInfo,
    Field,
    Hit,
    Index,
    Legs,
    Operation,
    SearchRequest,
    SetGroups,
    SparseTerms,
    Upsert,
    disk_full,
    is_disk_full,
)
from assistant.index.stats import groups_in_index, index_stats

if TYPE_CHECKING:
    from assistant.settings import Settings

__all__ = [
    "DENSE",
    "SCHEMA_VERSION",
    "SPARSE",
    "ChunkPoint",
    "DeleteDocument",
    "DocInfo",
    "Field",
    "Hit",
    "Index",
    "Legs",
    "Operation",
    "SearchRequest",
    "SetGroups",
    "SparseTerms",
    "Upsert",
    "disk_full",
    "groups_in_index",
    "index_stats",
    "is_disk_full",
    "open_index",
]


def open_index(settings: Settings) -> Index:
    """The configured backend: the server when `TAIMATSU_QDRANT_URL` is set, else the
    embedded engine under `TAIMATSU_DATA_DIR`."""
    if settings.qdrant_url:
        from assistant.index.server import ServerIndex

        return ServerIndex(settings)
    from assistant.index.edge import EdgeIndex

    return EdgeIndex(settings.data_dir, settings.lock_timeout)
