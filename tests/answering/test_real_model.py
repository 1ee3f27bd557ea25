"""Answering with a real model: SmolLM2-135M-Instruct (transformers, CPU) behind the
protocol server in tests/real_model.py (the Ollama server cannot run here). Taimatsu's
Answerer talks to it through the real llama-index Ollama wrapper and `ollama` client; the
server's OpenAI route is driven by the official `openai` package. Nothing pins the model's
words: the tests check what Taimatsu does with whatever it writes."""

from __future__ import annotations

import re

import ollama
import openai
import pytest

from assistant.answering import AnswerDone, Answerer, Mode, PassagesFound, TextDelta, Turn
from assistant.answering.conversation import (
    CONDENSE_PROMPT,
    clean_question,
    fallback_question,
)
from assistant.answering.prompt import check_citations
from assistant.retrieval import Searcher
from tests.real_model import MODEL

MARKER = re.compile(r"\[(\d+(?:\s*[,、]\s*\d+)*)\]")


def _answerer(settings, embedder, server, backend: str = "ollama") -> Answerer:
    url = server.url if backend == "ollama" else f"{server.url}/v1"
    update = {"llm_backend": backend, "llm_url": url, "llm_model": MODEL}
    settings = settings.model_copy(update=update)
    return Answerer(settings, Searcher(settings, embedder))


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_a_real_model_streams_an_answer_whose_citations_are_checked(
    sample_settings, embedder, real_model, backend
):
    """Through the llama-index Ollama wrapper, and through its OpenAILike wrapper on the
    server's OpenAI route (as vLLM or llama.cpp's server would be reached)."""
    question = "What does error VPN-0x2F mean?"
    answerer = _answerer(sample_settings, embedder, real_model, backend)
    events = list(answerer.stream(question, ["everyone"]))
    found, done = events[0], events[-1]
    assert isinstance(found, PassagesFound) and found.passages
    assert isinstance(done, AnswerDone)
    deltas = [e.text for e in events[1:-1] if isinstance(e, TextDelta)]
    assert len(deltas) == len(events) - 2 >= 2  # it arrived in pieces, as written
    answer, raw = done.answer, "".join(deltas)
    print(f"\nmodel wrote: {raw!r}\ncited {answer.cited}, dropped {answer.dropped_citations}")
    assert answer.mode == Mode.GENERATED and answer.model == MODEL
    assert answer.answer.strip()
    assert raw == real_model.replies[-1]  # what the model wrote is what the answerer read
    # whatever markers it wrote (or none): the checked text cites only passages it was
    # given, in one form, and the passages are shown — said to be uncited when it marked none
    count = len(found.passages)
    checked = check_citations(raw, count)
    assert answer.answer == checked.text and answer.dropped_citations == checked.dropped
    assert answer.citations_marked == checked.marked
    every = list(range(1, count + 1))
    assert answer.cited == (checked.cited if checked.marked else every)
    assert all(1 <= n <= count for n in answer.cited)
    kept = {int(n) for g in MARKER.findall(answer.answer) for n in re.split(r"\D+", g)}
    assert kept <= set(answer.cited) and (kept == set(answer.cited)) == checked.marked
    # a plain [n] the model wrote for a passage it was given is never lost
    plain = [int(n) for g in MARKER.findall(raw) for n in re.split(r"\s*[,、]\s*", g)]
    assert {n for n in plain if 1 <= n <= count} <= kept
    assert answer.passages == found.passages
    # the prompt the model read held the numbered passages and the question
    prompt = real_model.chats()[-1]["messages"][-1]["content"]
    assert prompt.count("<passage n=") == count and "VPN-0x2F" in prompt
    assert prompt.endswith(f"Question: {question}")


def test_a_follow_up_is_rewritten_by_the_real_model(sample_settings, embedder, real_model):
    history = [Turn("How many days of annual leave do full-time staff get?", "20 days. [1]")]
    question = "And for part-timers?"
    before = len(real_model.replies)
    answer = _answerer(sample_settings, embedder, real_model).ask(question, ["everyone"], history)
    chats = real_model.chats()[-2:]
    assert chats[0]["messages"][0]["content"] == CONDENSE_PROMPT  # the model was asked
    assert chats[0]["messages"][-1]["content"].endswith(f"Last message: {question}")
    rewrite = real_model.replies[before]
    # the cleaned rewrite, or — when nothing usable is left — the conversation's topic
    searched = clean_question(rewrite, question) or fallback_question(history, question)
    print(f"\nrewrite: {rewrite!r} -> searched {searched!r}; answer {answer.answer!r}")
    assert searched.strip()
    assert answer.standalone_question == (searched if searched != question else None)
    assert chats[1]["messages"][-1]["content"].endswith(f"Question: {searched}")
    assert answer.mode in (Mode.GENERATED, Mode.NOT_FOUND)  # by the gate on what it found
    if answer.mode == Mode.GENERATED:
        assert answer.answer.strip() and real_model.replies[-1].strip()


def test_the_server_speaks_openai_and_ollama_with_the_same_greedy_words(real_model):
    question = [{"role": "user", "content": "Name one primary colour."}]
    client = openai.OpenAI(base_url=f"{real_model.url}/v1", api_key="unused", max_retries=0)
    assert MODEL in [m.id for m in client.models.list()]
    whole = client.chat.completions.create(model=MODEL, messages=question, max_tokens=12)
    text = whole.choices[0].message.content
    assert text.strip() and whole.choices[0].finish_reason in ("stop", "length")
    assert 0 < whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 5
    stream = client.chat.completions.create(
        model=MODEL,
        messages=question,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    deltas = [d for d in deltas if d]
    assert len(deltas) >= 2 and "".join(deltas) == text  # greedy: the same words, in pieces
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=question, max_tokens=4)

    with ollama.Client(host=real_model.url) as native:
        reply = native.chat(model=MODEL, messages=question, options={"num_predict": 12})
        assert reply.message.content == text and reply.eval_count == whole.usage.completion_tokens
        assert reply.done_reason == whole.choices[0].finish_reason
        with pytest.raises(ollama.ResponseError) as missing:
            native.chat(model="llama3.2", messages=question)
    assert missing.value.status_code == 404
    print(f"\nopenai and ollama: {text!r}")
