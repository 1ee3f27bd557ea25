"""TAIMATSU_RERANKER_URL: a served /rerank endpoint reorders the fused passages, in either
reply shape, and one that is down leaves the fused order (tests/embedding/servers.py's
RerankServer stands in for TEI, vLLM, llama.cpp and Infinity; its scores are the real
packaged MiniLM's cosines, so the ranking is a real one)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from assistant.retrieval import Searcher, ServedReranker
from tests.conftest import closed_port_url
from tests.embedding.servers import RerankServer

QUESTION = "How many unused leave days can I carry over to next year?"


def searcher_with(sample_settings, embedder, url: str | None) -> Searcher:
    # as many candidates as the plain search fetches for k=5, so both read the same hits
    update = {"reranker_url": url, "rerank_candidates": 30}
    return Searcher(sample_settings.model_copy(update=update), embedder)


@pytest.mark.parametrize("shape", ["results", "tei"])
def test_a_served_reranker_orders_the_passages(shape, sample_settings, embedder):
    with RerankServer(embedder.embed, shape=shape) as server:
        searcher = searcher_with(sample_settings, embedder, server.url)
        passages = searcher.search(QUESTION, ["everyone"], 5)
        again = searcher.search("VPN certificate expired", ["everyone"], 5)
    assert passages and again
    question = embedder.embed_query(QUESTION)
    cosines = [float(np.dot(embedder.embed([p.text])[0], question)) for p in passages]
    assert [p.score for p in passages] == pytest.approx(cosines, abs=1e-5)  # the server's
    assert cosines == sorted(cosines, reverse=True)
    assert passages[0].source == "en/leave-policy.md"
    fields = [("documents" in r, "texts" in r) for r in server.requests]
    if shape == "tei":  # `documents` refused with 422 once, then `texts` remembered
        assert fields == [(True, False), (False, True), (False, True)]
    else:
        assert fields == [(True, False), (True, False)]
        assert server.requests[0]["top_n"] == len(server.requests[0]["documents"])


def test_a_reranker_that_is_down_leaves_the_fused_order(sample_settings, embedder, caplog):
    down = searcher_with(sample_settings, embedder, closed_port_url())
    plain = Searcher(sample_settings, embedder)
    for question in (QUESTION, "在宅勤務は週何日までですか", "VPN-0x2F"):
        with caplog.at_level(logging.WARNING, logger="assistant.retrieval.rerank"):
            caplog.clear()
            got = down.search(question, ["everyone"], 5)
        assert got == plain.search(question, ["everyone"], 5)
        (line,) = [r.getMessage() for r in caplog.records]
        assert line.startswith(f"reranker at {down.reranker.url} failed (ConnectError")
        assert line.endswith("keeping the fused order")


def test_a_reply_of_another_shape_is_a_failure_not_an_error(embedder):
    with RerankServer(embedder.embed) as server:
        reranker = ServedReranker(server.url + "/wrong")
        assert reranker.url.endswith("/wrong/rerank")
        assert reranker.scores("q", ["a", "b"]) is None  # 404: logged, None
        assert ServedReranker(server.url).scores("q", ["a", "b"]) is not None
