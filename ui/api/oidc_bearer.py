"""OpenID Connect bearer tokens for the API (TAIMATSU_AUTH_MODE=oidc): a JWT (an ID token,
or an access token the provider issues as a JWT) signed by the provider's keys.

The provider's discovery document (TAIMATSU_OIDC_PROVIDER_URL + /.well-known/...) names
its issuer and its key set (`jwks_uri`); both are fetched once and kept for an hour, and
the key set again when a token names a key it does not hold (the provider rotated its
keys; at most once a minute). The token must be signed with one of the provider's
asymmetric algorithms, come from that issuer, name TAIMATSU_API_OIDC_AUDIENCE (default:
the client id) in `aud`, and not be expired. Decoding and checking are joserfc's, the
JOSE library Authlib itself uses for ID tokens.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from assistant.settings import Settings
from ui.web.oidc import server_metadata_url

CACHE_SECONDS = 3600.0
REFETCH_SECONDS = 60.0
LEEWAY = 60  # seconds of clock difference allowed for exp, nbf, iat
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
INVALID = (
    "This sign-in token is not valid (not signed by the configured provider, or not for "
    "this service); sign in again."
)
EXPIRED = "This sign-in token has expired; sign in again."


class BearerError(Exception):
    """A token that is refused; its text is one sentence for the 401 body."""


class OidcVerifier:
    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched = 0.0
        self._refetched = 0.0

    def _get(self, url: str) -> dict[str, Any]:
        response = httpx.get(url, timeout=self.timeout, follow_redirects=False)
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError(f"{url} did not return a JSON object")
        return data

    def _load(self, force_keys: bool = False) -> tuple[dict[str, Any], KeySet]:
        with self._lock:
            now = time.monotonic()
            stale = self._metadata is None or now - self._fetched > CACHE_SECONDS
            if force_keys and now - self._refetched < REFETCH_SECONDS:
                force_keys = False
            if stale or force_keys:
                provider = self.settings.oidc_provider_url or ""
                try:
                    metadata = self._get(server_metadata_url(provider))
                    keys = KeySet.import_key_set(self._get(str(metadata["jwks_uri"])))
                except (httpx.HTTPError, ValueError, KeyError, JoseError) as exc:
                    if self._metadata is None or self._keys is None:
                        raise BearerError(
                            "The sign-in provider cannot be reached to check this token; "
                            "try again later or use an API token."
                        ) from exc
                else:
                    self._metadata, self._keys, self._fetched = metadata, keys, now
                    if force_keys:
                        self._refetched = now
            assert self._metadata is not None and self._keys is not None
            return self._metadata, self._keys

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token, or BearerError."""
        if not self.settings.oidc_provider_url:
            raise BearerError("OIDC sign-in is not configured; use an API token.")
        metadata, keys = self._load()
        registry = JWSRegistry(algorithms=ALGORITHMS)
        try:
            try:
                decoded = jwt.decode(token, keys, registry=registry)
            except InvalidKeyIdError:
                metadata, keys = self._load(force_keys=True)
                decoded = jwt.decode(token, keys, registry=registry)
            audience = self.settings.api_oidc_audience or self.settings.oidc_client_id or ""
            claims = jwt.JWTClaimsRegistry(
                leeway=LEEWAY,
                iss={"essential": True, "value": str(metadata.get("issuer", ""))},
                aud={"essential": True, "values": [audience]},
                exp={"essential": True},
                sub={"essential": True},
            )
            claims.validate(decoded.claims)
        except ExpiredTokenError as exc:
            raise BearerError(EXPIRED) from exc
        except (JoseError, ValueError) as exc:
            raise BearerError(INVALID) from exc
        return dict(decoded.claims)
