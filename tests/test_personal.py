"""Personal uploads ("My documents", ingest/personal.py): a user uploads a file readable by
them alone, asks and gets a cited answer from it; another user sees nothing of it — the
same search hits, scores and answers as before it existed, no list entry, the same 404
for its download and its removal as for a document that does not exist; quotas refuse
with one sentence and write nothing; a bad file is refused with one sentence; removal takes
its chunks out of the index. Through the real API (uvicorn on 127.0.0.1, httpx), the real
page (AppTest), the real index and embedding model; answers from the Ollama-protocol test
server. A folder run and `taimatsu reindex` keep the personal documents as they are."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from assistant.errors import IngestError
from assistant.index import open_index
from assistant.settings import Settings
from assistant.tokens import TokenStore
from ingest import personal
from ingest.listing import list_folder
from ingest.owners import OWNER_FILE, folder_of
from ingest.pipeline import Ingestor
from ingest.uploads import Incoming
from tests.api.server import ApiServer
from tests.conftest import closed_port_url
from tests.ollama_server import FakeOllama
from tests.ui.conftest import APP
from tests.ui.test_app import literal
from ui.api.service import document_id
from ui.cli.main import app as cli_app
from ui.identity import make_user
from ui.web import mine_page
from ui.web.i18n import STRINGS

PUBLIC = {
    "leave.md": "# Paid leave\n\nEmployees get 20 days of paid leave per year.\n",
    "garden.md": "# Office garden\n\nThe office plants are watered by the facilities team on "
    "Mondays.\n",
}
BONSAI = b"# Bonsai notes\n\nMy juniper bonsai is watered every third morning with rain water.\n"
QUESTION = "How often is the juniper bonsai watered?"
NOT_FOUND = "There is no document with this id that you may read."


@pytest.fixture(autouse=True)
def _restore_main_module() -> Iterator[None]:
    """AppTest leaves its script as `__main__` (see tests/ui/test_admin.py)."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def world(tmp_path_factory, embedder) -> tuple[Path, Settings]:
    """Two public documents in a folder source, ingested; quotas of 2 files and 0.02 MB."""
    root = tmp_path_factory.mktemp("personal-docs")
    for name, text in PUBLIC.items():
        (root / name).write_text(text, encoding="utf-8")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("personal-data"),
        ollama_host=closed_port_url(),
        lock_timeout=10,
        parse_timeout=0,
        personal_max_files=2,
        personal_max_mb=0.02,
    )
    summary = Ingestor(settings, embedder).run(root)
    assert summary.added == len(PUBLIC) and not summary.failed
    return root.resolve(), settings


@pytest.fixture(scope="module")
def model() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture(scope="module")
def api(world, model, embedder) -> Iterator[ApiServer]:
    _, settings = world
    live = settings.model_copy(update={"ollama_host": model.url, "api_rate_limit": 0})
    with ApiServer(live, embedder) as server:
        yield server


def client(api: ApiServer, user: str) -> httpx.Client:
    token, _ = TokenStore(api.service.settings).create(user, ["staff"])
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def refusal(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert "\n" not in message and "Traceback" not in response.text
    assert message.endswith(".") and message.count(". ") == 0, message  # one sentence
    return message


def seen_by(http: httpx.Client) -> dict[str, Any]:
    """Everything a user gets about the question: hits with scores, the answer and its
    citations, their own documents, and the index's health as a user sees it."""
    return {
        "search": http.get("/api/search", params={"q": QUESTION, "k": 10}).json(),
        "ask": http.post("/api/ask", json={"question": QUESTION}).json(),
        "mine": http.get("/api/my/documents").json()["documents"],
        "status": http.get("/api/status").json()["index"],
    }


def chunks(settings: Settings) -> int:
    return open_index(settings).counts()["chunks"]


def test_an_upload_is_answered_for_its_owner_and_invisible_to_everyone_else(api, world):
    _, settings = world
    before = chunks(settings)
    mine = folder_of(settings, "alice")
    with client(api, "alice") as alice, client(api, "bob") as bob:
        bob_before = seen_by(bob)

        # a bad file: one sentence, nothing written
        evil = alice.post("/api/my/documents", files={"files": ("evil.exe", b"MZ\x90\x00")})
        assert "evil.exe" in refusal(evil) and ".exe files are not accepted" in refusal(evil)
        fake = alice.post("/api/my/documents", files={"files": ("fake.pdf", b"MZ\x90\x00\x03")})
        assert "not a PDF file" in refusal(fake)
        assert not list_folder(mine).files if mine.is_dir() else True
        assert chunks(settings) == before

        done = alice.post("/api/my/documents", files={"files": ("bonsai.md", BONSAI)})
        assert done.status_code == 200, done.text
        saved = done.json()["saved"]
        assert [s["name"] for s in saved] == ["bonsai.md"]
        assert done.json()["usage"] == {"files": 1, "max_files": 2, "mb": 0.0, "max_mb": 0.02}
        listed = alice.get("/api/my/documents").json()["documents"]
        assert [(d["name"], d["id"]) for d in listed] == [("bonsai.md", saved[0]["id"])]
        assert listed[0]["chunks"] >= 1 and chunks(settings) == before + listed[0]["chunks"]

        answer = alice.post("/api/ask", json={"question": QUESTION}).json()
        assert answer["mode"] == "generated" and "[1]" in answer["answer"]
        cited = answer["citations"][0]
        assert cited["source"] == "bonsai.md" and "third morning" in cited["text"]
        assert alice.get(cited["download"]).content == BONSAI
        assert cited["download"] == listed[0]["download"]
        hits = alice.get("/api/search", params={"q": QUESTION}).json()["hits"]
        assert hits[0]["source"] == "bonsai.md"

        # bob: exactly what he got before the file existed, and the 404 of nothing
        assert seen_by(bob) == bob_before
        assert "bonsai.md" not in str(bob_before) and "third morning" not in str(bob_before)
        nothing = document_id(str(mine.resolve()), "nothing.md")
        for method, path in [
            ("GET", cited["download"]),
            ("DELETE", f"/api/my/documents/{listed[0]['id']}"),
            ("GET", f"/api/documents/{nothing}/original"),
            ("DELETE", f"/api/my/documents/{nothing}"),
            ("DELETE", "/api/my/documents/garbage"),
        ]:
            response = bob.request(method, path)
            assert refusal(response, 404) == NOT_FOUND
        assert alice.get(cited["download"]).status_code == 200  # bob's delete did nothing

        # quotas: one sentence that says what to do, nothing written
        two = [("files", ("a.md", b"# A\n\nalpha\n")), ("files", ("b.md", b"# B\n\nbeta\n"))]
        over = refusal(alice.post("/api/my/documents", files=two))
        assert over == (
            "You would keep 3 files, over your limit of 2; remove some of your documents "
            "first, nothing was saved."
        )
        big = b"# Big\n\n" + b"word " * 5000
        over_mb = refusal(alice.post("/api/my/documents", files={"files": ("big.md", big)}))
        assert "over your limit of 0.02 MB; remove some of your documents first" in over_mb
        assert [p.name for p in list_folder(mine).files] == ["bonsai.md"]
        assert chunks(settings) == before + listed[0]["chunks"]

        # removal: the chunks leave the index, then the file
        gone = alice.delete(f"/api/my/documents/{listed[0]['id']}")
        assert gone.status_code == 200 and gone.json()["removed"] == "bonsai.md"
        assert chunks(settings) == before
        version, counted = open_index(settings).label_counts.state()
        assert counted == version  # the keyword table counts without the removed chunks
        assert not (mine / "bonsai.md").exists()
        assert alice.get("/api/my/documents").json()["documents"] == []
        assert refusal(alice.get(cited["download"]), 404) == NOT_FOUND
        after = alice.post("/api/ask", json={"question": QUESTION}).json()
        assert all(c["source"] != "bonsai.md" for c in after["citations"])


def test_openapi_documents_the_personal_routes(api):
    spec = httpx.get(f"{api.url}/openapi.json").json()
    paths = spec["paths"]
    assert {"get", "post"} <= set(paths["/api/my/documents"])
    assert "delete" in paths["/api/my/documents/{doc_id}"]
    assert "quota" in paths["/api/my/documents"]["post"]["description"]


# -- the page ---------------------------------------------------------------------------------


def sign_in(monkeypatch, settings: Settings, user_id: str) -> None:
    user = make_user(settings, user_id, user_id, ["staff"])
    monkeypatch.setattr("ui.web.auth.current_user", lambda _settings: user)


def open_page(monkeypatch, settings: Settings, ollama: str, user_id: str, path: str) -> AppTest:
    """The real app script as `user_id` (signed in as a trusted proxy would name them: the
    identity is made by ui.identity.make_user, only the proxy's headers are skipped)."""
    monkeypatch.setenv("TAIMATSU_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TAIMATSU_OLLAMA_HOST", ollama)
    monkeypatch.setenv("TAIMATSU_LOCK_TIMEOUT", "10")
    monkeypatch.setenv("TAIMATSU_PARSE_TIMEOUT", "0")
    monkeypatch.setenv("TAIMATSU_PERSONAL_MAX_FILES", str(settings.personal_max_files))
    monkeypatch.setenv("TAIMATSU_PERSONAL_MAX_MB", str(settings.personal_max_mb))
    sign_in(monkeypatch, settings, user_id)
    app = AppTest.from_file(APP, default_timeout=120)
    app.session_state["language"] = "en"
    app.run()
    if path != "ask":  # the default page; see tests/ui/test_admin.py's switch_to_admin
        pages = {info.get("url_pathname"): h for h, info in app._registered_pages.items()}
        app._page_hash = pages[path]
        app.run()
    assert not app.exception, app.exception
    return app


def shown(app: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "error", "success", "info")
        for e in getattr(app, kind)
    ]
    parts += [literal(e.label) for e in app.expander]
    return literal("\n".join(str(p) for p in parts))


def test_my_documents_page_uploads_lists_and_removes(monkeypatch, world, model):
    _, settings = world
    before = chunks(settings)
    app = open_page(monkeypatch, settings, model.url, "pia", "mine")
    assert STRINGS["mine_none"]["en"] in shown(app)
    app.file_uploader[0].set_value([("tool.exe", b"MZ\x90\x00", "application/x-dos")]).run()
    app.button(key="mine-upload").click().run()
    assert not app.exception, app.exception
    assert [literal(e.value) for e in app.error] == [
        "tool.exe was refused: .exe files are not accepted; upload one of .csv .docx .eml .htm "
        ".html .markdown .md .pdf .pptx .tsv .txt .xlsx"
    ]
    app.file_uploader[0].set_value([("bonsai.md", BONSAI, "text/markdown")]).run()
    app.button(key="mine-upload").click().run()
    assert not app.exception, app.exception
    page = shown(app)
    assert "bonsai.md is now searchable, by you alone." in page
    assert "1 of 2 files" in page and "passages" in page
    added = chunks(settings) - before
    assert added >= 1

    chat = open_page(monkeypatch, settings, model.url, "pia", "ask")
    chat.chat_input[0].set_value(QUESTION).run()
    assert not chat.exception, chat.exception
    answer = chat.chat_message[1]
    assert "[1]" in literal(answer.markdown[0].value)
    assert literal(answer.expander[0].label).startswith("[1] bonsai.md")

    other = open_page(monkeypatch, settings, model.url, "pete", "ask")
    other.chat_input[0].set_value(QUESTION).run()
    assert not other.exception, other.exception
    assert "bonsai.md" not in shown(other) and "third morning" not in shown(other)
    theirs = open_page(monkeypatch, settings, model.url, "pete", "mine")
    assert STRINGS["mine_none"]["en"] in shown(theirs) and "bonsai" not in shown(theirs)

    sign_in(monkeypatch, settings, "pia")  # back to pia's session
    app.button(key=mine_page.remove_key("bonsai.md")).click().run()
    assert not app.exception, app.exception
    assert "bonsai.md was removed." in shown(app) and STRINGS["mine_none"]["en"] in shown(app)
    assert chunks(settings) == before


# -- folder runs and reindex ------------------------------------------------------------------


def test_reindex_and_folder_runs_keep_personal_documents_to_their_owner(
    world, embedder, monkeypatch
):
    root, settings = world
    added = personal.add(settings, "rita", [Incoming.of("notes.md", BONSAI)], embedder)
    assert added.searchable == ["notes.md"]
    folder = folder_of(settings, "rita").resolve()
    index = open_index(settings)
    assert index.document_groups(str(folder), "notes.md") == ["user:rita"]
    # a folder source holding the data folder does not list the personal files
    personal_files = folder.parent
    listed = list_folder(settings.data_dir.parent).files
    assert not [p for p in listed if personal_files in p.resolve().parents]

    monkeypatch.setattr("ingest.pipeline.Embedder", lambda *args, **kwargs: embedder)
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TAIMATSU_")}
    env.update(
        TAIMATSU_DATA_DIR=str(settings.data_dir),
        TAIMATSU_LOCK_TIMEOUT="10",
        TAIMATSU_PARSE_TIMEOUT="0",
        TAIMATSU_PERMISSIONS="filesystem",  # the owner's file decides, not the file's mode
    )
    result = CliRunner().invoke(cli_app, ["reindex", "--json"], env=env)
    assert result.exit_code == 0, result.output
    index = open_index(settings)
    assert index.document_groups(str(folder), "notes.md") == ["user:rita"]
    assert index.document_groups(str(root), "leave.md") is not None  # (its readers: the mode's)

    # a personal folder whose owner cannot be told stops the run, and the index keeps it
    (folder / OWNER_FILE).unlink()
    with pytest.raises(IngestError, match="owner"):
        Ingestor(settings, embedder).run(folder)
    assert open_index(settings).document_groups(str(folder), "notes.md") == ["user:rita"]
    (folder / OWNER_FILE).write_text('{"user": "rita"}', encoding="utf-8")
    assert personal.remove(settings, "rita", "notes.md")
    assert open_index(settings).document_groups(str(folder), "notes.md") is None
