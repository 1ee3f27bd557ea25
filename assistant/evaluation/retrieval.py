"""Retrieval for the evaluation: the product's own query path in each retrieval setting,
or one built here for ablations.

`by-language`, `hybrid`, `dense` and `keyword` are the values of `TAIMATSU_RETRIEVAL`,
run through the product's `Searcher.search` (with the reranker when one is configured).
Two more are built here, never used by the product:

- `bylang`: routing by language alone (`keyword` for a Japanese question, `dense` for any
  other), without by-language's exception for questions naming an exact term;
- `rrf:D:K`: both legs fused by RRF weighted D (dense) to K (keyword), e.g. `rrf:3:1`,
  on the embedded engine with the same group filter inside the query.
"""

from __future__ import annotations

from typing import Any, get_args

from assistant import sparse
from assistant.index import DENSE, SPARSE, make_hit
from assistant.retrieval import Passage, Retrieval, Searcher, current_versions, language_of
from assistant.settings import EVERYONE

MODES: tuple[str, ...] = get_args(Retrieval)  # the product's settings
DEPTH = 10  # passages read per question: the metrics stop at 10


def check_mode(mode: str) -> None:
    if mode in (*MODES, "bylang"):
        return
    try:
        kind, dense, keyword = mode.split(":")
        if kind == "rrf" and float(dense) >= 0 and float(keyword) >= 0:
            return
    except ValueError:
        pass
    raise ValueError(f"unknown retrieval mode {mode!r}; use {', '.join(MODES)}, rrf:D:K or bylang")


def leg_request(mode: str, dense: list[float], keyword: Any, groups: list[str], limit: int):
    """Both legs of the product's hybrid query (see hybrid_request) fused by weighted RRF
    (`rrf:D:K`), with the asker's group filter in both."""
    from qdrant_edge import Fusion, Prefetch, Query, QueryRequest

    from assistant.index.edge import groups_filter

    flt = groups_filter(groups)
    _, dense_weight, keyword_weight = mode.split(":")
    depth = max(40, limit)
    return QueryRequest(
        limit=limit,
        prefetches=[
            Prefetch(limit=depth, query=Query.Nearest(dense, using=DENSE), filter=flt),
            Prefetch(limit=depth, query=Query.Nearest(keyword, using=SPARSE), filter=flt),
        ],
        query=Fusion.Rrf(k=60, weights=[float(dense_weight), float(keyword_weight)]),
        filter=flt,
        with_payload=True,
        with_vector=True,
    )


class Retriever:
    """A question to passages, in one of the modes above, on a Searcher's index."""

    def __init__(self, searcher: Searcher, groups: list[str] | None = None) -> None:
        self.searcher = searcher
        self.groups = [*(groups or searcher.settings.default_groups), EVERYONE]

    def search(self, question: str, mode: str = "by-language", k: int = DEPTH) -> list[Passage]:
        check_mode(mode)
        if mode == "bylang":
            mode = "keyword" if language_of(question) == "ja" else "dense"
        if mode in MODES:
            return self.searcher.search(question, self.groups, k, retrieval=mode)  # type: ignore[arg-type]
        from qdrant_edge import SparseVector

        from assistant.index.edge import EdgeIndex, weigh_terms

        index = self.searcher.index
        if not isinstance(index, EdgeIndex):
            raise ValueError("rrf:D:K needs the embedded index (no TAIMATSU_QDRANT_URL)")
        if not question.strip() or not index.exists():
            return []
        self.searcher.check_model()
        dense = self.searcher.embedder.embed_query(question)
        keyword = sparse.embed_query(question)
        with index.shard() as shard:
            terms = (list(keyword.indices), list(keyword.values))
            weighted = SparseVector(*weigh_terms(shard, terms, self.groups))
            points = shard.query(leg_request(mode, dense, weighted, self.groups, k))
        hits = []
        for point in points:
            vectors = point.vector or {}
            terms = vectors.get(SPARSE)
            hits.append(
                make_hit(
                    str(point.id),
                    float(point.score),
                    dict(point.payload or {}),
                    dense,
                    list(keyword.indices),
                    vectors.get(DENSE),
                    list(terms.indices) if terms else None,
                )
            )
        return [Passage.from_hit(r, h) for r, h in enumerate(current_versions(hits), start=1)]
