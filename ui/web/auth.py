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
`everyone` (added by retrieval), and in `user:<id>` (ui/identity.py), which a file's ACL may
name. Administrators are the members of TAIMATSU_ADMIN_GROUPS.
"""

from __future__ import annotations

import streamlit as st

from assistant.settings import Settings
from ui.identity import User, header_user, oidc_user, trusted_proxy

LOCAL_USER = "local"  # the one user of single mode (its name is shown translated)

__all__ = ["User", "current_user", "header_user", "oidc_user", "trusted_proxy"]


def current_user(settings: Settings) -> User | None:
    """The signed-in user, or None when the page must ask them to sign in (oidc) or
    refuse them (header mode from an untrusted address or without a user header)."""
    if settings.auth_mode == "single":
        # the local user reads their own uploads (My documents) as anyone reads theirs
        return User(LOCAL_USER, "local user", (*settings.default_groups, "user:local"), True)
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
