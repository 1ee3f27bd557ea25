"""API tokens (store, `taimatsu token`, the page's own tokens) and the audit log (rotation,
retention, filters, CSV, a line per question from the page, the administrators' view)."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import time
import uuid

import pytest
from streamlit.testing.v1 import AppTest

from assistant.audit import AuditLog, as_csv
from assistant.settings import Settings
from assistant.tokens import TokenError, TokenStore
from tests.conftest import run_cli
from tests.ollama_server import FakeOllama
from tests.ui.conftest import APP
from tests.ui.test_app import _ask, literal
from ui.web.auth import User
from ui.web.i18n import STRINGS

# -- tokens --------------------------------------------------------------------------------


def test_a_token_names_its_holder_until_revoked_or_expired(settings, monkeypatch):
    store = TokenStore(settings)
    raw, info = store.create("alice", ["hr", "it", "hr"], expires_in=3600, name="bot")
    assert store.verify(raw) == info and info.groups == ("hr", "it") and info.user == "alice"
    secret = raw.rsplit("_", 1)[1]
    assert secret.encode() not in store.path.read_bytes()  # only its hash is kept
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600

    forged = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    other_id = raw.replace(info.id, "0" * 16)
    invalid = set()
    for bad in (forged, other_id, "tmt_garbage", "", raw + "x"):
        with pytest.raises(TokenError) as caught:
            store.verify(bad)
        invalid.add(str(caught.value))
    assert len(invalid) == 1  # one sentence whatever is wrong: nothing to probe with

    later = time.time() + 3601
    monkeypatch.setattr("assistant.tokens.time.time", lambda: later)
    with pytest.raises(TokenError, match="expired"):
        store.verify(raw)
    monkeypatch.undo()

    assert not store.revoke(info.id, user="mallory")  # only its holder's or an operator's
    assert store.revoke(info.id, user="alice") and not store.revoke(info.id)
    with pytest.raises(TokenError, match="revoked"):
        store.verify(raw)
    assert [t.revoked for t in store.list("alice")] == [True]


def test_token_command_prints_the_token_once(settings):
    made = run_cli(
        "token", "create", "--user", "svc-bot", "--groups", "hr, it", "--expires", "90d",
        "--service", "--json", settings=settings,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    held = TokenStore(settings).verify(created["token"])
    assert (held.user, held.groups, held.service) == ("svc-bot", ("hr", "it"), True)
    assert 89 * 86400 < held.expires - held.created <= 90 * 86400

    listed = run_cli("token", "list", "--json", settings=settings)
    assert created["token"] not in listed.stdout
    assert [t["id"] for t in json.loads(listed.stdout)] == [created["id"]]

    revoked = run_cli("token", "revoke", created["id"], settings=settings)
    assert revoked.returncode == 0 and TokenStore(settings).list()[0].revoked
    again = run_cli("token", "revoke", created["id"], settings=settings)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "taimatsu token list" in again.stderr
    bad = run_cli(
        "token", "create", "--user", "x", "--groups", "g", "--expires", "soon", settings=settings
    )
    assert bad.returncode == 2 and "90d" in bad.stderr


# -- the audit log ---------------------------------------------------------------------------


def _entry(log: AuditLog, user: str, question: str, shown: list[str]) -> None:
    log.record(
        channel="api",
        user=user,
        groups=["hr"],
        question=question,
        mode="generated",
        shown=shown,
        cited=shown[:1],
        latency_ms=12.34,
    )


def test_the_log_rotates_keeps_every_line_and_forgets_past_retention(tmp_path):
    settings = Settings(data_dir=tmp_path, audit_max_mb=0.001, audit_retention_days=30)
    log = AuditLog(settings)
    for i in range(40):
        _entry(log, f"user{i % 3}", f"question {i} " + "x" * 40, [f"docs/d{i}.md", "hr/pay.pdf"])
    files = log.files()
    assert len(files) > 3  # closed off at ~1 kB
    assert all(f.stat().st_size <= 1100 for f in files)
    assert stat.S_IMODE(log.folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    entries = log.entries(limit=None)
    assert [e["question"].split()[1] for e in entries] == [str(i) for i in reversed(range(40))]
    assert entries[0]["channel"] == "api" and entries[0]["latency_ms"] == 12.3

    assert {e["user"] for e in log.entries(user="user1", limit=None)} == {"user1"}
    assert len(log.entries(document="docs/d7.md", limit=None)) == 1
    assert len(log.entries(document="hr/pay", limit=None)) == 40
    today = time.gmtime()
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    from datetime import date

    assert log.entries(since=date.fromisoformat(tomorrow)) == []
    assert len(log.entries(until=date(today.tm_year, today.tm_mon, today.tm_mday))) == 40
    assert len(log.entries(since=date(today.tm_year, today.tm_mon, today.tm_mday))) == 40

    oldest = files[0]
    past = time.time() - 31 * 86400
    os.utime(oldest, (past, past))
    _entry(log, "user0", "one more", [])
    assert oldest not in log.files() and len(log.entries(limit=None)) < 41


def test_csv_export_has_every_entry_and_no_formula(tmp_path):
    log = AuditLog(Settings(data_dir=tmp_path))
    _entry(log, "eve", '=HYPERLINK("http://x","click")', ["a.md", "b.md"])
    _entry(log, "bob", "普通の質問", ["c.md"])
    rows = list(csv.DictReader(io.StringIO(as_csv(log.entries()))))
    assert [r["user"] for r in rows] == ["bob", "eve"]
    assert rows[1]["question"].startswith("'=")  # a spreadsheet shows it, never runs it
    assert rows[1]["shown"] == "a.md; b.md" and rows[0]["question"] == "普通の質問"


# -- in the page ---------------------------------------------------------------------------------


def test_a_question_in_the_page_is_logged_and_shown_to_administrators(page, sample_settings):
    question = f"What does error VPN-0x2F mean? ({uuid.uuid4().hex[:8]})"
    with FakeOllama() as server:
        app = _ask(page(server.url), question)
    logged = [e for e in AuditLog(sample_settings).entries() if e["question"] == question]
    assert len(logged) == 1
    entry = logged[0]
    assert (entry["channel"], entry["user"], entry["mode"]) == ("page", "local", "generated")
    assert "en/vpn-troubleshooting.pdf" in entry["cited"] and entry["latency_ms"] > 0

    pages = {info.get("url_pathname"): h for h, info in app._registered_pages.items()}
    app._page_hash = pages["audit"]
    app.run()
    app.text_input[1].set_value("vpn-troubleshooting").run()
    assert not app.exception, app.exception
    shown = app.dataframe[0].value
    assert question in list(shown["question"])
    assert set(shown["channel"]) <= {"page", "api", "mcp"}
    assert app.get("download_button")


def test_a_user_makes_and_revokes_their_own_token_in_the_page(monkeypatch, sample_settings):
    monkeypatch.setenv("TAIMATSU_DATA_DIR", str(sample_settings.data_dir))
    bob = User("bob", "Bob", ("sales",), False)
    monkeypatch.setattr("ui.web.auth.current_user", lambda s: bob)
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["language"] = "en"
    app.run()
    pages = {info.get("url_pathname"): h for h, info in app._registered_pages.items()}
    assert set(pages) == {"", "mine", "tokens"}  # no administration, no audit log
    app._page_hash = pages["tokens"]
    app.run()
    app.text_input[0].set_value("my script")
    app.button[0].click().run()
    assert not app.exception, app.exception
    raw = app.code[0].value
    held = TokenStore(sample_settings).verify(raw)
    assert (held.user, held.groups, held.name) == ("bob", ("sales",), "my script")
    assert held.expires - held.created == pytest.approx(90 * 86400, abs=5)

    app.run()  # shown once: gone on the next run
    assert not app.code
    revoke = [b for b in app.button if literal(b.label) == STRINGS["tokens_revoke"]["en"]]
    revoke[-1].click().run()
    with pytest.raises(TokenError, match="revoked"):
        TokenStore(sample_settings).verify(raw)

    def direct_call() -> None:
        from ui.web import audit_page
        from ui.web.auth import User

        audit_page.render(None, User("bob", "bob", ("sales",), False), None)  # type: ignore[arg-type]

    called = AppTest.from_function(direct_call)
    called.session_state["language"] = "en"
    called.run()
    assert [e.value for e in called.error] == [STRINGS["admin_only"]["en"]]


def test_an_administrator_makes_a_service_token_and_revokes_it(page, sample_settings):
    with FakeOllama() as server:
        app = page(server.url)
    pages = {info.get("url_pathname"): h for h, info in app._registered_pages.items()}
    app._page_hash = pages["tokens"]
    app.run()
    account = f"svc-{uuid.uuid4().hex[:6]}"
    app.text_input[1].set_value(account)
    app.text_input[2].set_value("hr, finance")
    create = [b for b in app.button if literal(b.label) == STRINGS["tokens_create"]["en"]]
    create[1].click().run()
    assert not app.exception, app.exception
    raw = app.code[0].value
    held = TokenStore(sample_settings).verify(raw)
    assert (held.user, held.groups, held.service) == (account, ("finance", "hr"), True)

    app.run()
    assert any(literal(m.value).startswith(f"{account} · ") for m in app.markdown)
    revoke = [b for b in app.button if b.key == f"revoke-{held.id}"]
    revoke[0].click().run()
    with pytest.raises(TokenError, match="revoked"):
        TokenStore(sample_settings).verify(raw)
