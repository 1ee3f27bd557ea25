"""The "API tokens" page: every signed-in user makes and revokes their own tokens, for the
API and MCP (ui/api). A token reads as its maker, in the groups they had when they made
it, and always expires (TOKEN_LIFETIMES): a user who leaves a group keeps it no longer
than that. The token is shown once, right after it is made."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from assistant.settings import Settings
from assistant.tokens import TokenStore
from ui.web.auth import User
from ui.web.chat import plain
from ui.web.i18n import t

TOKEN_LIFETIMES = (30, 90, 365)  # days


def _when(stamp: float | None) -> str:
    return "—" if stamp is None else datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")


def render(settings: Settings, user: User) -> None:
    st.title(t("tokens_page"))
    st.caption(t("tokens_help"))
    store = TokenStore(settings)
    state = st.session_state
    with st.form("token-create", clear_on_submit=True):
        name = st.text_input(t("tokens_name"), max_chars=80)
        days = st.selectbox(
            t("tokens_lifetime"), TOKEN_LIFETIMES, index=1, format_func=lambda d: f"{d} d"
        )
        if st.form_submit_button(t("tokens_create"), type="primary"):
            raw, _ = store.create(user.id, user.groups, days * 86400, name=name)
            state.token_shown = raw
    if raw := state.pop("token_shown", None):
        st.success(t("tokens_once"))
        st.code(raw, language=None)
    mine = [token for token in store.list(user.id) if not token.revoked]
    if not mine:
        st.caption(t("tokens_none"))
    for token in mine:
        label, button = st.columns([5, 1])
        label.markdown(
            plain(f"{token.name or token.id} · {', '.join(token.groups)}")
            + f"  \n{t('tokens_expires')} {_when(token.expires)}"
        )
        if button.button(t("tokens_revoke"), key=f"revoke-{token.id}"):
            store.revoke(token.id, user=user.id)  # only ever one of this user's own
            st.rerun()
