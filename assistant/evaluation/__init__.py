"""Evaluation: gold questions in, retrieval and answer scores out (`taimatsu eval`,
`bench/eval.py`, the CI quality gate). Only `ui` and `bench` import this package.

`scoring` loads gold files and computes the metrics, `retrieval` runs the product's own
query path in each retrieval setting, `report` prints tables and writes the HTML
report."""

from __future__ import annotations

from assistant.evaluation.report import bar_chart, html_report, table
from assistant.evaluation.retrieval import DEPTH, MODES, Retriever, check_mode, weights_of
from assistant.evaluation.scoring import (
    JUDGE_SYSTEM,
    ConversationTurn,
    GoldItem,
    QuestionResult,
    SettingScores,
    answer_sentences,
    citation_precision,
    first_relevant,
    hit_at,
    holds_passage,
    load_conversations,
    load_gold,
    ndcg_at,
    reciprocal_rank,
    run_eval,
    score_conversations,
    score_retrieval,
    summarize,
)

__all__ = [
    "DEPTH",
    "JUDGE_SYSTEM",
    "MODES",
    "ConversationTurn",
    "GoldItem",
    "QuestionResult",
    "Retriever",
    "SettingScores",
    "answer_sentences",
    "bar_chart",
    "check_mode",
    "citation_precision",
    "first_relevant",
    "hit_at",
    "holds_passage",
    "html_report",
    "load_conversations",
    "load_gold",
    "ndcg_at",
    "reciprocal_rank",
    "run_eval",
    "score_conversations",
    "score_retrieval",
    "summarize",
    "table",
    "weights_of",
]
