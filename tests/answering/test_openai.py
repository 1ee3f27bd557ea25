"""Generation from an OpenAI-compatible server (vLLM, llama.cpp's llama-server, LM Studio…)
through the real llama-index `OpenAILike` and `openai` client, over HTTP to the test server
in tests/openai_server.py (no model runs); the key behaviours side by side with Ollama's
test server (tests/ollama_server.py)."""

from __future__ import annotations

import json

import pytest

from assistant.answering import AnswerDone, Answerer, Mode, TextDelta, Turn, llm_health
from assistant.retrieval import Searcher, language_of
from tests.conftest import closed_port_url, json_lines, need_binary
from tests.ollama_server import FakeOllama, echo_reply
from tests.openai_server import FakeOpenAI

SERVERS = {"ollama": FakeOllama, "openai": FakeOpenAI}
CHAT = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}
QUESTION = "When are taxi fares reimbursed?"


def answerer(settings, embedder, url: str, backend: str = "openai", **more) -> Answerer:
    settings = settings.model_copy(
        update={"llm_backend": backend, "llm_url": url, "llm_request_timeout": 20, **more}
    )
    return Answerer(settings, Searcher(settings, embedder))


def chats(server, backend: str = "openai") -> list[dict]:
    return [r for r in server.requests if r["path"] == CHAT[backend]]


def one_sentence(text: str) -> bool:
    return text.endswith((".", "。")) and ". " not in text and "\n" not in text


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_a_streamed_answer_cites_the_passages_on_either_backend(sample_settings, embedder, backend):
    with SERVERS[backend]() as server:
        events = list(
            answerer(sample_settings, embedder, server.url, backend).stream(
                "What does error VPN-0x2F mean?", ["everyone"]
            )
        )
    answer = events[-1].answer
    assert isinstance(events[-1], AnswerDone) and answer.mode == Mode.GENERATED
    assert answer.cited == [1, 2] and answer.citations_marked
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3 and "".join(deltas).strip() == answer.answer
    (request,) = chats(server, backend)
    assert request["json"]["stream"] is True and request["json"]["model"] == "qwen2.5:7b"


def test_openai_requests_carry_the_model_and_no_key_unless_one_is_set(sample_settings, embedder):
    with FakeOpenAI() as server:
        answerer(sample_settings, embedder, server.url).ask(QUESTION, ["everyone"])
    (request,) = chats(server)
    assert request["json"]["temperature"] == sample_settings.llm_temperature
    assert request["authorization"] == "Bearer none"  # the placeholder, not the environment's
    assert "max_tokens" not in request["json"]  # the server's own limit


def test_a_follow_up_is_rewritten_by_the_openai_server(sample_settings, embedder):
    standalone = "How many days of paid annual leave do part-time employees get?"

    def reply(messages):
        return (
            standalone if "standalone question" in messages[0]["content"] else echo_reply(messages)
        )

    history = [Turn("How many days of annual leave do full-time staff get?", "20 days. [1]")]
    with FakeOpenAI(reply=reply) as server:
        answer = answerer(sample_settings, embedder, server.url).ask(
            "And for part-timers?", ["everyone"], history
        )
    condense, final = chats(server)
    assert condense["json"]["messages"][1]["content"].endswith("Last message: And for part-timers?")
    assert condense["json"]["stream"] is False and final["json"]["stream"] is True
    assert answer.standalone_question == standalone and answer.mode == Mode.GENERATED
    assert f"Question: {standalone}" in final["json"]["messages"][1]["content"]


def test_the_api_key_is_sent_from_the_setting_and_from_the_file(
    sample_settings, embedder, tmp_path
):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-from-file\n", encoding="utf-8")
    with FakeOpenAI(api_key="s3cret-from-file") as server:
        by_file = answerer(sample_settings, embedder, server.url, llm_api_key_file=key_file)
        assert by_file.ask(QUESTION, ["everyone"]).mode == Mode.GENERATED
        server.api_key = "s3cret-inline"
        inline = answerer(sample_settings, embedder, server.url, llm_api_key="s3cret-inline")
        assert inline.ask(QUESTION, ["everyone"]).mode == Mode.GENERATED
        health = llm_health(inline.settings)
    assert [r["authorization"] for r in chats(server)] == [
        "Bearer s3cret-from-file",
        "Bearer s3cret-inline",
    ]
    assert health["reachable"] and health["model_present"] and health["backend"] == "openai"
    assert "s3cret" not in json.dumps(health) and "s3cret" not in repr(inline.settings)


def test_a_refused_key_is_one_sentence_and_never_shows_the_key(sample_settings, embedder):
    with FakeOpenAI(api_key="right") as server:
        wrong = answerer(sample_settings, embedder, server.url, llm_api_key="wrong-key")
        answer = wrong.ask(QUESTION, ["everyone"])
        japanese = wrong.ask("社員食堂の昼食は1食いくらですか", ["everyone"])
        health = llm_health(wrong.settings)
    assert answer.mode == Mode.SOURCES_ONLY and len(answer.citations) == 5
    assert "refused the API key" in answer.answer and one_sentence(answer.answer)
    assert "wrong-key" not in answer.answer and "wrong-key" not in json.dumps(health)
    assert japanese.mode == Mode.SOURCES_ONLY and "API キー" in japanese.answer
    assert language_of(japanese.answer) == "ja"
    assert health["reachable"] and health["key_refused"] and not health["model_present"]


def test_an_unreadable_key_file_is_one_sentence(sample_settings, embedder, tmp_path):
    with FakeOpenAI() as server:
        ask = answerer(sample_settings, embedder, server.url, llm_api_key_file=tmp_path / "no")
        answer = ask.ask(QUESTION, ["everyone"])
        health = llm_health(ask.settings)
    assert answer.mode == Mode.SOURCES_ONLY and one_sentence(answer.answer)
    assert f"the API key file {tmp_path / 'no'} cannot be read" in answer.answer
    assert not chats(server)  # nothing is sent without the key
    assert "TAIMATSU_LLM_API_KEY_FILE" in health["error"]


def test_a_missing_model_names_it_and_says_to_load_it_there(sample_settings, embedder):
    with FakeOpenAI(models=["SmolLM2-360M-Instruct"]) as server:
        ask = answerer(sample_settings, embedder, server.url)
        answer = ask.ask(QUESTION, ["everyone"])
        japanese = ask.ask("社員食堂の昼食は1食いくらですか", ["everyone"])
        health = llm_health(ask.settings)
    assert answer.mode == Mode.SOURCES_ONLY and one_sentence(answer.answer)
    assert "does not serve the model qwen2.5:7b (load it there" in answer.answer
    assert "ollama" not in answer.answer.lower()
    assert "qwen2.5:7b" in japanese.answer and "ollama" not in japanese.answer.lower()
    assert health["reachable"] and not health["model_present"]
    assert "SmolLM2-360M-Instruct" in health["error"]  # what it does serve


def test_a_url_without_v1_says_so(sample_settings, embedder):
    with FakeOpenAI() as server:
        ask = answerer(sample_settings, embedder, server.url.removesuffix("/v1"))
        answer = ask.ask(QUESTION, ["everyone"])
        health = llm_health(ask.settings)
    assert answer.mode == Mode.SOURCES_ONLY and "must end in /v1" in answer.answer
    assert one_sentence(answer.answer) and "must end in /v1" in health["error"]


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_no_server_at_all_gives_sources_and_names_the_right_server(
    sample_settings, embedder, backend
):
    url = closed_port_url() + ("/v1" if backend == "openai" else "")
    answer = answerer(sample_settings, embedder, url, backend).ask(QUESTION, ["everyone"])
    assert answer.mode == Mode.SOURCES_ONLY and one_sentence(answer.answer)
    assert f"at {url} could not be reached" in answer.answer
    assert ("Ollama" in answer.answer) is (backend == "ollama")
    assert answer.citations[0][1].source == "en/expenses.html"


def test_openai_replicas_take_turns_and_an_unreachable_one_is_skipped(sample_settings, embedder):
    with FakeOpenAI() as first, FakeOpenAI() as second:
        urls = f"{first.url},{closed_port_url()}/v1,{second.url}"
        ask = answerer(sample_settings, embedder, urls)
        modes = [ask.ask(QUESTION, ["everyone"]).mode for _ in range(3)]
        health = llm_health(ask.settings)
        served = [len(chats(first)), len(chats(second))]
    assert modes == [Mode.GENERATED] * 3
    assert sorted(served) == [1, 2]  # turns: first, (dead one skipped) second, first
    assert [s["reachable"] for s in health["servers"]] == [True, False, True]


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_a_stream_broken_midway_falls_back_to_sources(sample_settings, embedder, backend):
    with SERVERS[backend](die_after_chunks=2) as server:
        answer = answerer(sample_settings, embedder, server.url, backend).ask(
            QUESTION, ["everyone"]
        )
    assert answer.mode == Mode.SOURCES_ONLY and "stopped before finishing" in answer.answer
    assert len(chats(server, backend)) == 1  # a stream that started is not asked again


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_a_server_slower_than_the_timeout_gives_sources_and_says_so(
    sample_settings, embedder, backend
):
    with SERVERS[backend](chunk_delay=30) as server:  # stop() ends the wait at once
        ask = answerer(sample_settings, embedder, server.url, backend, llm_request_timeout=0.5)
        answer = ask.ask(QUESTION, ["everyone"])
    assert answer.mode == Mode.SOURCES_ONLY and one_sentence(answer.answer)
    assert "took longer than 0.5 seconds" in answer.answer
    assert len(chats(server, backend)) == 1  # a slow server is not asked again


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_a_reset_before_the_first_token_is_retried(sample_settings, embedder, backend):
    calls = []

    def reply(messages):
        calls.append(1)
        server.die_after_chunks = 0 if len(calls) == 1 else None  # only the first dies
        return echo_reply(messages)

    with SERVERS[backend](reply=reply) as server:
        answer = answerer(sample_settings, embedder, server.url, backend).ask(
            QUESTION, ["everyone"]
        )
    assert len(chats(server, backend)) == 2
    assert answer.mode == Mode.GENERATED and answer.cited


def test_the_command_line_on_the_openai_backend_connects_to_that_server_only(
    sample_settings, tmp_path
):
    """`taimatsu ask` and `status` with the openai backend and a key file, under strace:
    the answer and the status come from the test server, and every connection goes to it
    on 127.0.0.1 — not to api.openai.com (OPENAI_BASE_URL and OPENAI_API_KEY in the
    environment are ignored), not to tiktoken's download site."""
    from tests.test_egress import _inet_ports, parse_strace, product_env, run_traced

    strace = need_binary("strace")
    key_file = tmp_path / "key"
    key_file.write_text("cli-key\n", encoding="utf-8")
    with FakeOpenAI(api_key="cli-key") as server:
        url = server.url
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        env = product_env(sample_settings.data_dir, closed_port_url())
        env.update(
            TAIMATSU_LLM_BACKEND="openai",
            TAIMATSU_LLM_URL=url,
            TAIMATSU_LLM_API_KEY_FILE=str(key_file),
            OPENAI_BASE_URL="http://192.0.2.1/v1",  # TEST-NET-1: must never be reached
            OPENAI_API_KEY="sk-from-the-environment",
            TIKTOKEN_CACHE_DIR=str(tmp_path / "tiktoken"),  # empty: a use would download
        )
        attempts, outputs = [], {}
        for step, args in [("ask", ["ask", QUESTION, "--json"]), ("status", ["status", "--json"])]:
            trace = tmp_path / f"{step}.strace"
            result = run_traced(strace, trace, args, env, tmp_path)
            assert result.returncode == 0, result.stderr
            attempts += parse_strace(trace.read_text(), step)
            (outputs[step],) = json_lines(result.stdout)
    answer, llm = outputs["ask"], outputs["status"]["llm"]
    assert answer["mode"] == "generated" and answer["citations"] and answer["citations_marked"]
    assert (llm["backend"], llm["url"], llm["model"]) == ("openai", url, "qwen2.5:7b")
    assert llm["reachable"] and llm["model_present"] and "cli-key" not in json.dumps(outputs)
    assert {r["authorization"] for r in server.requests} == {"Bearer cli-key"}
    offending = [(a.step, a.process, a.address, a.port) for a in attempts if a.offending]
    assert not offending
    assert port in _inet_ports(attempts, "ask") and port in _inet_ports(attempts, "status")
