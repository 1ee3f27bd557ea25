"""The HTTP API with real clients against a real server (uvicorn on 127.0.0.1): the
official `openai` package (streamed and not), the official `mcp` SDK client, httpx for
the REST routes; identity (tokens, proxy headers), rate limits, bad input, upload, audit.
The model is the Ollama-protocol test server; the embedding model and index are real."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from assistant.answering.conversation import CONDENSE_PROMPT
from assistant.audit import AuditLog
from assistant.settings import Settings
from assistant.tokens import TokenStore
from ingest.pipeline import Ingestor
from tests.api.server import ApiServer
from tests.conftest import closed_port_url, run_cli
from tests.ollama_server import FakeOllama
from ui.api.service import document_id

DOCS = {
    "leave.md": (
        "# Paid leave\n\nEmployees get 20 days of paid leave per year. Part-timers get paid "
        "leave in proportion to their weekly hours.\n",
        ["everyone"],
    ),
    "vpn.md": (
        "# VPN errors\n\nError VPN-0x2F means the client certificate expired. Renew it in "
        "the self-service portal.\n",
        ["everyone"],
    ),
    "salaries.md": (
        "# Salary bands\n\nThe salary band for senior engineers is 9 to 12 million yen. "
        "Bonus rules are set by the board.\n",
        ["hr"],
    ),
}
LEAVE = "How many days of paid leave do employees get per year?"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder) -> tuple[Path, Settings]:
    root = tmp_path_factory.mktemp("api-docs")
    rules = []
    for name, (text, groups) in DOCS.items():
        (root / name).write_text(text, encoding="utf-8")
        rules.append(f'[[rule]]\npattern = "{name}"\ngroups = {json.dumps(groups)}\n')
    (root / ".taimatsu-acl.toml").write_text("\n".join(rules), encoding="utf-8")
    data = tmp_path_factory.mktemp("api-data")
    settings = Settings(
        data_dir=data,
        ollama_host=closed_port_url(),
        lock_timeout=10,
        parse_timeout=0,
        upload_dir=tmp_path_factory.mktemp("api-uploads"),
    )
    summary = Ingestor(settings, embedder).run(root)
    assert summary.added == len(DOCS) and not summary.failed
    return root, settings


@pytest.fixture(scope="module")
def model() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture(scope="module")
def api(corpus, model, embedder) -> Iterator[ApiServer]:
    _, settings = corpus
    live = settings.model_copy(update={"ollama_host": model.url, "api_rate_limit": 1000})
    with ApiServer(live, embedder) as server:
        yield server


@pytest.fixture(scope="module")
def tokens(api) -> dict[str, str]:
    store = TokenStore(api.service.settings)
    made = {
        "staff": store.create("sam", ["staff"])[0],
        "hr": store.create("hana", ["hr"])[0],
        "admin": store.create("ada", ["taimatsu-admins"], service=True)[0],
    }
    revoked, info = store.create("rex", ["hr"])
    store.revoke(info.id)
    made["revoked"] = revoked
    made["expired"] = store.create("eve", ["hr"], expires_in=1e-9)[0]
    return made


def client(api: ApiServer, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=60)


def one_sentence(response: httpx.Response) -> str:
    """The error's message; it is one sentence of JSON, never a traceback."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    message = response.json()["error"]["message"]
    assert "Traceback" not in response.text and "\n" not in message
    assert message.endswith(".") and message.count(". ") <= 1, message
    return message


# -- OpenAI-compatible chat ----------------------------------------------------------------


def test_the_openai_client_gets_cited_answers_streamed_and_not(api, tokens, corpus):
    root, _ = corpus
    ai = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tokens["staff"], max_retries=0)
    assert [m.id for m in ai.models.list()] == ["taimatsu"]

    completion = ai.chat.completions.create(
        model="taimatsu", messages=[{"role": "user", "content": LEAVE}]
    )
    text = completion.choices[0].message.content
    assert "20 days" in text and "[1]" in text
    extra = completion.model_extra
    assert extra["taimatsu"]["mode"] == "generated"
    cited = extra["citations"][0]
    assert cited["source"] == "leave.md" and "20 days" in cited["text"]
    leave_id = document_id(str(root.resolve()), "leave.md")
    assert cited["download"] == f"/api/documents/{leave_id}/original"
    with client(api, tokens["staff"]) as http:
        original = http.get(cited["download"])
    assert original.status_code == 200 and original.content == (root / "leave.md").read_bytes()

    pieces, last = [], None
    with ai.chat.completions.create(
        model="taimatsu", messages=[{"role": "user", "content": LEAVE}], stream=True
    ) as stream:
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
            last = chunk
    assert last.choices[0].finish_reason == "stop"
    assert "".join(pieces) == text == last.model_extra["taimatsu"]["answer"]
    assert last.model_extra["citations"] == extra["citations"]
    assert len([p for p in pieces if p]) > 1  # streamed in pieces, as the model wrote


def test_a_follow_up_is_read_with_the_conversation(api, tokens, model):
    ai = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tokens["staff"], max_retries=0)
    before = len(model.requests)
    completion = ai.chat.completions.create(
        model="taimatsu",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": LEAVE},
            {"role": "assistant", "content": "Employees get 20 days of paid leave per year. [1]"},
            {"role": "user", "content": "And what about part-timers?"},
        ],
    )
    rewrites = [r for r in model.requests[before:] if CONDENSE_PROMPT in json.dumps(r["json"])]
    assert len(rewrites) == 1 and LEAVE in json.dumps(rewrites[0]["json"])
    assert completion.model_extra["citations"]


def test_the_openai_client_shows_the_apis_errors(api, tokens):
    ai = openai.OpenAI(base_url=f"{api.url}/v1", api_key="tmt_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="not valid"):
        ai.models.list()
    ai = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tokens["staff"], max_retries=0)
    with pytest.raises(openai.NotFoundError, match="use 'taimatsu'"):
        ai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="last message must be the user"):
        ai.chat.completions.create(
            model="taimatsu", messages=[{"role": "assistant", "content": "hi"}]
        )


# -- REST ------------------------------------------------------------------------------------


def test_rest_search_ask_and_status_follow_the_askers_groups(api, tokens, corpus):
    root, _ = corpus
    with client(api, tokens["staff"]) as staff, client(api, tokens["hr"]) as hr:
        question = "salary band for senior engineers"
        mine = staff.get("/api/search", params={"q": question, "k": 10}).json()["hits"]
        theirs = hr.get("/api/search", params={"q": question, "k": 10}).json()["hits"]
        assert "salaries.md" not in {h["source"] for h in mine}
        assert theirs[0]["source"] == "salaries.md" and theirs[0]["download"]

        answer = hr.post("/api/ask", json={"question": question}).json()
        assert answer["mode"] == "generated" and answer["citations"][0]["source"] == "salaries.md"
        refused = staff.post("/api/ask", json={"question": question, "groups": ["hr"]})
        assert refused.status_code == 400 and "groups" in one_sentence(refused)

        secret = f"/api/documents/{document_id(str(root.resolve()), 'salaries.md')}/original"
        nothing = f"/api/documents/{document_id(str(root.resolve()), 'nope.md')}/original"
        garbage = "/api/documents/%21%21/original"
        outsider = [staff.get(path) for path in (secret, nothing, garbage)]
        assert {r.status_code for r in outsider} == {404}
        assert len({r.content for r in outsider}) == 1  # the same 404 for all three
        assert hr.get(secret).content == (root / "salaries.md").read_bytes()

        status = staff.get("/api/status").json()
        assert status["index"] == {"healthy": True, "exists": True}  # no counts
        assert status["user"] == {"id": "sam", "groups": ["staff", "user:sam"]}
    with client(api, tokens["admin"]) as admin:
        assert admin.get("/api/status").json()["index"]["documents"] == len(DOCS)


def test_openapi_is_served_and_no_docs_page_from_a_cdn(api):
    with client(api, None) as anonymous:
        spec = anonymous.get("/openapi.json").json()
        assert {"/v1/chat/completions", "/api/search", "/api/documents"} <= set(spec["paths"])
        chat = spec["paths"]["/v1/chat/completions"]["post"]["description"]
        assert "`citations`" in chat and "`taimatsu`" in chat  # the extension fields
        for page in ("/docs", "/redoc"):
            assert anonymous.get(page).status_code == 404


def test_upload_by_an_administrator_is_ingested_for_its_groups(api, tokens):
    note = b"# Parking\n\nThe parking garage code for level B2 is 4711.\n"
    files = {"files": ("parking.md", note, "text/markdown")}
    with client(api, tokens["staff"]) as staff:
        refused = staff.post("/api/documents", files=files, data={"groups": "hr"})
        assert refused.status_code == 403 and "administrators" in one_sentence(refused)
    with client(api, tokens["admin"]) as admin:
        done = admin.post("/api/documents", files=files, data={"groups": "hr"})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["groups"] == ["hr"] and body["ingest"]["searchable"] == ["parking.md"]
        bad = admin.post(
            "/api/documents", files={"files": ("evil.exe", b"MZ\x90\x00", "application/x-dos")}
        )
        assert bad.status_code == 400 and "evil.exe" in one_sentence(bad)
    question = {"q": "parking garage code level B2", "k": 3}
    with client(api, tokens["hr"]) as hr, client(api, tokens["staff"]) as staff:
        assert hr.get("/api/search", params=question).json()["hits"][0]["source"] == "parking.md"
        seen = {h["source"] for h in staff.get("/api/search", params=question).json()["hits"]}
        assert "parking.md" not in seen


# -- MCP ---------------------------------------------------------------------------------------


async def _mcp(api: ApiServer, token: str, calls: list[tuple[str, dict]]) -> tuple[list, list]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(f"{api.url}/mcp", http_client=http)) as mcp:
        tools = sorted(tool.name for tool in (await mcp.list_tools()).tools)
        results = [await mcp.call_tool(name, arguments) for name, arguments in calls]
    return tools, results


def test_the_mcp_client_lists_and_calls_search_and_ask(api, tokens):
    calls = [
        ("search", {"query": "salary band for senior engineers", "k": 5}),
        ("ask", {"question": LEAVE}),
        ("ask", {"question": "x" * 5000}),
    ]
    tools, (hits, answer, too_long) = asyncio.run(_mcp(api, tokens["staff"], calls))
    assert tools == ["ask", "search"]
    assert "salaries.md" not in {h["source"] for h in hits.structured_content["hits"]}
    assert hits.structured_content["hits"] and not hits.is_error
    assert answer.structured_content["mode"] == "generated"
    assert answer.structured_content["citations"][0]["source"] == "leave.md"
    assert too_long.is_error and "too long" in too_long.content[0].text
    _, (member,) = asyncio.run(_mcp(api, tokens["hr"], calls[:1]))
    assert member.structured_content["hits"][0]["source"] == "salaries.md"


def test_mcp_refuses_a_request_without_a_valid_token(api, tokens):
    for token in (None, tokens["revoked"]):
        with client(api, token) as http:
            response = http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"Accept": "application/json, text/event-stream"},
            )
        assert response.status_code == 401 and one_sentence(response)


# -- identity, limits, bad input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "says"),
    [
        (None, "carries no credentials"),
        ("tmt_0123456789abcdef_" + "x" * 43, "not valid"),
        ("revoked", "revoked"),
        ("expired", "expired"),
    ],
)
def test_a_request_without_a_valid_token_gets_401(api, tokens, token, says):
    with client(api, tokens.get(token, token)) as http:
        for response in (
            http.get("/api/search", params={"q": "leave"}),
            http.post("/v1/chat/completions", json={"messages": []}),
        ):
            assert response.status_code == 401
            assert says in one_sentence(response)


def test_bad_input_gets_a_4xx_with_one_sentence(api, tokens):
    with client(api, tokens["staff"]) as http:
        cases = {
            "bad json": http.post(
                "/api/ask", content=b'{"question": ', headers={"Content-Type": "application/json"}
            ),
            "10 MB body": http.post(
                "/v1/chat/completions",
                content=b"x" * (10 * 1024 * 1024),
                headers={"Content-Type": "application/json"},
            ),
            "wrong content type": http.post(
                "/api/ask", content=b"question=hi", headers={"Content-Type": "text/plain"}
            ),
            "100 kB question": http.post("/api/ask", json={"question": "word " * 20_000}),
            "100 kB chat": http.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "y" * 100_000}]},
            ),
            "not an object": http.post("/api/ask", json=["a", "b"]),
            "k out of range": http.get("/api/search", params={"q": "leave", "k": 0}),
            "empty question": http.post("/api/ask", json={"question": "  "}),
            "no query": http.get("/api/search"),
        }
    statuses = {name: r.status_code for name, r in cases.items()}
    assert statuses == {
        "bad json": 400,
        "10 MB body": 413,
        "wrong content type": 415,
        "100 kB question": 400,
        "100 kB chat": 400,
        "not an object": 400,
        "k out of range": 400,
        "empty question": 400,
        "no query": 400,
    }
    messages = {name: one_sentence(r) for name, r in cases.items()}
    assert "not valid JSON" in messages["bad json"]
    assert "too long" in messages["100 kB question"] and "too long" in messages["100 kB chat"]
    assert messages["no query"].startswith("The field q is missing")


def test_a_body_sent_without_a_length_is_cut_at_the_limit(api, tokens):
    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b"x" * (1024 * 1024)

    with client(api, tokens["staff"]) as http:
        response = http.post(
            "/api/ask", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413 and "1 MiB" in one_sentence(response)


def test_the_rate_limit_answers_429_with_retry_after(corpus, model, embedder):
    _, settings = corpus
    limited = settings.model_copy(update={"ollama_host": model.url, "api_rate_limit": 3})
    with ApiServer(limited, embedder) as api:
        store = TokenStore(limited)
        first, second = store.create("a", ["staff"])[0], store.create("b", ["staff"])[0]
        with client(api, first) as a, client(api, second) as b:
            codes = [a.get("/v1/models").status_code for _ in range(4)]
            refused = a.get("/v1/models")
            other = b.get("/v1/models")
    assert codes == [200, 200, 200, 429]
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "at most 3 a minute" in one_sentence(refused)
    assert other.status_code == 200  # per token


def test_header_mode_believes_only_the_trusted_proxy(corpus, model, embedder):
    _, settings = corpus
    headers = {"X-Forwarded-User": "pat", "X-Forwarded-Groups": "hr,staff"}
    for proxies, expected in (([], 401), (["127.0.0.1/32"], 200)):
        conf = settings.model_copy(
            update={"ollama_host": model.url, "auth_mode": "header", "trusted_proxies": proxies}
        )
        with ApiServer(conf, embedder) as api, client(api, None) as http:
            response = http.get("/api/status", headers=headers)
            assert response.status_code == expected
            if expected == 200:
                assert response.json()["user"] == {
                    "id": "pat",
                    "groups": ["hr", "staff", "user:pat"],
                }
                twice = http.get(
                    "/api/status", headers=[*headers.items(), ("X-Forwarded-User", "ada")]
                )
                assert twice.status_code == 401


def test_every_question_from_the_api_and_mcp_is_in_the_audit_log(api, tokens):
    """One line per question, as the page writes them: the documents shown (the
    citations) and cited, the mode; a refused question too (mode "error")."""
    audit = AuditLog(api.service.settings)
    before = len(audit.entries(limit=None))
    question, too_long = "What does error VPN-0x2F mean?", "y" * 5000
    with client(api, tokens["hr"]) as http:
        assert http.post("/api/ask", json={"question": question}).status_code == 200
        assert http.post("/api/ask", json={"question": too_long}).status_code == 400
        chat = {"messages": [{"role": "user", "content": question}], "stream": True}
        assert "[DONE]" in http.post("/v1/chat/completions", json=chat).text
    asyncio.run(_mcp(api, tokens["hr"], [("ask", {"question": question})]))
    everything = audit.entries(limit=None)  # newest first
    entries = everything[: len(everything) - before][::-1]
    assert [(e["channel"], e["user"], e["question"], e["mode"]) for e in entries] == [
        ("api", "hana", question, "generated"),
        ("api", "hana", too_long[:200], "error"),
        ("api", "hana", question, "generated"),
        ("mcp", "hana", question, "generated"),
    ]
    for entry in entries:
        assert entry["groups"] == ["hr", "user:hana"]
    answered = [e for e in entries if e["mode"] == "generated"]
    assert {tuple(e["cited"]) for e in answered} == {tuple(answered[0]["cited"])}
    assert answered[0]["cited"][0] == "vpn.md" and answered[0]["shown"] == answered[0]["cited"]


def test_taimatsu_api_on_a_taken_port_fails_in_one_line(settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("api", "--port", str(port), settings=settings, timeout=120)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("taimatsu: error")]
    assert len(errors) == 1 and f"could not listen on 127.0.0.1:{port}" in errors[0]
