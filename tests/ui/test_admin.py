"""The administration page: through Streamlit's AppTest (the real app script, in-process)
over its own index of a copy of the samples plus a file that fails, with uploads on; and once
in a real browser, upload a document and find it cited on the chat page."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from assistant.index import open_index
from assistant.retrieval import Searcher
from assistant.settings import Settings
from ingest.acl import ACL_FILE_NAME, Acl
from ingest.pipeline import Ingestor, ingest_lock
from tests.conftest import CACHE_ENV, SAMPLES, closed_port_url
from tests.ollama_server import FakeOllama
from tests.ui.conftest import APP
from tests.ui.test_app import literal
from ui.web import admin_jobs
from ui.web.auth import User
from ui.web.i18n import STRINGS

JOB_SECONDS = 120
NARWHAL = b"# Narwhal husbandry\n\nNarwhal tusks are measured every spring by the marine team.\n"


@pytest.fixture(autouse=True)
def _restore_main_module() -> Iterator[None]:
    """AppTest installs the script it runs as `__main__` and leaves it there; a process
    started with multiprocessing's "spawn" (the parser worker) runs `__main__` again, so a
    test that ingests after an AppTest would run that script first. Put it back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def admin_env(tmp_path_factory: pytest.TempPathFactory, embedder) -> tuple[Settings, Path]:
    """A copy of the samples plus a PDF that cannot be read, ingested into its own index
    (the tests upload and sync into it); uploads go to a folder beside it."""
    base = tmp_path_factory.mktemp("admin")
    docs = base / "docs"
    shutil.copytree(SAMPLES, docs)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a PDF\n")
    settings = Settings(
        data_dir=base / "data",
        ollama_host=closed_port_url(),
        lock_timeout=10,
        upload_dir=base / "uploads",
    )
    summary = Ingestor(settings, embedder).run(docs)
    assert [f["source"] for f in summary.failed] == ["broken.pdf"]
    return settings, docs.resolve()


@pytest.fixture
def admin_page(monkeypatch, admin_env) -> Callable[..., AppTest]:
    settings, _ = admin_env

    def open_(ollama_url: str, language: str = "en") -> AppTest:
        monkeypatch.setenv("TAIMATSU_DATA_DIR", str(settings.data_dir))
        monkeypatch.setenv("TAIMATSU_UPLOAD_DIR", str(settings.upload_dir))
        monkeypatch.setenv("TAIMATSU_OLLAMA_HOST", ollama_url)
        monkeypatch.setenv("TAIMATSU_LOCK_TIMEOUT", "10")
        app = AppTest.from_file(APP, default_timeout=120)
        app.session_state["language"] = language
        app.run()
        return switch_to_admin(app)

    return open_


def switch_to_admin(app: AppTest) -> AppTest:
    """AppTest.switch_page() takes page files; the app's pages are functions, so ask for
    the page by the hash st.navigation registered for its url path."""
    pages = {info.get("url_pathname"): h for h, info in app._registered_pages.items()}
    assert "admin" in pages, "the administration page is not in the navigation"
    app._page_hash = pages["admin"]
    app.run()
    assert not app.exception, app.exception
    return app


def texts(elements) -> list[str]:
    return [literal(e.value) for e in elements]


def outside_the_index(base: Path) -> set[str]:
    """Every path under the test's folder (and its parent) but the index's own."""
    data = base / "data"
    return {
        str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        for path in [*base.rglob("*"), *base.parent.iterdir()]
        if not path.is_relative_to(data)
    }


def finish(settings: Settings) -> admin_jobs.Job:
    job = admin_jobs.current(settings)
    assert job is not None and admin_jobs.wait(job, JOB_SECONDS), "the page's job did not end"
    return job


def test_page_shows_the_index_the_runs_with_failures_and_health(admin_page, admin_env):
    settings, docs = admin_env
    with FakeOllama() as server:
        ollama = server.url
        app = admin_page(ollama)
    counts = open_index(settings).counts()
    assert [m.value for m in app.metric] == [str(counts["documents"]), str(counts["chunks"])]
    by_kind, by_root, runs = (d.value for d in app.dataframe)
    assert {"pdf", "docx", "html", "md", "txt"} <= set(by_kind["Type"])
    assert by_kind["Documents"].sum() == counts["documents"]
    assert by_kind["Chunks"].sum() == counts["chunks"]
    docs_row = by_root[by_root["Folder"] == str(docs)].iloc[0]
    assert (docs_row["Documents"], docs_row["Chunks"]) == (8, counts["chunks"])
    # each source with its last run beside its counts: when, what it did, its failures
    assert docs_row["Last run"].endswith(" · +8 ~0 -0 · 1 Failed"), docs_row["Last run"]

    first_run = runs[runs["Folder"] == str(docs)].iloc[-1]
    assert (first_run["Added"], first_run["Failed"]) == (8, 1)
    failures = [e for e in app.expander if "failed in" in literal(e.label)]
    assert literal(failures[-1].label).startswith(f"1 file(s) failed in {docs} (")
    assert literal(failures[-1].markdown[0].value).startswith("broken.pdf: unreadable PDF")

    healthy = texts(app.success)
    assert any(line.startswith("Index: healthy · Stored in: embedded") for line in healthy)
    assert "qdrant-edge-py" in healthy[0]
    assert f"Ollama at {ollama}: version 0.12.3, model qwen2.5:7b installed" in healthy

    with FakeOllama(models=()) as empty:
        missing = admin_page(empty.url)
    assert "the model qwen2.5:7b is missing" in texts(missing.warning)[0]
    down = closed_port_url()
    assert texts(admin_page(down).error) == [
        f"Ollama at {down}: unreachable; answers show passages only"
    ]
    japanese = admin_page(down, language="ja")
    assert japanese.title[0].value == STRINGS["admin_page"]["ja"]
    assert STRINGS["admin_sync"]["ja"] in [s.value for s in japanese.subheader]


def test_page_shows_each_openai_server_by_what_it_lacks(admin_page, monkeypatch):
    """With the openai backend, each replica's line says what is wrong with it: model not
    served, key refused, unreachable — and the one that is fine."""
    from tests.openai_server import FakeOpenAI

    down = closed_port_url() + "/v1"
    monkeypatch.setenv("TAIMATSU_LLM_BACKEND", "openai")
    monkeypatch.setenv("TAIMATSU_LLM_API_KEY", "the-key")
    with (
        FakeOpenAI(api_key="the-key") as good,
        FakeOpenAI(api_key="the-key", models=["other"]) as lacking,
        FakeOpenAI(api_key="another-key") as locked,
    ):
        urls = [good.url, lacking.url, locked.url, down]
        monkeypatch.setenv("TAIMATSU_LLM_URL", ",".join(urls))
        app = admin_page(closed_port_url())
    assert f"Model server at {urls[0]}: model qwen2.5:7b served" in texts(app.success)
    assert texts(app.warning)[0].startswith(
        f"Model server at {urls[1]}: the model qwen2.5:7b is not served"
    )
    assert texts(app.error) == [
        f"Model server at {urls[2]}: the API key was refused (set TAIMATSU_LLM_API_KEY or "
        "TAIMATSU_LLM_API_KEY_FILE); answers show passages only",
        f"Model server at {down}: unreachable; answers show passages only",
    ]
    assert "the-key" not in str([*texts(app.success), *texts(app.warning), *texts(app.error)])


def test_upload_is_checked_then_searchable_by_the_chosen_group_only(
    admin_page, admin_env, embedder
):
    settings, docs = admin_env
    base = docs.parent
    before = outside_the_index(base)
    app = admin_page(closed_port_url())
    app.file_uploader[0].set_value(
        [
            ("narwhal-care.md", NARWHAL, "text/markdown"),
            ("../../escape.md", NARWHAL, "text/markdown"),
            ("CON.md", NARWHAL, "text/markdown"),
            ("fake.pdf", b"MZ\x90\x00\x03\x00\x00\x00", "application/pdf"),
            ("tool.exe", b"MZ\x90\x00", "application/octet-stream"),  # past the browser
        ]
    ).run()
    app.multiselect(key="admin-upload-groups").set_value([]).run()
    app.text_input(key="admin-upload-extra").input("marine").run()
    app.button(key="admin-upload").click().run()
    assert not app.exception, app.exception
    refused = [line for line in texts(app.error) if "was refused" in line]
    assert refused == [
        "../../escape.md was refused: a name with '..' could point outside the upload folder",
        "CON.md was refused: CON is a reserved device name on Windows",
        "fake.pdf was refused: the content is not a PDF file although the name ends in .pdf",
        "tool.exe was refused: .exe files are not accepted; upload one of .csv .docx .eml .htm "
        ".html .markdown .md .pdf .pptx .tsv .txt .xlsx",
    ]

    job = finish(settings)
    app.run()
    assert "narwhal-care.md is now searchable by: marine" in texts(app.success)
    upload_dir = Path(settings.upload_dir).resolve()
    assert job.folders == [str(upload_dir)]
    assert sorted(p.name for p in upload_dir.iterdir()) == [
        ".taimatsu-acl.toml",
        ".taimatsu-upload.lock",
        "narwhal-care.md",
    ]
    assert Acl.for_folder(upload_dir, None).groups_for("narwhal-care.md") == ["marine"]
    assert outside_the_index(base) - before == {"uploads"} | {
        f"uploads/{name}"
        for name in (".taimatsu-acl.toml", ".taimatsu-upload.lock", "narwhal-care.md")
    }

    searcher = Searcher(settings, embedder)
    question = "When are narwhal tusks measured?"
    assert searcher.search(question, ["marine"])[0].source == "narwhal-care.md"
    assert all(p.source != "narwhal-care.md" for p in searcher.search(question, ["hr"]))
    assert all(p.source != "narwhal-care.md" for p in searcher.search(question, []))


def test_sync_now_shows_progress_then_each_folder_summary(admin_page, admin_env, embedder):
    settings, docs = admin_env
    (docs / "bicycle-policy.md").write_text(
        "# Bicycles\n\nBicycles may be parked in the basement garage overnight.\n", "utf-8"
    )
    (docs / "en" / "it-onboarding.txt").unlink()
    app = admin_page(closed_port_url())
    with ingest_lock(settings):  # the scheduled run holds the index: the job waits for it
        app.button(key="admin-sync").click().run()
        assert not app.exception, app.exception
        (bar,) = app.progress
        assert literal(bar.text).startswith("1/")
        assert "starting (after any other ingestion run finishes)" in literal(bar.text)
        assert app.button(key="admin-sync").disabled
    job = finish(settings)
    app.run()
    assert "Sync finished." in texts(app.success)
    lines = texts(app.success) + texts(app.warning)
    assert any(
        line.startswith(f"{docs}: 1 added, 0 updated, 7 unchanged, 1 deleted, 1 failed")
        for line in lines
    ), lines
    upload_dir = str(Path(settings.upload_dir).resolve())
    if (Path(upload_dir) / ACL_FILE_NAME).exists():  # the upload test ran before this one
        assert upload_dir in job.folders
    assert not app.button(key="admin-sync").disabled
    hits = Searcher(settings, embedder).search("Where can bicycles be parked?", [])
    assert hits[0].source == "bicycle-policy.md"


def test_an_upload_while_another_run_holds_the_index_waits_for_the_next_sync(
    admin_page, admin_env, monkeypatch
):
    settings, _ = admin_env
    monkeypatch.setattr(admin_jobs, "PAGE_INGEST_WAIT", 0.3)
    app = admin_page(closed_port_url())
    with ingest_lock(settings):  # held past the job's wait
        app.file_uploader[0].set_value(("walrus.md", b"# Walrus\n\nTusks.\n", "text/plain"))
        app.run()
        app.button(key="admin-upload").click().run()
        finish(settings)
    app.run()
    (warning,) = texts(app.warning)
    assert warning.startswith(
        "The files were saved but not indexed yet (another ingestion run is using the index"
    )
    assert warning.endswith("); Sync now will index them.")
    assert (Path(settings.upload_dir) / "walrus.md").is_file()


def test_the_page_is_for_administrators_only(monkeypatch, admin_env):
    settings, _ = admin_env
    monkeypatch.setenv("TAIMATSU_DATA_DIR", str(settings.data_dir))
    monkeypatch.setattr("ui.web.auth.current_user", lambda s: User("bob", "bob", ("hr",), False))
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["language"] = "en"
    app.run()
    pages = [i.get("url_pathname") for i in app._registered_pages.values()]
    assert pages == ["", "mine", "tokens"]  # ask, their own documents and API tokens only

    def direct_call() -> None:
        from ui.web import admin
        from ui.web.auth import User

        admin.render(None, User("bob", "bob", ("hr",), False), None)  # type: ignore[arg-type]

    called = AppTest.from_function(direct_call)
    called.session_state["language"] = "en"
    called.run()
    assert [e.value for e in called.error] == [STRINGS["admin_only"]["en"]]
    assert not called.title


# -- in a real browser ------------------------------------------------------------------------


@contextmanager
def _serve(settings: Settings, ollama_host: str, log_path: Path) -> Iterator[str]:
    """`taimatsu ui` as tests/ui/test_browser.py runs it, with uploads on."""
    import os
    import subprocess

    from tests.ui.test_browser import _free_port, _wait_healthy

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_") or k == CACHE_ENV}
    env.update(
        TAIMATSU_DATA_DIR=str(settings.data_dir),
        TAIMATSU_UPLOAD_DIR=str(settings.upload_dir),
        TAIMATSU_OLLAMA_HOST=ollama_host,
        TAIMATSU_UI_ADDRESS="127.0.0.1",
    )
    exe = Path(sys.executable).with_name("taimatsu")
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(exe), "ui", "--port", str(port)],
            env=env,
            cwd=log_path.parent,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_healthy(proc, url, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def test_upload_in_the_browser_then_find_the_new_document(admin_env, artifacts):
    from playwright.sync_api import expect, sync_playwright

    from tests.conftest import need_binary
    from tests.ui.test_browser import (
        ANSWER_MS,
        CHROMIUM_ARGS,
        PAGE_MS,
        ask,
        citations,
        wait_for_run,
    )

    settings, _ = admin_env
    for old in artifacts.glob("*.png"):
        old.unlink()
    chromium = str(Path(need_binary("chromium")).resolve())
    content = (
        b"# Aurora viewing guide\n\nThe aurora viewing deck on the roof opens at 22:00 "
        b"from November to March; bring the red torch from reception.\n"
    )
    with ExitStack() as stack:
        server = stack.enter_context(FakeOllama())
        url = stack.enter_context(_serve(settings, server.url, artifacts / "streamlit.log"))
        p = stack.enter_context(sync_playwright())
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-US")
        page = page.new_page()
        page.set_default_timeout(PAGE_MS)
        page.goto(f"{url}/admin", wait_until="domcontentloaded")
        wait_for_run(page)
        expect(page.get_by_role("heading", name="Administration")).to_be_visible()
        expect(page.get_by_text("Index: healthy")).to_be_visible()
        page.screenshot(path=artifacts / "admin.png", full_page=True)

        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
            files=[{"name": "aurora-guide.md", "mimeType": "text/markdown", "buffer": content}]
        )
        uploader = page.get_by_role("region", name=re.compile(r"^Documents"))
        expect(uploader.get_by_role("button", name="Remove aurora-guide.md")).to_be_visible()
        wait_for_run(page)
        upload = page.get_by_role("button", name="Upload and index")
        expect(upload).to_be_enabled()
        upload.click()
        done = page.get_by_text("aurora-guide.md is now searchable by: everyone")
        expect(done).to_be_visible(timeout=ANSWER_MS)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        page.screenshot(path=artifacts / "admin-upload.png", full_page=True)

        page.get_by_test_id("stSidebarNav").get_by_text("Ask").click()
        wait_for_run(page)
        message = ask(page, "When does the aurora viewing deck open?")
        cited = citations(message, re.compile(r"^\[\d+\] aurora-guide\.md"))
        expect(cited.first).to_be_visible()
        page.screenshot(path=artifacts / "admin-upload-answer.png", full_page=True)


def test_a_refused_run_is_shown_with_its_sentence(monkeypatch, tmp_path):
    """A run that stopped rather than open documents is listed with its reason."""
    from ingest.runs import record_run

    reason = "the rules file /srv/share/.taimatsu-acl.toml was in force for this folder …"
    record_run(tmp_path, {"root": "/srv/share", "refused": reason})
    monkeypatch.setenv("TAIMATSU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TAIMATSU_OLLAMA_HOST", closed_port_url())
    app = AppTest.from_file(APP, default_timeout=120)
    app.run()
    errors = texts(switch_to_admin(app).error)
    assert any(
        line.startswith("The run over /srv/share (") and line.endswith(reason) for line in errors
    ), errors


def test_a_sync_is_cancelled_from_the_page_and_listed_as_cancelled(admin_page, admin_env):
    """The page's own job: cancelled while it waits for the index, it stops after its
    first file; the other folders wait for the next sync; the runs table says so."""
    settings, docs = admin_env
    app = admin_page(closed_port_url())
    with ingest_lock(settings):  # the scheduled run holds the index: the job waits
        app.button(key="admin-sync").click().run()
        app.button(key="admin-cancel").click().run()
        assert not app.exception, app.exception
        assert texts(app.info)[-1].startswith("Cancel requested: the running ingestion stops")
    job = finish(settings)
    (step,) = job.steps
    assert step.cancelled and step.folder == str(docs)
    assert step.error.startswith(f"the ingestion of {docs} was cancelled after 1 of ")
    app.run()
    assert f"{docs}: {step.error}" in texts(app.warning)
    assert f"The run over {docs} (" in texts(app.warning)[-1]
    assert texts(app.warning)[-1].endswith(f"was cancelled: {step.error}")
    with pytest.raises(KeyError):  # nothing runs: no button to cancel
        app.button(key="admin-cancel")


def test_another_process_run_shows_its_rate_and_can_be_cancelled(admin_page, admin_env):
    """A run of another process (the cron's) is found by its progress file: the page
    shows files/s and the time left, and its button writes the cancel request."""
    import json
    import subprocess
    import time

    from ingest.runs import CancelWatch

    settings, docs = admin_env
    data = Path(settings.data_dir)
    with subprocess.Popen(["sleep", "120"]) as other:
        now = time.time()
        state = {"pid": other.pid, "root": "/srv/share", "started": now - 100}
        state |= {"done": 500, "total": 1500, "chunks": 800, "updated": now}
        (data / "ingest-progress.json").write_text(json.dumps(state), "utf-8")
        try:
            app = admin_page(closed_port_url())
            (bar,) = app.progress
            assert literal(bar.text) == (
                "Another process's ingestion (the schedule's) /srv/share: 500/1500 files, "
                "800 chunks embedded, 5.0 files/s, about 200 s left"
            )
            watch = CancelWatch(data, time.time_ns())
            assert not watch.requested()
            app.button(key="admin-cancel").click().run()
            assert watch.requested()  # the run over there stops at its next file
        finally:
            other.kill()
            (data / "ingest-progress.json").unlink()
