"""Tests of the OpenAI-protocol test server (tests/openai_server.py), driven through the
real `openai` client and raw HTTP: that it speaks the wire format vLLM speaks, so that the
product's tests against it mean something."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.ollama_server import split_pieces
from tests.openai_server import FakeOpenAI

REPLY = "Taimatsu answers from your documents. 東京は日本の首都です。 Done [1]."
QUESTION = [{"role": "user", "content": "Where is Tokyo?"}]


@pytest.fixture
def server():
    with FakeOpenAI(reply=lambda messages: REPLY, api_key="k") as fake:
        yield fake


def client(url: str, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=10)


def test_models_and_a_whole_completion(server):
    with client(server.url) as c:
        assert [m.id for m in c.models.list()] == ["qwen2.5:7b"]
        whole = c.chat.completions.create(model="qwen2.5:7b", messages=QUESTION)
        cut = c.chat.completions.create(model="qwen2.5:7b", messages=QUESTION, max_tokens=3)
    assert whole.choices[0].message.content == REPLY
    assert whole.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == "".join(split_pieces(REPLY)[:3])
    assert cut.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == len(split_pieces(REPLY))


def test_a_stream_is_server_sent_events_ending_in_done(server):
    with client(server.url) as c:
        chunks = list(c.chat.completions.create(model="qwen2.5:7b", messages=QUESTION, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == REPLY
    assert [ch.choices[0].finish_reason for ch in chunks][-1] == "stop"
    body = {"model": "qwen2.5:7b", "messages": QUESTION, "stream": True}
    raw = httpx.post(
        f"{server.url}/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    )
    events = [line for line in raw.text.split("\n\n") if line]
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[1].removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_errors_are_shaped_like_vllms(server):
    with client(server.url) as c, pytest.raises(openai.NotFoundError) as missing:
        c.chat.completions.create(model="llama3", messages=QUESTION)
    assert missing.value.body["message"] == "The model `llama3` does not exist."
    with client(server.url, key="wrong") as c, pytest.raises(openai.AuthenticationError):
        c.models.list()
    with client(server.url.removesuffix("/v1")) as c, pytest.raises(openai.NotFoundError) as route:
        c.models.list()
    assert route.value.body == {"detail": "Not Found"}
    assert [r["authorization"] for r in server.requests] == ["Bearer k", "Bearer wrong", "Bearer k"]


def test_a_stream_that_dies_midway_breaks_the_client(server):
    server.die_after_chunks = 2
    with client(server.url) as c, pytest.raises(httpx.RemoteProtocolError):
        list(c.chat.completions.create(model="qwen2.5:7b", messages=QUESTION, stream=True))
