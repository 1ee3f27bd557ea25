"""Answers and rewrites whatever the model writes: the test servers reply as real models
do (tests/ollama_server.py REPLY_STYLES: 【1】, ［１］, (1), [^1], [1, 2], [1][2], no
markers, a preamble, a <think> block, a reply cut at the length limit, a refusal), and
the answer, its streamed text and the follow-up rewrite are checked against each, over
the real clients and HTTP (no model runs)."""

from __future__ import annotations

import pytest

from assistant.answering import AnswerDone, Answerer, Mode, TextDelta, Turn, check_citations
from assistant.answering.conversation import clean_question
from assistant.retrieval import Searcher
from tests.ollama_server import REPLY_STYLES, FakeOllama, styled_reply
from tests.openai_server import FakeOpenAI

SERVERS = {"ollama": FakeOllama, "openai": FakeOpenAI}
ANSWER_STYLES = [s for s in REPLY_STYLES if s != "refusal"]  # refusal: rewrites only
QUESTIONS = {
    "lenticular": "在宅勤務は週何日までですか",
    "fullwidth": "在宅勤務は週何日までですか",
}
FIRST = "How many days of annual leave do full-time staff get?"
FOLLOW_UP = "And for part-timers?"
STANDALONE = "How many days of paid annual leave do part-time employees get?"


def answerer(settings, embedder, url: str, backend: str) -> Answerer:
    settings = settings.model_copy(
        update={"llm_backend": backend, "llm_url": url, "llm_request_timeout": 20}
    )
    return Answerer(settings, Searcher(settings, embedder))


@pytest.mark.parametrize("backend", ["ollama", "openai"])
@pytest.mark.parametrize("style", ANSWER_STYLES)
def test_an_answer_in_any_style_shows_its_sources(sample_settings, embedder, style, backend):
    question = QUESTIONS.get(style, "What does error VPN-0x2F mean?")
    with SERVERS[backend](reply=styled_reply(style)) as server:
        events = list(
            answerer(sample_settings, embedder, server.url, backend).stream(question, ["everyone"])
        )
    done = events[-1]
    assert isinstance(done, AnswerDone)
    answer, body = done.answer, done.answer.as_json()
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert answer.mode == Mode.GENERATED and len(answer.passages) >= 2
    for foreign in ("【", "［", "(1)", "[^", "<think", "Sure!", "unrelated"):
        assert foreign not in answer.answer, foreign
    assert "<think" not in streamed and "unrelated" not in streamed  # reasoning never shown
    if style == "none":
        assert body["citations_marked"] is False and answer.dropped_citations == 0
        assert [c["n"] for c in body["citations"]] == list(range(1, len(answer.passages) + 1))
        assert "[" not in answer.answer
    else:
        expected = [1] if style == "cut" else [1, 2]
        assert body["citations_marked"] is True and answer.cited == expected
        assert [c["n"] for c in body["citations"]] == expected
        assert all(f"[{n}]" in answer.answer for n in expected)
        assert not answer.answer.endswith("[")  # a marker cut off at the limit is removed


@pytest.mark.parametrize("style", list(REPLY_STYLES))
def test_a_rewrite_in_any_style_is_cleaned_or_replaced(sample_settings, embedder, style):
    history = [Turn(FIRST, "20 days. [1]")]
    with FakeOllama(reply=styled_reply(style, STANDALONE)) as server:
        answer = answerer(sample_settings, embedder, server.url, "ollama").ask(
            FOLLOW_UP, ["everyone"], history
        )
    searched = server.requests[-1]["json"]["messages"][1]["content"].rsplit("Question: ", 1)[1]
    if style in ("cut", "refusal"):  # nothing usable: the no-model fallback is searched
        assert answer.standalone_question == f"{FIRST} {FOLLOW_UP}" == searched
    else:
        assert answer.standalone_question == STANDALONE == searched
    assert answer.mode == Mode.GENERATED


@pytest.mark.parametrize("style", ["preamble", "think"])
def test_a_chatty_rewrite_over_the_openai_backend(sample_settings, embedder, style):
    history = [Turn(FIRST, "20 days. [1]")]
    with FakeOpenAI(reply=styled_reply(style, STANDALONE)) as server:
        answer = answerer(sample_settings, embedder, server.url, "openai").ask(
            FOLLOW_UP, ["everyone"], history
        )
    assert answer.standalone_question == STANDALONE and answer.mode == Mode.GENERATED


@pytest.mark.parametrize(
    ("raw", "text", "cited", "dropped"),
    [
        ("20日です【1】。半休も可【2, 3】。", "20日です[1]。半休も可[2][3]。", [1, 2, 3], 0),
        ("20日です［１］［３］。", "20日です[1][3]。", [1, 3], 0),
        ("Twenty days [Passage 2], see [source 1].", "Twenty days [2], see [1].", [2, 1], 0),
        ("Twenty days.[^1]\n\n[^1]: leave policy, p. 3", "Twenty days.[1]", [1], 0),
        ("Twenty days (1). Since (2024) as well (2).", "Twenty days [1]. Since (2024) as well [2].",
         [1, 2], 0),
        ("Twenty days [1]. Steps (2) and (3) apply.", "Twenty days [1]. Steps (2) and (3) apply.",
         [1], 0),
        ("(1) Open the form.\n(2) Sign it.", "(1) Open the form.\n(2) Sign it.", [], 0),
        ("<think>maybe [3]?</think>\nTwenty days [1].", "Twenty days [1].", [1], 0),
        ("no opening tag [3]</think>Twenty days [2].", "Twenty days [2].", [2], 0),
        ("Sure! Here is the answer:\nTwenty days [1].", "Twenty days [1].", [1], 0),
        ("以下の条件があります：\n- 20日【1】", "以下の条件があります：\n- 20日[1]", [1], 0),
        ("Twenty days [1]. Part-timers get [2", "Twenty days [1]. Part-timers get", [1], 0),
        ("Twenty days 【9】.", "Twenty days.", [], 1),
    ],
)  # fmt: skip
def test_check_citations_accepts_the_forms_models_write(raw, text, cited, dropped):
    checked = check_citations(raw, 3)
    assert (checked.text, checked.cited, checked.dropped) == (text, cited, dropped)


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [
        ('Sure! Here is the standalone question: "What is X?"', "What is X?"),
        ("Here's the rewritten question:\n\n> What is X?", "What is X?"),
        ("<think>They mean X.</think>\n\n**Question:** What is X?", "What is X?"),
        ("はい、書き換えた質問：「パートの有給は何日？」", "パートの有給は何日？"),
        ("以下が書き換えた質問です：\n在宅勤務は週何日まで？", "在宅勤務は週何日まで？"),
        ("What is X?", "What is X?"),
        ("I'm sorry, but I can't help with that.", None),
        ("申し訳ありませんが、お答えできません。", None),
        ("<think>Let me think about what the user", None),
        ("", None),
        ("x" * 1000, None),
    ],
)
def test_clean_question(reply, cleaned):
    assert clean_question(reply, "and X?") == cleaned
