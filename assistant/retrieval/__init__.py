"""Retrieval: a question and the asker's groups in, the passages they may read out.

`routing` picks the legs for a question (by its language, or the setting), `search`
runs them through the index contract and keeps the current version of each document,
`rerank` optionally reorders the fused hits with a local cross-encoder or a served
`/rerank` endpoint."""

from __future__ import annotations

from assistant.retrieval.rerank import Reranker, ServedReranker
from assistant.retrieval.routing import Retrieval, language_of, legs_for, names_exact_term
from assistant.retrieval.search import Passage, Searcher, current_versions, readable_file

__all__ = [
    "Passage",
    "Reranker",
    "Retrieval",
    "Searcher",
    "ServedReranker",
    "current_versions",
    "language_of",
    "legs_for",
    "names_exact_term",
    "readable_file",
]
