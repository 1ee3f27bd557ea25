"""Who is asking: three sign-in modes, chosen by TAIMATSU_AUTH_MODE.

- `single` (the default, for a laptop): one local user, in TAIMATSU_DEFAULT_GROUPS and
  an administrator.
- `header`: a reverse proxy that has signed the user in sets the user and group headers;
  they are believed only when the connection comes from an allow-listed proxy address
  (`taimatsu ui` makes sure that address is the connection's own, see ui/web/oidc.py).
- `oidc`: Streamlit's `st.login` against an OpenID Connect provider; the groups come from
  a configurable claim of the ID token (a list or a comma-separated string; a dotted name
  such as `realm_access.roles` reaches into an object).

A user whose sign-in names no groups is in TAIMATSU_DEFAULT_GROUPS; everybody is also in
`everyone` (added by retrieval). Administrators are the members of TAIMATSU_ADMIN_GROUPS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import streamlit as st

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


def _user(settings: Settings, user_id: str, name: str, groups: list[str]) -> User:
    groups = groups or list(settings.default_groups)
    admin = bool(set(groups) & set(settings.admin_groups))
    return User(user_id, name, tuple(groups), admin)


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
    return _user(settings, user_id, user_id, _groups(groups[0] if groups else ""))


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
    return _user(settings, user_id, name, _groups(_claim(claims, settings.oidc_groups_claim)))


def current_user(settings: Settings) -> User | None:
    """The signed-in user, or None when the page must ask them to sign in (oidc) or
    refuse them (header mode from an untrusted address or without a user header)."""
    if settings.auth_mode == "single":
        return User("local", "local user", tuple(settings.default_groups), True)
    if settings.auth_mode == "header":
        headers = st.context.headers
        return header_user(
            settings,
            st.context.ip_address,
            headers.get_all(settings.auth_user_header),
            headers.get_all(settings.auth_groups_header),
        )
    if not st.user.is_logged_in:
        return None
    return oidc_user(settings, st.user.to_dict())
