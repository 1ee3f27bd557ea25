"""The index, as the rest of the product sees it: one schema, one contract, two backends.

- `EdgeIndex` (assistant/index/edge.py): the Qdrant engine in-process (qdrant-edge-py),
  under `<data_dir>/index`. The default: nothing to run.
- `ServerIndex` (assistant/index/server.py): a Qdrant server or cluster through
  qdrant-client, when `TAIMATSU_QDRANT_URL` is set.

Each chunk is one point: a dense vector "dense", a sparse keyword vector "bm25" (BM25
term-frequency weights, no IDF), and a payload whose keys are `Field`'s: root, source
(path relative to root), doc_hash, chunk (number), chunks (count), page, section, text,
kind, groups, indexed_at, and terms (the keyword vector's term ids, indexed). Writes are
backend-neutral operations applied in order in one short critical section; a query is one
`SearchRequest`.

What the backends share lives here, once: the filters (as neutral `Where`s each backend
translates into its engine's type), the reads built on three engine primitives (a page of
a scroll, a count, a facet), the keyword weights and the hits. A backend adds only what
differs: the translation, its lifecycle and writes, and its query.

The keyword leg's IDF is computed per question over the chunks the asker may read
(`visible_idf`, from counts filtered by the asker's groups), never over the whole index:
an engine-side IDF (`modifier=Idf`) counts hidden chunks too, so an outsider's scores and
order of passages would change with documents they cannot read. The embedded backend
takes the same counts from a table of document frequencies per ACL label when it is up
to date (assistant/index/label_counts.py), and counts in the engine otherwise.

This module imports nothing of Taimatsu's but the error tree and the model stamp.
"""

from __future__ import annotations

import errno
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import numpy as np

from assistant.embedder import ModelStamp
from assistant.errors import DiskFull

Legs = Literal["both", "dense", "keyword"]  # which retrieval legs a query runs

SCHEMA_VERSION = 3  # 3: Japanese keyword terms are content words (assistant.japanese)
# 2: keyword IDF over the asker's chunks (payload "terms", no modifier)
DENSE = "dense"  # the names of the two vectors
SPARSE = "bm25"
RRF_K = 60  # reciprocal rank fusion's k, on both backends (the server's default is 2)
CANDIDATES = 40  # passages each leg hands to the fusion, at least
PAGE = 1024  # points per page of a scroll
FACET_LIMIT = 100_000  # values of a facet, at most


class Field:
    """The payload's keys, spelled once. They are the on-disk names: renaming one here
    changes the schema (SCHEMA_VERSION)."""

    ROOT: Final = "root"  # the source folder, resolved
    SOURCE: Final = "source"  # the document's path relative to root
    DOC_HASH: Final = "doc_hash"  # sha256 of the document's bytes: its version
    CHUNK: Final = "chunk"  # the chunk's number in the document, from 0
    CHUNKS: Final = "chunks"  # the document's number of chunks
    PAGE: Final = "page"
    SECTION: Final = "section"
    TEXT: Final = "text"
    KIND: Final = "kind"  # the file type, its suffix without the dot
    GROUPS: Final = "groups"  # who may read the document
    INDEXED_AT: Final = "indexed_at"  # when this version was written (epoch seconds)
    URL: Final = "url"  # the page or item a mirrored document copies (remote sources)
    # [size, mtime_ns, ctime_ns] of the file this version was read from: a re-run that
    # finds the same three skips reading and hashing it (absent in older indexes)
    FILE_STAT: Final = "file_stat"
    TERMS: Final = "terms"  # the keyword vector's term ids (for visible_idf's counts)


KEYWORD_FIELDS = (Field.GROUPS, Field.ROOT, Field.SOURCE, Field.DOC_HASH)
INTEGER_FIELDS = (Field.CHUNK, Field.TERMS)
# fields whose index is kept in memory: every query filters by groups, and the manifest
# reads documents by their first chunk; the others are read from disk (decisions §17)
IN_MEMORY_FIELDS = (Field.GROUPS, Field.CHUNK)


class SparseTerms(NamedTuple):
    """A keyword vector: term ids and their weights, in the same order."""

    indices: list[int]
    values: list[float]

    @classmethod
    def of(cls, vector: Any) -> SparseTerms:
        """From any sparse vector with `indices` and `values` (either engine's, or the
        keyword model's)."""
        return cls(list(vector.indices), list(vector.values))


NO_TERMS = SparseTerms([], [])


@dataclass(frozen=True)
class ChunkPoint:
    id: str
    dense: list[float]
    sparse: SparseTerms
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchRequest:
    """One query: the question's two vectors, the asker's groups (a filter inside the
    engine, on every leg), how many hits, and which legs. `candidates`: how deep each leg
    looks before the fusion (at least `limit`). `weights`: RRF weights (dense, keyword)
    for the fused query, equal when None (the evaluation's `rrf:D:K` ablation)."""

    dense: list[float]
    terms: SparseTerms
    groups: list[str]
    limit: int
    candidates: int = CANDIDATES
    legs: Legs = "both"
    weights: tuple[float, float] | None = None

    @property
    def depth(self) -> int:
        return max(self.candidates, self.limit)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # the fused (RRF) score: an order, not a measure of relevance
    payload: dict[str, Any]
    similarity: float = 0.0  # cosine of the question and the chunk (dense leg)
    coverage: float = 0.0  # share of the question's keyword terms found in the chunk

    @property
    def text(self) -> str:
        return str(self.payload.get(Field.TEXT, ""))


def make_hit(
    point_id: str,
    score: float,
    payload: dict[str, Any],
    similarity: float,
    query_terms: list[int],
    terms: list[int] | None,
) -> Hit:
    """A fused hit with the two relevance signals that decide whether to answer at all
    (the RRF score cannot: it only orders)."""
    wanted = set(query_terms)
    coverage = len(wanted & set(terms or [])) / len(wanted) if wanted else 0.0
    return Hit(point_id, score, payload, round(similarity, 4), round(coverage, 4))


def similarities(query: list[float], vectors: list[list[float] | None]) -> list[float]:
    """The question's cosine with each hit's (normalised) vector, 0 where a hit has none:
    one matrix product (a Python sum over 30 hits of 384 dimensions cost 4 ms a query)."""
    rows = [i for i, v in enumerate(vectors) if v is not None and len(v) == len(query)]
    found = [0.0] * len(vectors)
    if rows:
        matrix = np.asarray([vectors[i] for i in rows], dtype=np.float32)
        for i, value in zip(rows, matrix @ np.asarray(query, dtype=np.float32), strict=True):
            found[i] = float(value)
    return found


@dataclass
class DocInfo:
    """What the index holds of one document: its versions, who may read it, how many
    chunks its latest-read version has, and the file stat each version was read with
    (Field.FILE_STAT), where recorded."""

    hashes: set[str] = field(default_factory=set)
    groups: list[str] = field(default_factory=list)
    chunks: int = 0
    stats: dict[tuple[int, ...], str] = field(default_factory=dict)  # stat -> hash


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


# -- filters, in neutral terms (each backend translates them) --------------------------


@dataclass(frozen=True)
class Match:
    """A payload field equal to `value`."""

    key: str
    value: str | int


@dataclass(frozen=True)
class MatchAny:
    """A payload field (or one of a list field's items) equal to one of `values`."""

    key: str
    values: tuple[str, ...]


Condition = Match | MatchAny


@dataclass(frozen=True)
class Where:
    """Points meeting every `must` condition and no `must_not` one."""

    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    def where(self, *conditions: Condition) -> Where:
        """This filter with more `must` conditions, after its own."""
        return Where((*self.must, *conditions), self.must_not)


FIRST_CHUNK = Match(Field.CHUNK, 0)  # one point per document version


def groups_filter(groups: Iterable[str]) -> Where:
    """The asker's groups: a chunk is visible if it shares one."""
    return Where((MatchAny(Field.GROUPS, tuple(sorted(set(groups)))),))


def document_filter(root: str, source: str, keep_hash: str | None = None) -> Where:
    """A document's points; with keep_hash, those of its other versions."""
    must_not = (Match(Field.DOC_HASH, keep_hash),) if keep_hash else ()
    return Where((Match(Field.ROOT, root), Match(Field.SOURCE, source)), must_not)


# -- points as the engines return them --------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A point read back, in neutral terms: `score` for a query's hits, the vectors when
    asked for."""

    id: str
    payload: dict[str, Any]
    score: float = 0.0
    dense: list[float] | None = None
    terms: SparseTerms | None = None


def record_of(point: Any) -> Record:
    """Either engine's point (both have `id`, `payload`, `vector` as {name: vector},
    the sparse one with `indices` and `values`, and a `score` when it is a hit)."""
    vectors = point.vector or {}
    keyword = vectors.get(SPARSE)
    return Record(
        str(point.id),
        dict(point.payload or {}),
        float(getattr(point, "score", 0.0) or 0.0),
        vectors.get(DENSE),
        SparseTerms(keyword.indices, keyword.values) if keyword is not None else None,
    )


def with_terms(point: ChunkPoint) -> dict[str, Any]:
    """The payload a point is stored with: its keyword terms added, for `visible_idf`."""
    return {**point.payload, Field.TERMS: list(point.sparse.indices)}


def visible_idf(terms: SparseTerms, count: Callable[[int | None], int]) -> SparseTerms:
    """The query's keyword weights times each term's BM25 IDF (the formula Qdrant's
    `modifier=Idf` uses) over the chunks the asker may read: `count(None)` counts those
    chunks, `count(term)` those of them holding the term (each backend counts with the
    asker's group filter)."""
    indices, values = list(terms.indices), list(terms.values)
    if not indices:
        return SparseTerms(indices, values)
    total = count(None)
    weights = [math.log(1 + (total - df + 0.5) / (df + 0.5)) for df in map(count, indices)]
    return SparseTerms(indices, [v * w for v, w in zip(values, weights, strict=True)])


TermCounts = Callable[[list[str], list[int]], "tuple[int, dict[int, int]] | None"]


def keyword_weights(
    request: SearchRequest, count: Callable[[Where], int], table: TermCounts | None = None
) -> SparseTerms:
    """The keyword vector a request queries with: its terms weighted by `visible_idf`,
    counted by `count` with the asker's group filter (unweighted when the keyword leg
    does not run). `table(groups, terms)`: the same counts from a table kept per ACL
    label (assistant/index/label_counts.py), or None when it is not up to date; then
    `count` counts in the engine."""
    if request.legs == "dense":
        return request.terms
    if table is not None and request.terms.indices:
        found = table(request.groups, request.terms.indices)
        if found is not None:
            total, df = found
            return visible_idf(request.terms, lambda t: total if t is None else df.get(t, 0))
    visible = groups_filter(request.groups)

    def holding(term: int | None) -> int:
        return count(visible if term is None else visible.where(Match(Field.TERMS, term)))

    return visible_idf(request.terms, holding)


def hits_of(request: SearchRequest, records: Iterable[Record]) -> list[Hit]:
    """A query's records as hits, in the engine's order, with their relevance signals."""
    records = list(records)
    cosines = similarities(request.dense, [r.dense for r in records])
    return [
        make_hit(
            r.id,
            r.score,
            r.payload,
            cosine,
            request.terms.indices,
            r.terms.indices if r.terms is not None else None,
        )
        for r, cosine in zip(records, cosines, strict=True)
    ]


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


def stamp_problem(recorded: dict[str, Any] | None, stamp: ModelStamp) -> str | None:
    """Why vectors from `stamp` must not go into an index stamped `recorded`, or None."""
    schema = (recorded or {}).get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        return (
            f"the index was built by another version of Taimatsu (index schema {schema}, "
            f"this version uses {SCHEMA_VERSION}); run `taimatsu reindex` to rebuild it"
        )
    model = (recorded or {}).get("model", {})
    same = model.get("checksum") == stamp.checksum and model.get("dim") == stamp.dim
    runtime = model.get("runtime", "torch")
    if same and ModelStamp.vectors_of(runtime) != stamp.vectors:
        return (
            f"the index was built with the embedding runtime {runtime} "
            f"({ModelStamp.vectors_of(runtime)} vectors), not {stamp.runtime} ({stamp.vectors} "
            f"vectors); run `taimatsu reindex` to rebuild it, or set "
            f"TAIMATSU_EMBED_RUNTIME={runtime}"
        )
    if same and _probes_agree(model.get("probe"), stamp.probe):
        return None
    if same:
        return (
            f"the embedding server's model {stamp.name!r} ({stamp.backend}) now gives other "
            "vectors than the ones in the index (the model behind that name changed); run "
            "`taimatsu reindex` to rebuild it with the served model"
        )
    return (
        f"the index was built with the embedding model {_model_name(model)} "
        f"(dimension {model.get('dim')}), not {_model_name(stamp.as_dict())} "
        f"(dimension {stamp.dim}); run `taimatsu reindex` to rebuild it with the "
        "configured model"
    )


def _model_name(model: dict[str, Any]) -> str:
    backend = model.get("backend")
    return f"{model.get('name')!r}" + (f" served by {backend}" if backend else "")


PROBE_AGREEMENT = 0.99  # cosine of two probe vectors of one served model (4-bit noise aside)


def _probes_agree(recorded: list[float] | None, current: tuple[float, ...] | None) -> bool:
    """A served model's vectors of the probe text, recorded and now, agree; true when
    neither stamp has one (a local model, whose checksum covers its weights)."""
    if recorded is None and current is None:
        return True
    if recorded is None or current is None or len(recorded) != len(current):
        return False
    dot = sum(a * b for a, b in zip(recorded, current, strict=True))
    norm = math.sqrt(sum(a * a for a in recorded) * sum(b * b for b in current))
    return norm > 0 and dot / norm >= PROBE_AGREEMENT


def stamp_record(stamp: ModelStamp, created: float) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "model": stamp.as_dict(), "created": created}


class Index(ABC):
    """What ingestion, retrieval and the administration page need from a backend.

    A backend implements the lifecycle, the writes, the query and three read primitives
    (`_page`, `_count`, `_facet`); the other reads are built on those here, once."""

    description: str

    # -- lifecycle -------------------------------------------------------------------

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def read_stamp(self) -> dict[str, Any] | None: ...

    @abstractmethod
    def ensure(self, stamp: ModelStamp) -> None:
        """Create the index for this model, or raise ModelMismatch if it holds another's."""

    @abstractmethod
    def staging(self) -> Index:
        """A fresh, empty index of the same backend beside this one (leftovers of an
        interrupted rebuild removed), for `taimatsu reindex` to fill."""

    @abstractmethod
    def promote(self, staging: Index) -> None:
        """Make the filled staging index the one that answers, replacing this one."""

    @abstractmethod
    def optimize(self) -> None:
        """Build the engine's vector and payload indexes now, as a long-lived index has
        them (a server does this itself)."""

    @abstractmethod
    def build_search_indexes(self) -> bool:
        """Build the vector index for the points written since the last build, once enough
        of them are searched point by point to make it worth minutes of work, without
        holding readers up meanwhile (the end of an ingestion run calls this; a server
        does it itself). True when an index was built."""

    @abstractmethod
    def refresh_keyword_counts(self) -> None:
        """Recount the keyword leg's document frequencies per ACL label if a write changed
        the index since the last count (the end of an ingestion run calls this); a
        backend without such a table counts per query."""

    @abstractmethod
    def engine_version(self) -> str | None:
        """The Qdrant engine's name and version; None when it cannot be told (a health
        line for operators, never an error)."""

    # -- writes and the query ------------------------------------------------------------

    @abstractmethod
    def write(self, operations: list[Operation]) -> None:
        """Apply the operations in order, in one short critical section, durably."""

    @abstractmethod
    def search(self, request: SearchRequest) -> list[Hit]:
        """Dense and keyword legs fused by reciprocal rank inside the engine, both legs
        filtered by the asker's groups (a filter in the query, never applied afterwards);
        `legs` = "dense" or "keyword" runs that leg alone, with the same filter. The
        keyword leg's weights are `keyword_weights`, counted in the same session."""

    # -- the engine primitives the reads below are built on ------------------------------

    @abstractmethod
    def _page(
        self, where: Where, fields: list[str] | bool, vectors: bool, offset: Any, size: int
    ) -> tuple[list[Record], Any]:
        """Up to `size` points matching `where` from `offset` on (None: the first), with
        the payload `fields` (True: all) and the vectors if asked; and the next offset
        (None after the last page)."""

    @abstractmethod
    def _count(self, where: Where | None) -> int:
        """The exact number of points matching `where` (None: all)."""

    @abstractmethod
    def _facet(self, key: str, where: Where | None) -> dict[str, int]:
        """{value: points} of a keyword-indexed field over the points matching `where`."""

    def _records(
        self, where: Where, fields: list[str] | bool, vectors: bool = False, limit: int = 0
    ) -> Iterator[Record]:
        """The points matching `where`, page by page (at most `limit` of them if given)."""
        offset, seen = None, 0
        while True:
            size = min(PAGE, limit - seen) if limit else PAGE
            records, offset = self._page(where, fields, vectors, offset, size)
            yield from records
            seen += len(records)
            if offset is None or (limit and seen >= limit):
                return

    # -- reads, the same on every backend ------------------------------------------------

    def manifest(self, root: str) -> dict[str, DocInfo]:
        """{source: DocInfo} of the documents indexed under `root`."""
        if not self.exists():
            return {}
        found: dict[str, DocInfo] = {}
        where = Where((Match(Field.ROOT, root), FIRST_CHUNK))
        fields = [Field.SOURCE, Field.DOC_HASH, Field.GROUPS, Field.CHUNKS, Field.FILE_STAT]
        for record in self._records(where, fields):
            payload = record.payload
            info = found.setdefault(payload[Field.SOURCE], DocInfo())
            info.hashes.add(payload[Field.DOC_HASH])
            info.groups = list(payload.get(Field.GROUPS) or [])
            info.chunks = int(payload.get(Field.CHUNKS) or 0)
            if payload.get(Field.FILE_STAT):
                info.stats[tuple(payload[Field.FILE_STAT])] = payload[Field.DOC_HASH]
        return found

    def document_groups(self, root: str, source: str) -> list[str] | None:
        """Who may read a document now (None: not in the index)."""
        if not self.exists():
            return None
        where = document_filter(root, source).where(FIRST_CHUNK)
        for record in self._records(where, [Field.GROUPS], limit=1):
            return list(record.payload.get(Field.GROUPS) or [])
        return None

    def roots(self) -> list[str]:
        """The source folders this index was built from."""
        return sorted(self.facet(Field.ROOT))

    def points_of(self, root: str, source: str, doc_hash: str) -> list[ChunkPoint]:
        """A document version's points with their vectors (to reuse them for a move)."""
        where = document_filter(root, source).where(Match(Field.DOC_HASH, doc_hash))
        points = [
            ChunkPoint(r.id, list(r.dense or []), r.terms or NO_TERMS, r.payload)
            for r in self._records(where, True, vectors=True)
        ]
        return sorted(points, key=lambda p: p.payload.get(Field.CHUNK, 0))

    def counts(self) -> dict[str, int]:
        """{"documents", "chunks"} over the whole index (for operators, not users)."""
        return {"documents": self._count(Where((FIRST_CHUNK,))), "chunks": self._count(None)}

    def facet(self, key: str, first_chunks: bool = False) -> dict[str, int]:
        """{value: points} of a keyword-indexed payload field (KEYWORD_FIELDS) over the
        whole index; with first_chunks, each document version counts once. Operators only:
        nothing here is filtered by groups."""
        if not self.exists():
            return {}
        return self._facet(key, Where((FIRST_CHUNK,)) if first_chunks else None)

    def first_chunks(self, fields: list[str]) -> Iterator[dict[str, Any]]:
        """The payload `fields` of each document version's first chunk (one point per
        document: `chunks` in it says how many it has)."""
        for record in self._records(Where((FIRST_CHUNK,)), fields):
            yield record.payload
