"""Retrieval for the evaluation: the product's own query path in each retrieval setting,
or one built here for ablations.

`by-language`, `hybrid`, `dense` and `keyword` are the values of `TAIMATSU_RETRIEVAL`,
run through the product's `Searcher.search` (with the reranker when one is configured).
Two more are built here, never used by the product:

- `bylang`: routing by language alone (`keyword` for a Japanese question, `dense` for any
  other), without by-language's exception for questions naming an exact term;
- `rrf:D:K`: both legs fused by RRF weighted D (dense) to K (keyword), e.g. `rrf:3:1`,
  with the same group filter inside the query: the product's request with `weights`,
  through the index contract, so on either backend.
"""

from __future__ import annotations

from typing import get_args

from assistant import sparse
from assistant.index import SearchRequest, SparseTerms
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


def weights_of(mode: str) -> tuple[float, float]:
    """The RRF weights (dense, keyword) of an `rrf:D:K` mode."""
    _, dense, keyword = mode.split(":")
    return float(dense), float(keyword)


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
        if not question.strip() or not self.searcher.index.exists():
            return []
        self.searcher.check_model()
        request = SearchRequest(
            self.searcher.embedder.embed_query(question),
            SparseTerms.of(sparse.embed_query(question)),
            self.groups,
            limit=k,
            weights=weights_of(mode),
        )
        hits = self.searcher.index.search(request)
        return [Passage.from_hit(r, h) for r, h in enumerate(current_versions(hits), start=1)]
