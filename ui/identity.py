"""Who is asking, without Streamlit: the user record and the rules that turn a trusted
proxy's headers or an OpenID Connect token's claims into a user, shared by the page
(ui/web/auth.py) and the HTTP API (ui/api/identity.py).

A user whose sign-in names no groups is in TAIMATSU_DEFAULT_GROUPS; everybody is also in
`everyone` (added by retrieval). Administrators are the members of TAIMATSU_ADMIN_GROUPS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assistant.settings import Settings

LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


@dataclass(frozen=True)
class User:
    id: str
    name: str
    groups: tuple[str, ...]
    admin: bool


def _groups(value: object) -> list[str]:
    """Group names from a claim or header value; anything unusable gives none."""
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    if not isinstance(value, list | tuple):
        return []
    names = (g for g in value if isinstance(g, str | int) and not isinstance(g, bool))
    return sorted({str(g).strip() for g in names if str(g).strip()})


USER_PREFIX = "user:"  # a reader named by a file's ACL (ingest/posix_access.py)


def make_user(settings: Settings, user_id: str, name: str, groups: list[str]) -> User:
    """The user with their groups (TAIMATSU_DEFAULT_GROUPS when the sign-in names none)
    and `user:<id>`, so that a file whose permissions name this user is theirs to read.
    Only the identity names its user: a `user:` entry among the groups it was given (a
    claim, a header, a token's groups) is dropped."""
    groups = [g for g in groups if not g.startswith(USER_PREFIX)] or list(settings.default_groups)
    admin = bool(set(groups) & set(settings.admin_groups))
    return User(user_id, name, (*groups, f"{USER_PREFIX}{user_id}"), admin)


def trusted_proxy(settings: Settings, address: str | None) -> bool:
    """Whether a connection from `address` may name the user. Streamlit reports no
    address for a loopback connection (127.0.0.1 or ::1)."""
    try:
        candidates = LOOPBACK if address is None else (ipaddress.ip_address(address),)
    except ValueError:
        return False
    for allowed in settings.trusted_proxies:
        try:
            network = ipaddress.ip_network(allowed, strict=False)
        except ValueError:
            continue
        if any(candidate in network for candidate in candidates):
            return True
    return False


def header_user(
    settings: Settings, address: str | None, users: Sequence[str], groups: Sequence[str]
) -> User | None:
    """The user named by the proxy's headers (every value each header was sent with), or
    None: from an address not allow-listed, without a user, or with a header sent twice
    (a proxy that adds its header after the browser's would otherwise be outvoted)."""
    if not trusted_proxy(settings, address) or len(users) != 1 or len(groups) > 1:
        return None
    user_id = users[0].strip()
    if not user_id:
        return None
    return make_user(settings, user_id, user_id, _groups(groups[0] if groups else ""))


def _claim(claims: Mapping[str, object], name: str) -> object:
    if name in claims:
        return claims[name]
    node: object = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def oidc_user(settings: Settings, claims: Mapping[str, object]) -> User | None:
    """The user of an ID token's claims. The id is the subject (`sub`): unique and never
    reassigned by the provider, unlike an e-mail address, so nobody can take over another
    user's conversations by changing their address."""
    user_id = _text(claims.get("sub")) or _text(claims.get("email"))
    if not user_id:
        return None
    name = (
        _text(claims.get("name"))
        or _text(claims.get("preferred_username"))
        or _text(claims.get("email"))
        or user_id
    )
    return make_user(settings, user_id, name, _groups(_claim(claims, settings.oidc_groups_claim)))
