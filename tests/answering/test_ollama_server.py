"""Tests of the fake Ollama server, driven through the real `ollama` client
and the real llama-index `Ollama` wrapper over HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import ollama
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.llms.ollama import Ollama

from tests.ollama_server import FakeOllama, echo_reply, split_pieces

MODEL = "qwen2.5:7b"
REPLY = "Taimatsu answers from your documents. 東京は日本の首都です。 Done [1]."
QUESTION = [{"role": "user", "content": "Where is Tokyo?"}]
LI_QUESTION = [ChatMessage(role="user", content="Where is Tokyo?")]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(reply=lambda messages: REPLY) as server:
        yield server


@pytest.fixture
def client(fake: FakeOllama) -> Iterator[ollama.Client]:
    with ollama.Client(host=fake.url) as c:
        yield c


@contextmanager
def llama_index_llm(url: str, **kwargs: Any) -> Iterator[Ollama]:
    llm = Ollama(model=MODEL, base_url=url, request_timeout=30, **kwargs)
    try:
        yield llm
    finally:
        llm.client.close()


def test_split_pieces_keeps_every_character_and_splits_cjk() -> None:
    pieces = split_pieces(REPLY)
    assert "".join(pieces) == REPLY
    assert " answers" in pieces
    cjk = [p.strip() for p in pieces if "京" in p or "本" in p or "首" in p]
    assert cjk and all(len(p) <= 3 for p in cjk)


def test_chat_stream_concatenates_to_reply(fake: FakeOllama, client: ollama.Client) -> None:
    parts = list(client.chat(model=MODEL, messages=QUESTION, stream=True))
    assert len(parts) > 5
    assert "".join(p.message.content or "" for p in parts) == REPLY
    assert all(not p.done for p in parts[:-1])
    last = parts[-1]
    assert last.done and last.done_reason == "stop"
    assert last.eval_count == len(parts) - 1
    assert last.prompt_eval_count and last.prompt_eval_count > 0
    assert fake.requests[-1]["path"] == "/api/chat"
    assert fake.requests[-1]["json"]["messages"] == QUESTION
    assert fake.requests[-1]["json"]["stream"] is True


def test_chat_and_generate_without_streaming(fake: FakeOllama, client: ollama.Client) -> None:
    seen: list[list[dict[str, Any]]] = []

    def reply(messages: list[dict[str, Any]]) -> str:
        seen.append(messages)
        return "Short answer."

    fake.reply = reply
    chat = client.chat(model=MODEL, messages=QUESTION)
    assert chat.message.content == "Short answer." and chat.done_reason == "stop"
    gen = client.generate(model=MODEL, prompt="Hi", system="Be brief.")
    assert gen.response == "Short answer." and gen.done
    assert seen[1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    cut = client.chat(model=MODEL, messages=QUESTION, options={"num_predict": 1})
    assert cut.message.content == "Short" and cut.done_reason == "length"


def test_failing_reply_is_500(fake: FakeOllama, client: ollama.Client) -> None:
    def broken(messages: list[dict[str, Any]]) -> str:
        raise ValueError("no answer")

    fake.reply = broken
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=MODEL, messages=QUESTION)
    assert err.value.status_code == 500 and "no answer" in err.value.error


def test_list_show_and_version(fake: FakeOllama, client: ollama.Client) -> None:
    listed = client.list().models
    assert [m.model for m in listed] == [MODEL]
    assert listed[0].details is not None and listed[0].details.family == "qwen2"
    info = client.show(MODEL).modelinfo or {}
    assert info["general.architecture"] == "qwen2"
    assert info["qwen2.context_length"] == 32768
    assert httpx.get(f"{fake.url}/api/version").json() == {"version": "0.12.3"}
    # llama-index asks /api/show for the context window when not given one
    with llama_index_llm(fake.url) as llm:
        assert llm.metadata.context_window == 32768


def test_root_and_unknown_routes(fake: FakeOllama) -> None:
    assert httpx.get(fake.url).text == "Ollama is running"
    assert httpx.head(fake.url).status_code == 200
    assert httpx.get(f"{fake.url}/api/nope").status_code == 404
    assert httpx.get(f"{fake.url}/api/chat").status_code == 404


def test_unknown_model_is_404_response_error(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as chat_err:
        list(client.chat(model="llama3:8b", messages=QUESTION, stream=True))
    assert chat_err.value.status_code == 404
    assert chat_err.value.error == 'model "llama3:8b" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as gen_err:
        client.generate(model="llama3:8b", prompt="x")
    assert gen_err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as show_err:
        client.show("llama3:8b")
    assert show_err.value.status_code == 404


def test_llama_index_stream_chat(fake: FakeOllama) -> None:
    with llama_index_llm(fake.url, context_window=4096) as llm:
        responses = list(llm.stream_chat(LI_QUESTION))
    assert "".join(r.delta or "" for r in responses) == REPLY
    assert responses[-1].message.content == REPLY
    assert fake.requests[-1]["json"]["options"]["num_ctx"] == 4096


def test_connection_dropped_mid_stream_raises() -> None:
    with FakeOllama(reply=lambda m: REPLY, die_after_chunks=3) as dying:
        with ollama.Client(host=dying.url) as client:
            got: list[str] = []
            with pytest.raises(httpx.RemoteProtocolError):
                for part in client.chat(model=MODEL, messages=QUESTION, stream=True):
                    got.append(part.message.content or "")
            assert got == split_pieces(REPLY)[:3]

        with llama_index_llm(dying.url, context_window=4096) as llm:
            with pytest.raises(httpx.RemoteProtocolError):
                list(llm.stream_chat(LI_QUESTION))


def test_connection_refused() -> None:
    with socket.socket() as closed:  # bound but never listening: connects are refused
        closed.bind(("127.0.0.1", 0))
        with ollama.Client(host=f"http://127.0.0.1:{closed.getsockname()[1]}") as client:
            with pytest.raises(ConnectionError):
                client.chat(model=MODEL, messages=QUESTION)
            with pytest.raises(httpx.ConnectError):
                list(client.chat(model=MODEL, messages=QUESTION, stream=True))


def test_default_echo_reply_cites_passages() -> None:
    passage = '<passage n="1" source="a.md">The sky is blue. More.</passage>'
    with FakeOllama() as server, ollama.Client(host=server.url) as client:
        answer = client.chat(
            model=MODEL, messages=[{"role": "user", "content": f"Question?\n{passage}"}]
        )
    assert answer.message.content == "The sky is blue. [1]"
    two = "Context:\n[1] 空は青い。とても。\n[2] Grass is green! Yes.\nQ: colours?"
    assert echo_reply([{"role": "user", "content": two}]) == "空は青い。 [1] Grass is green! [2]"
    assert echo_reply([{"role": "user", "content": "No sources here."}]) == "I don't know."


def test_stop_closes_keep_alive_connections_and_threads() -> None:
    before = set(threading.enumerate())
    server = FakeOllama().start()
    with ollama.Client(host=server.url) as client:  # keeps its connection open
        client.list()
        list(client.chat(model=MODEL, messages=QUESTION, stream=True))
        server.stop()
        assert set(threading.enumerate()) <= before
        with pytest.raises(ConnectionError):
            client.list()
