"""Signing in, in the real browser: `taimatsu ui` in OIDC mode against a real OpenID provider
on 127.0.0.1 (oidc-provider-mock, with its login form), and in header mode behind a proxy
that is, or is not, on the allow-list. Plus the wiring and claim rules without a browser."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from oidc_provider_mock import User as ProviderUser
from oidc_provider_mock import app as provider_app
from playwright.sync_api import Browser, Page, expect, sync_playwright

from assistant.settings import Settings
from tests.conftest import CACHE_ENV, closed_port_url, need_binary, serve_wsgi
from tests.ui.test_browser import (
    CHROMIUM_ARGS,
    PAGE_MS,
    _free_port,
    _wait_healthy,
    ask,
    wait_for_run,
)
from ui.web.auth import header_user, oidc_user
from ui.web.oidc import SECRETS_FILE, streamlit_args

# the mock provider still uses authlib's older API for its ID tokens
pytestmark = pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")

PROVIDER_USERS = [
    ProviderUser(
        sub="alice",
        claims={"email": "alice@example.com", "name": "Alice Staff", "groups": ["staff"]},
    ),
    ProviderUser(
        sub="bob",
        claims={"email": "bob@example.com", "name": "Bob Admin", "groups": ["taimatsu-admins"]},
    ),
]
PROXY_HEADERS = {
    "X-Forwarded-User": "dave@example.com",
    "X-Forwarded-Groups": "staff,taimatsu-admins",
}
NOT_ALLOWED = "must be opened through the company's sign-in proxy"


# -- the real page ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = str(Path(need_binary("chromium")).resolve())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """oidc-provider-mock on 127.0.0.1: registered clients only, nonce required."""
    app = provider_app(
        require_client_registration=True, require_nonce=True, user_claims=PROVIDER_USERS
    )
    yield from serve_wsgi(app)


@contextmanager
def serve(data_dir: Path, log_path: Path, port: int, **env: str) -> Iterator[str]:
    """`taimatsu ui --port PORT` with TAIMATSU_<NAME>=value for each keyword; the page URL."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_") or k == CACHE_ENV}
    clean.pop("FORWARDED_ALLOW_IPS", None)
    clean.update(
        TAIMATSU_DATA_DIR=str(data_dir),
        TAIMATSU_OLLAMA_HOST=closed_port_url(),  # no model: the answer is the passages
        TAIMATSU_UI_ADDRESS="127.0.0.1",
        **{f"TAIMATSU_{name.upper()}": value for name, value in env.items()},
    )
    exe = Path(sys.executable).with_name("taimatsu")
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(exe), "ui", "--port", str(port)],
            env=clean,
            cwd=log_path.parent,  # no taimatsu.toml, no .streamlit/ here
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


@pytest.fixture
def visit(browser: Browser, artifacts: Path) -> Iterator[Callable[..., Page]]:
    """visit(url, headers): a fresh browser (no cookies) sending `headers` on every request,
    on the page, once its first run is over."""
    for old in artifacts.glob("*.png"):
        old.unlink()
    with ExitStack() as stack:

        def visit_(url: str, headers: dict[str, str] | None = None) -> Page:
            context = browser.new_context(
                viewport={"width": 1280, "height": 900},
                locale="en-US",
                extra_http_headers=headers or {},
            )
            stack.callback(context.close)
            page = context.new_page()
            page.set_default_timeout(PAGE_MS)
            page.goto(url, wait_until="domcontentloaded")
            wait_for_run(page)
            expect(page.get_by_role("heading", name="Taimatsu 松明")).to_be_visible()
            return page

        yield visit_


def chat_box(page: Page):
    return page.get_by_test_id("stChatInputTextArea")


def admin_link(page: Page):
    return page.get_by_test_id("stSidebarNav").get_by_role("link", name="Administration")


def sign_in(page: Page, provider: str, subject: str, artifacts: Path | None = None) -> None:
    """From the sign-in screen, through the provider's login form, back to the page."""
    expect(page.get_by_text("Please sign in with your company account")).to_be_visible()
    expect(chat_box(page)).to_have_count(0)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{provider}/oauth2/authorize?**")
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    if artifacts:
        page.screenshot(path=artifacts / "provider-login.png", full_page=True)
    predefined = page.get_by_role("form", name="Authenticate predefined users")
    if predefined.get_by_role("button", name=subject, exact=True).count():
        predefined.get_by_role("button", name=subject, exact=True).click()
    else:  # a user the provider knows nothing about: typed in, with no claims but e-mail
        page.get_by_placeholder("sub").fill(subject)
        page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/(ask)?$"))
    wait_for_run(page)


def test_oidc_sign_in_through_the_provider(visit, provider, sample_settings, artifacts):
    port = _free_port()
    redirect = f"http://127.0.0.1:{port}/oauth2callback"
    registered = httpx.post(
        f"{provider}/oauth2/clients", json={"redirect_uris": [redirect]}, trust_env=False
    )
    assert registered.status_code == 201, registered.text
    client = registered.json()
    with serve(
        sample_settings.data_dir,
        artifacts / "streamlit.log",
        port,
        auth_mode="oidc",
        oidc_provider_url=provider,
        oidc_client_id=client["client_id"],
        oidc_client_secret=client["client_secret"],
    ) as url:
        secrets_file = sample_settings.data_dir / SECRETS_FILE
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600

        # alice, in "staff": signs in, asks, is not offered the administration page
        page = visit(url)
        page.screenshot(path=artifacts / "sign-in.png", full_page=True)
        sign_in(page, provider, "alice", artifacts)
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text("Signed in as Alice Staff")).to_be_visible()
        message = ask(page, "How many days a week may I work from home?")
        expect(message.get_by_test_id("stAlertContainer")).to_contain_text("could not be reached")
        expect(message.get_by_test_id("stExpander").first).to_be_visible()
        # ask, her own documents and her own API tokens, nothing more
        nav = page.get_by_test_id("stSidebarNav")
        expect(nav.get_by_role("link")).to_have_count(3)
        expect(nav.get_by_role("link", name="My documents")).to_have_count(1)
        expect(nav.get_by_role("link", name="API tokens")).to_have_count(1)
        expect(page.get_by_role("link", name="Administration")).to_have_count(0)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        page.screenshot(path=artifacts / "alice-answer.png", full_page=True)
        page.goto(f"{url}/admin", wait_until="domcontentloaded")  # the address typed in
        wait_for_run(page)
        expect(chat_box(page)).to_be_visible()
        expect(page.get_by_role("heading", name="Administration")).to_have_count(0)
        page.screenshot(path=artifacts / "alice-admin-url.png", full_page=True)

        # bob, in "taimatsu-admins", in another browser: the page is listed and opens
        page = visit(url)
        sign_in(page, provider, "bob")
        expect(page.get_by_text("Signed in as Bob Admin")).to_be_visible()
        expect(admin_link(page)).to_be_visible()
        admin_link(page).click()
        wait_for_run(page)
        expect(page.get_by_role("heading", name="Administration")).to_be_visible()
        expect(page).to_have_url(f"{url}/admin")
        expect(page.get_by_test_id("stException")).to_have_count(0)
        page.screenshot(path=artifacts / "bob-admin.png", full_page=True)

        # carol: the provider sends no groups claim; she gets the default groups, no error
        page = visit(url)
        sign_in(page, provider, "carol@example.com")
        expect(page.get_by_text("Signed in as carol@example.com")).to_be_visible()
        expect(chat_box(page)).to_be_visible()
        expect(page.get_by_role("link", name="Administration")).to_have_count(0)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        page.screenshot(path=artifacts / "carol-no-groups.png", full_page=True)

        # signing out ends the session at the provider too, and the page asks again
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{provider}/oauth2/end_session?**")
        page.get_by_role("button", name="End session").click()
        page.wait_for_url(re.compile(r"^http://127\.0\.0\.1:\d+/(ask)?$"))
        wait_for_run(page)
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        page.reload(wait_until="domcontentloaded")
        wait_for_run(page)
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        expect(chat_box(page)).to_have_count(0)


def test_header_mode_believes_only_an_allow_listed_proxy(visit, sample_settings, artifacts):
    data, log = sample_settings.data_dir, artifacts / "streamlit.log"
    with serve(data, log, _free_port(), auth_mode="header") as url:
        # the proxy on this machine (127.0.0.1 is allow-listed by default), which also
        # passes the browser's own address on, as nginx and Apache do
        page = visit(url, {**PROXY_HEADERS, "X-Forwarded-For": "203.0.113.7"})
        expect(page.get_by_text("Signed in as dave@example.com")).to_be_visible()
        expect(chat_box(page)).to_be_visible()
        expect(admin_link(page)).to_be_visible()
        page.screenshot(path=artifacts / "header-signed-in.png", full_page=True)
        # the same server, reached without the proxy's headers
        page = visit(url)
        expect(page.get_by_text(NOT_ALLOWED)).to_be_visible()
        expect(chat_box(page)).to_have_count(0)

    elsewhere = '["10.9.9.9/32"]'
    with serve(data, log, _free_port(), auth_mode="header", trusted_proxies=elsewhere) as url:
        # the same headers from 127.0.0.1, now not on the list; naming the listed proxy
        # in X-Forwarded-For does not help either
        for extra in ({}, {"X-Forwarded-For": "10.9.9.9"}):
            page = visit(url, {**PROXY_HEADERS, **extra})
            expect(page.get_by_text(NOT_ALLOWED)).to_be_visible()
            expect(chat_box(page)).to_have_count(0)
            expect(page.get_by_text("Signed in as")).to_have_count(0)
            expect(page.get_by_test_id("stException")).to_have_count(0)
        page.screenshot(path=artifacts / "header-refused.png", full_page=True)


# -- the wiring and the rules, without a browser ------------------------------------------


def oidc_settings(tmp_path: Path, **values) -> Settings:
    base = dict(
        data_dir=tmp_path / "data",
        auth_mode="oidc",
        oidc_provider_url="https://id.example.com/realms/corp/",
        oidc_client_id="taimatsu",
        oidc_client_secret='se"cret\\',
    )
    return Settings(**{**base, **values})


def test_oidc_secrets_file_is_private_and_complete(tmp_path):
    args = streamlit_args(oidc_settings(tmp_path, ui_port=8600))
    assert args[0] == "--secrets.files" and len(args) == 2
    path = Path(args[1])
    assert path.parent == (tmp_path / "data").resolve()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    auth = tomllib.loads(path.read_text())["auth"]
    assert auth["server_metadata_url"] == (
        "https://id.example.com/realms/corp/.well-known/openid-configuration"
    )
    assert auth["client_id"] == "taimatsu" and auth["client_secret"] == 'se"cret\\'
    assert auth["redirect_uri"] == "http://127.0.0.1:{port}/oauth2callback"  # Streamlit's port
    assert "groups" in auth["client_kwargs"]["scope"].split()
    assert len(auth["cookie_secret"]) >= 32
    again = tomllib.loads(Path(streamlit_args(oidc_settings(tmp_path))[1]).read_text())["auth"]
    assert again["cookie_secret"] != auth["cookie_secret"]  # random when not set

    fixed = oidc_settings(
        tmp_path,
        oidc_cookie_secret="x" * 40,
        oidc_redirect_uri="https://ask.example.com/oauth2callback",
        oidc_provider_url="https://id.example.com/.well-known/openid-configuration",
    )
    auth = tomllib.loads(Path(streamlit_args(fixed)[1]).read_text())["auth"]
    assert auth["cookie_secret"] == "x" * 40
    assert auth["redirect_uri"] == "https://ask.example.com/oauth2callback"
    assert auth["server_metadata_url"] == "https://id.example.com/.well-known/openid-configuration"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"oidc_client_secret": None}, "needs TAIMATSU_OIDC_CLIENT_SECRET;"),
        (
            {"oidc_provider_url": "", "oidc_client_id": None},
            "needs TAIMATSU_OIDC_PROVIDER_URL, TAIMATSU_OIDC_CLIENT_ID;",
        ),
        ({"ui_address": "0.0.0.0"}, "set TAIMATSU_OIDC_REDIRECT_URI"),
        ({"oidc_redirect_uri": "https://ask.example.com/"}, "must end with /oauth2callback"),
    ],
)
def test_oidc_settings_missing_is_one_line(tmp_path, values, message):
    with pytest.raises(SystemExit) as exit_:
        streamlit_args(oidc_settings(tmp_path, **values))
    text = str(exit_.value.code)
    assert text.startswith("taimatsu: error: ") and message in text and "\n" not in text
    assert not (tmp_path / "data" / SECRETS_FILE).exists()


def test_taimatsu_ui_refuses_incomplete_oidc_settings(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_") or k == CACHE_ENV}
    env.update(TAIMATSU_DATA_DIR=str(tmp_path / "data"), TAIMATSU_AUTH_MODE="oidc")
    exe = Path(sys.executable).with_name("taimatsu")
    done = subprocess.run(
        [str(exe), "ui"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "taimatsu: error: OIDC sign-in needs TAIMATSU_OIDC_PROVIDER_URL, "
        "TAIMATSU_OIDC_CLIENT_ID, TAIMATSU_OIDC_CLIENT_SECRET; set them or choose another "
        "TAIMATSU_AUTH_MODE"
    ]


def test_other_modes_add_no_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")
    assert streamlit_args(Settings(data_dir=tmp_path)) == []
    assert not tmp_path.exists() or not list(tmp_path.iterdir())
    assert streamlit_args(Settings(data_dir=tmp_path, auth_mode="header")) == []
    assert os.environ["FORWARDED_ALLOW_IPS"] == ""  # uvicorn keeps the real peer address


@pytest.mark.parametrize(
    ("claims", "groups", "admin"),
    [
        ({"groups": ["staff", "taimatsu-admins"]}, ("staff", "taimatsu-admins"), True),
        ({"groups": "staff, sales;hr"}, ("hr", "sales", "staff"), False),
        ({}, ("everyone",), False),  # no claim: the default groups
        ({"groups": None}, ("everyone",), False),
        ({"groups": []}, ("everyone",), False),
        ({"groups": {"a": 1}}, ("everyone",), False),
        ({"groups": 7}, ("everyone",), False),
        ({"groups": [None, True, "", " staff "]}, ("staff",), False),
    ],
)
def test_groups_come_from_the_claim_or_default(tmp_path, claims, groups, admin):
    user = oidc_user(Settings(data_dir=tmp_path), {"sub": "u1", **claims})
    assert user is not None and user.groups == (*groups, "user:u1") and user.admin is admin


def test_oidc_identity_is_the_subject(tmp_path):
    settings = Settings(data_dir=tmp_path, oidc_groups_claim="realm_access.roles")
    claims = {
        "sub": "f3c1",
        "email": "alice@example.com",
        "realm_access": {"roles": ["taimatsu-admins"]},
    }
    user = oidc_user(settings, claims)
    assert user is not None and user.id == "f3c1" and user.admin
    assert user.name == "alice@example.com"
    assert oidc_user(settings, {"email": "x@example.com"}).id == "x@example.com"
    assert oidc_user(settings, {"name": "nobody"}) is None


def test_header_user_rules(tmp_path):
    settings = Settings(data_dir=tmp_path, auth_mode="header")
    dave = header_user(settings, None, ["dave"], ["staff,taimatsu-admins"])
    assert dave is not None and dave.admin
    assert dave.groups == ("staff", "taimatsu-admins", "user:dave")
    assert header_user(settings, None, ["dave"], []).groups == ("everyone", "user:dave")
    # only the identity names its user: a group that claims another user is dropped
    eve = header_user(settings, None, ["eve"], ["staff,user:dave"])
    assert eve is not None and eve.groups == ("staff", "user:eve")
    assert header_user(settings, "10.9.9.9", ["dave"], ["staff"]) is None  # not listed
    assert header_user(settings, None, [" "], ["staff"]) is None
    assert header_user(settings, None, [], ["staff"]) is None
    assert header_user(settings, None, ["eve", "dave"], ["staff"]) is None  # sent twice
    assert header_user(settings, None, ["eve"], ["staff", "taimatsu-admins"]) is None
    listed = Settings(data_dir=tmp_path, trusted_proxies=["10.9.0.0/16", "not an address"])
    assert header_user(listed, "10.9.9.9", ["dave"], []) is not None
    assert header_user(listed, None, ["dave"], []) is None  # loopback is not listed
    assert header_user(listed, "garbage", ["dave"], []) is None
    v6 = Settings(data_dir=tmp_path, trusted_proxies=["::1/128"])
    assert header_user(v6, None, ["dave"], []) is not None
