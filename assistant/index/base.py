"""The index, as the rest of the product sees it: one schema, two backends.

- `EdgeIndex` (assistant/index/edge.py): the Qdrant engine in-process (qdrant-edge-py),
  under `<data_dir>/index`. The default: nothing to run.
- `ServerIndex` (assistant/index/server.py): a Qdrant server or cluster through
  qdrant-client, when `TAIMATSU_QDRANT_URL` is set.

Each chunk is one point: a dense vector "dense", a sparse keyword vector "bm25" (BM25
term-frequency weights, no IDF), and a payload: root, source (path relative to root),
doc_hash, chunk (number), chunks (count), page, section, text, kind, groups, indexed_at,
and terms (the keyword vector's term ids, indexed). Writes are backend-neutral
operations applied in order in one short critical section.

The keyword leg's IDF is computed per question over the chunks the asker may read
(`visible_idf`, from counts filtered by the asker's groups), never over the whole index:
an engine-side IDF (`modifier=Idf`) counts hidden chunks too, so an outsider's scores and
order of passages would change with documents they cannot read.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.embedder import ModelStamp

Legs = Literal["both", "dense", "keyword"]  # which retrieval legs a query runs

SCHEMA_VERSION = 2  # 2: keyword IDF over the asker's chunks (payload "terms", no modifier)
DENSE = "dense"
SPARSE = "bm25"
TERMS = "terms"
KEYWORD_FIELDS = ("groups", "root", "source", "doc_hash")
INTEGER_FIELDS = ("chunk", TERMS)


@dataclass(frozen=True)
class ChunkPoint:
    id: str
    dense: list[float]
    sparse_indices: list[int]
    sparse_values: list[float]
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # the fused (RRF) score: an order, not a measure of relevance
    payload: dict[str, Any]
    similarity: float = 0.0  # cosine of the question and the chunk (dense leg)
    coverage: float = 0.0  # share of the question's keyword terms found in the chunk

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


def make_hit(
    point_id: str,
    score: float,
    payload: dict[str, Any],
    query_dense: list[float],
    query_terms: list[int],
    dense: list[float] | None,
    terms: list[int] | None,
) -> Hit:
    """A fused hit with the two relevance signals that decide whether to answer at all
    (the RRF score cannot: it only orders)."""
    similarity = sum(a * b for a, b in zip(query_dense, dense or [], strict=False))
    wanted = set(query_terms)
    coverage = len(wanted & set(terms or [])) / len(wanted) if wanted else 0.0
    return Hit(point_id, score, payload, round(similarity, 4), round(coverage, 4))


@dataclass
class DocInfo:
    """What the index holds of one document: its versions and who may read it."""

    hashes: set[str] = field(default_factory=set)
    groups: list[str] = field(default_factory=list)


# Write operations, applied in order by Index.write().
@dataclass(frozen=True)
class Upsert:
    points: list[ChunkPoint]


@dataclass(frozen=True)
class DeleteDocument:
    """Remove a document's points; with keep_hash, only its other versions."""

    root: str
    source: str
    keep_hash: str | None = None


@dataclass(frozen=True)
class SetGroups:
    root: str
    source: str
    groups: list[str]


Operation = Upsert | DeleteDocument | SetGroups


def with_terms(point: ChunkPoint) -> dict[str, Any]:
    """The payload a point is stored with: its keyword terms added, for `visible_idf`."""
    return {**point.payload, TERMS: list(point.sparse_indices)}


def visible_idf(
    sparse: tuple[list[int], list[float]], count: Callable[[int | None], int]
) -> tuple[list[int], list[float]]:
    """The query's keyword weights times each term's BM25 IDF (the formula Qdrant's
    `modifier=Idf` uses) over the chunks the asker may read: `count(None)` counts those
    chunks, `count(term)` those of them holding the term (each backend counts with the
    asker's group filter)."""
    indices, values = list(sparse[0]), list(sparse[1])
    if not indices:
        return indices, values
    total = count(None)
    weights = [math.log(1 + (total - df + 0.5) / (df + 0.5)) for df in map(count, indices)]
    return indices, [v * w for v, w in zip(values, weights, strict=True)]


def stamp_problem(recorded: dict[str, Any] | None, stamp: ModelStamp) -> str | None:
    """Why vectors from `stamp` must not go into an index stamped `recorded`, or None."""
    schema = (recorded or {}).get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        return (
            f"the index was built by another version of Taimatsu (index schema {schema}, "
            f"this version uses {SCHEMA_VERSION}); run `taimatsu reindex` to rebuild it"
        )
    model = (recorded or {}).get("model", {})
    if model.get("checksum") == stamp.checksum and model.get("dim") == stamp.dim:
        return None
    return (
        f"the index was built with the embedding model {model.get('name')!r} "
        f"(dimension {model.get('dim')}), not {stamp.name!r} (dimension {stamp.dim}); "
        "run `taimatsu reindex` to rebuild it with the configured model"
    )


def stamp_record(stamp: ModelStamp, created: float) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "model": stamp.as_dict(), "created": created}


class Index(ABC):
    """What ingestion and retrieval need from a backend."""

    description: str

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def read_stamp(self) -> dict[str, Any] | None: ...

    @abstractmethod
    def ensure(self, stamp: ModelStamp) -> None:
        """Create the index for this model, or raise ModelMismatch if it holds another's."""

    @abstractmethod
    def write(self, operations: list[Operation]) -> None:
        """Apply the operations in order, in one short critical section, durably."""

    @abstractmethod
    def manifest(self, root: str) -> dict[str, DocInfo]:
        """{source: DocInfo} of the documents indexed under `root`."""

    @abstractmethod
    def document_groups(self, root: str, source: str) -> list[str] | None:
        """Who may read a document now (None: not in the index)."""

    @abstractmethod
    def roots(self) -> list[str]:
        """The source folders this index was built from."""

    @abstractmethod
    def points_of(self, root: str, source: str, doc_hash: str) -> list[ChunkPoint]:
        """A document version's points with their vectors (to reuse them for a move)."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """{"documents", "chunks"} over the whole index (for operators, not users)."""

    @abstractmethod
    def staging(self) -> Index:
        """A fresh, empty index of the same backend beside this one (leftovers of an
        interrupted rebuild removed), for `taimatsu reindex` to fill."""

    @abstractmethod
    def promote(self, staging: Index) -> None:
        """Make the filled staging index the one that answers, replacing this one."""

    @abstractmethod
    def hybrid(
        self,
        dense: list[float],
        sparse: tuple[list[int], list[float]],
        groups: list[str],
        limit: int,
        candidates: int = 40,
        legs: Legs = "both",
    ) -> list[Hit]:
        """Dense and keyword legs fused by reciprocal rank inside the engine, both legs
        filtered by the asker's groups (a filter in the query, never applied afterwards);
        `legs` = "dense" or "keyword" runs that leg alone, with the same filter."""
