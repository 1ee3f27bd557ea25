"""OIDC bearer tokens at the API (TAIMATSU_AUTH_MODE=oidc): an ID token from a real OpenID
provider on 127.0.0.1 (oidc-provider-mock), got through its authorization-code flow,
is checked against the provider's published keys; a forged, foreign or expired one is
refused with one sentence. API tokens keep working beside them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from oidc_provider_mock import User as ProviderUser
from oidc_provider_mock import app as provider_app

from assistant.settings import Settings
from assistant.tokens import TokenStore
from tests.api.server import ApiServer
from tests.conftest import closed_port_url, serve_wsgi

# the mock provider still uses authlib's older API for its ID tokens
pytestmark = pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")

CLIENT = "taimatsu-api"
CALLBACK = "http://127.0.0.1:9/callback"  # never opened: the code is read off the redirect
USERS = [ProviderUser(sub="alice", claims={"name": "Alice", "groups": ["staff", "hr"]})]


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    yield from serve_wsgi(provider_app(user_claims=USERS))


@pytest.fixture(scope="module")
def stale_provider() -> Iterator[str]:
    """A provider whose tokens are issued already expired (past the allowed clock skew)."""
    yield from serve_wsgi(provider_app(user_claims=USERS, access_token_max_age=timedelta(hours=-1)))


def id_token(provider: str, client_id: str = CLIENT, sub: str = "alice") -> str:
    """An ID token through the authorization-code flow, as a browser and a client would."""
    with httpx.Client(base_url=provider, timeout=30) as http:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": CALLBACK,
            "scope": "openid profile",
            "nonce": "n-0",
            "state": "s-0",
        }
        granted = http.post("/oauth2/authorize", params=params, data={"sub": sub})
        assert granted.status_code == 302, granted.text
        code = parse_qs(urlparse(granted.headers["location"]).query)["code"][0]
        tokens = http.post(
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": CALLBACK,
                "client_id": client_id,
                "client_secret": "secret",
            },
        )
        assert tokens.status_code == 200, tokens.text
        return tokens.json()["id_token"]


def oidc_settings(tmp_path, provider: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        ollama_host=closed_port_url(),
        auth_mode="oidc",
        oidc_provider_url=provider,
        oidc_client_id=CLIENT,
        oidc_client_secret="secret",
    )


def status(api: ApiServer, token: str) -> httpx.Response:
    return httpx.get(
        f"{api.url}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def test_an_oidc_id_token_names_the_user_and_groups(tmp_path, provider, embedder):
    conf = oidc_settings(tmp_path, provider)
    good = id_token(provider)
    header, payload, signature = good.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    foreign = id_token(provider, client_id="another-app")
    with ApiServer(conf, embedder) as api:
        mine = status(api, good)
        assert mine.status_code == 200, mine.text
        assert mine.json()["user"] == {"id": "alice", "groups": ["hr", "staff", "user:alice"]}
        for bad in (forged, foreign, "not-a-jwt"):
            refused = status(api, bad)
            assert refused.status_code == 401
            assert "sign-in token is not valid" in refused.json()["error"]["message"]
        api_token = TokenStore(conf).create("bot", ["it"])[0]
        assert status(api, api_token).json()["user"] == {"id": "bot", "groups": ["it", "user:bot"]}


def test_an_expired_oidc_token_is_refused(tmp_path, stale_provider, embedder):
    conf = oidc_settings(tmp_path, stale_provider)
    with ApiServer(conf, embedder) as api:
        refused = status(api, id_token(stale_provider))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "This sign-in token has expired; sign in again."
