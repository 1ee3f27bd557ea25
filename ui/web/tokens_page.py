"""The "API tokens" page: every signed-in user makes and revokes their own tokens, for the
API and MCP (ui/api). A token reads as its maker, in the groups they had when they made
it, and always expires (TOKEN_LIFETIMES): a user who leaves a group keeps it no longer
than that. Administrators also make tokens for service accounts (a user name and groups
of their choosing, as `taimatsu token create --service` does) and revoke anyone's. A
token is shown once, right after it is made."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from assistant.settings import Settings
from assistant.tokens import TokenInfo, TokenStore
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
    show_tokens(store, mine, owner=user.id)
    if user.admin:
        service_tokens(store)


def show_tokens(store: TokenStore, tokens: list[TokenInfo], owner: str | None) -> None:
    """Each token with a revoke button (`owner`: only that user's tokens may be revoked)."""
    for token in tokens:
        label, button = st.columns([5, 1])
        who = "" if owner else f"{token.user} · "
        label.markdown(
            plain(f"{who}{token.name or token.id} · {', '.join(token.groups)}")
            + f"  \n{t('tokens_expires')} {_when(token.expires)}"
        )
        if button.button(t("tokens_revoke"), key=f"revoke-{token.id}"):
            store.revoke(token.id, user=owner)
            st.rerun()


def service_tokens(store: TokenStore) -> None:
    st.subheader(t("tokens_service"))
    with st.form("token-service", clear_on_submit=True):
        account = st.text_input(t("tokens_account"), max_chars=80)
        groups = st.text_input(t("tokens_groups"), max_chars=400)
        days = st.selectbox(
            t("tokens_lifetime"), TOKEN_LIFETIMES, index=2, format_func=lambda d: f"{d} d"
        )
        if st.form_submit_button(t("tokens_create")):
            names = [g.strip() for g in groups.split(",") if g.strip()]
            if not account.strip() or not names:
                st.error(t("tokens_service_needs"))
            else:
                raw, _ = store.create(account, names, days * 86400, service=True)
                st.session_state.token_shown = raw
                st.rerun()
    others = [token for token in store.list() if token.service and not token.revoked]
    show_tokens(store, others, owner=None)
