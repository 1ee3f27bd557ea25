"""Who is asking: three sign-in modes, chosen by TAIMATSU_AUTH_MODE.

- `single` (the default, for a laptop): one local user, in TAIMATSU_DEFAULT_GROUPS and
  an administrator.
- `header`: a reverse proxy that has signed the user in sets the user and group headers;
  they are believed only when the connection comes from an allow-listed proxy address.
- `oidc`: Streamlit's `st.login` against an OpenID Connect provider; the groups come from
  a configurable claim of the ID token.

Everybody is also in `everyone`. Administrators are the members of TAIMATSU_ADMIN_GROUPS.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import streamlit as st

from assistant.settings import Settings


@dataclass(frozen=True)
class User:
    id: str
    name: str
    groups: tuple[str, ...]
    admin: bool


def _groups(value: object) -> list[str]:
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    if not isinstance(value, list | tuple):
        return []
    return sorted({str(g).strip() for g in value if str(g).strip()})


def _user(settings: Settings, user_id: str, name: str, groups: list[str]) -> User:
    groups = groups or list(settings.default_groups)
    admin = bool(set(groups) & set(settings.admin_groups))
    return User(user_id, name, tuple(groups), admin)


def trusted_proxy(settings: Settings, address: str | None) -> bool:
    """Streamlit reports no address for a loopback connection."""
    candidate = ipaddress.ip_address(address or "127.0.0.1")
    for allowed in settings.trusted_proxies:
        try:
            if candidate in ipaddress.ip_network(allowed, strict=False):
                return True
        except ValueError:
            continue
    return False


def current_user(settings: Settings) -> User | None:
    """The signed-in user, or None when the page must ask them to sign in (oidc) or
    refuse them (header mode from an untrusted address)."""
    if settings.auth_mode == "single":
        return User("local", "local user", tuple(settings.default_groups), True)
    if settings.auth_mode == "header":
        if not trusted_proxy(settings, st.context.ip_address):
            return None
        headers = st.context.headers
        user_id = (headers.get(settings.auth_user_header) or "").strip()
        if not user_id:
            return None
        groups = _groups(headers.get(settings.auth_groups_header) or "")
        return _user(settings, user_id, user_id, groups)
    if not st.user.is_logged_in:
        return None
    claims = st.user.to_dict()
    user_id = str(claims.get("email") or claims.get("sub") or "")
    name = str(claims.get("name") or user_id)
    return _user(settings, user_id, name, _groups(claims.get(settings.oidc_groups_claim)))
