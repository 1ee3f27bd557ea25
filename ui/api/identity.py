"""Who is asking the API, and how often.

Every route but /openapi.json and /healthz needs an identity, found in this order:

1. `Authorization: Bearer <token>` with a Taimatsu API token (assistant/tokens.py): the
   token's user and groups. In `oidc` mode a bearer that is not a Taimatsu token is taken
   as an OpenID Connect ID or access token (a JWT) and checked against the provider's
   keys (ui/api/oidc_bearer.py); its claims give the user as the page's sign-in does.
2. In `header` mode, without an Authorization header: the trusted proxy's user and group
   headers, believed exactly as the page believes them (ui/identity.py), judged by the
   connection's own address (uvicorn runs without proxy-header rewriting).

Anything else is a 401 with one sentence. The groups come from the identity, never from
the request. Each identity (a token, an OIDC subject, a proxy user) may make
TAIMATSU_API_RATE_LIMIT requests a minute; past that, 429 with Retry-After.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from assistant.settings import Settings
from assistant.tokens import PREFIX, TokenError, TokenStore
from ui.api.errors import ApiError
from ui.api.oidc_bearer import BearerError, OidcVerifier
from ui.identity import User, header_user, make_user, oidc_user

WINDOW = 60.0
MISSING = (
    "This request carries no credentials: send `Authorization: Bearer <token>` with a token "
    "from the page or `taimatsu token create`."
)


@dataclass(frozen=True)
class Asker:
    """A user and the key their requests are counted under."""

    user: User
    key: str


class RateLimiter:
    """A sliding one-minute window per key, in memory (one API process)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str, now: float | None = None) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and seen[0] <= now - WINDOW:
                seen.popleft()
            if len(seen) >= self.per_minute:
                wait = max(1, math.ceil(seen[0] + WINDOW - now))
                raise ApiError(
                    429,
                    f"Too many requests: at most {self.per_minute} a minute; "
                    f"try again in {wait} seconds.",
                    "rate_limited",
                    {"Retry-After": str(wait)},
                )
            seen.append(now)
            if len(self._seen) > 10_000:  # forget keys idle for a whole window
                for idle in [k for k, v in self._seen.items() if not v or v[-1] <= now - WINDOW]:
                    del self._seen[idle]


class Authenticator:
    def __init__(self, settings: Settings, tokens: TokenStore) -> None:
        self.settings = settings
        self.tokens = tokens
        self.oidc = OidcVerifier(settings) if settings.auth_mode == "oidc" else None
        self.limiter = RateLimiter(settings.api_rate_limit)

    def identify(self, headers: dict[str, list[str]], address: str | None) -> Asker:
        """The asker of a request (`headers`: every value of each header, lower-case
        names), or ApiError 401; then their rate is checked (ApiError 429)."""
        asker = self._asker(headers, address)
        self.limiter.check(asker.key)
        return asker

    def _asker(self, headers: dict[str, list[str]], address: str | None) -> Asker:
        settings = self.settings
        authorization = headers.get("authorization", [])
        if len(authorization) > 1:
            raise ApiError(401, "Send one Authorization header, not several.", "unauthorized")
        if authorization:
            scheme, _, credential = authorization[0].strip().partition(" ")
            credential = credential.strip()
            if scheme.lower() != "bearer" or not credential:
                raise ApiError(
                    401, "Send the token as `Authorization: Bearer <token>`.", "unauthorized"
                )
            if self.oidc is not None and not credential.startswith(PREFIX):
                try:
                    claims = self.oidc.verify(credential)
                except BearerError as exc:
                    raise ApiError(401, str(exc), "unauthorized") from None
                user = oidc_user(settings, claims)
                if user is None:
                    raise ApiError(401, "This sign-in token names no user.", "unauthorized")
                return Asker(user, f"oidc:{user.id}")
            try:
                info = self.tokens.verify(credential)
            except TokenError as exc:
                raise ApiError(401, str(exc), "unauthorized") from None
            return Asker(make_user(settings, info.user, info.user, list(info.groups)), info.id)
        if settings.auth_mode == "header":
            user = header_user(
                settings,
                address,
                headers.get(settings.auth_user_header.lower(), []),
                headers.get(settings.auth_groups_header.lower(), []),
            )
            if user is not None:
                return Asker(user, f"header:{user.id}")
        raise ApiError(401, MISSING, "unauthorized")
