"""The Streamlit page: sign-in, the sidebar (language, conversations), and the pages
(ask; my documents; API tokens; administration and audit for administrators). Errors reach
the user as one sentence; the details go to the server log.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from assistant.answering import Answerer, History
from assistant.embedder import Embedder, local_options
from assistant.retrieval import Searcher
from assistant.settings import Settings
from ui.web import admin, audit_page, chat, mine_page, tokens_page
from ui.web.auth import LOCAL_USER, User, current_user
from ui.web.chat import plain
from ui.web.i18n import language_switch, t

log = logging.getLogger("taimatsu.ui")


@st.cache_resource(show_spinner=False)
def _embedder(options: tuple) -> Embedder:
    """One model per process for each set of local-model options (`local_options`)."""
    return Embedder(**dict(options))


@st.cache_resource(show_spinner=False)
def _answerer(settings_json: str) -> Answerer:
    settings = Settings.model_validate_json(settings_json)
    if settings.embed_backend != "local":  # a served model: nothing to load, nothing to share
        return Answerer(settings, Searcher(settings))
    embedder = _embedder(tuple(sorted(local_options(settings).items())))
    searcher = Searcher(settings, embedder)
    return Answerer(settings, searcher)


@st.cache_resource(show_spinner=False)
def _history(data_dir: str) -> History:
    return History(Path(data_dir))


def sign_in(settings: Settings) -> None:
    st.title("Taimatsu 松明")
    language_switch()
    if settings.auth_mode == "oidc":
        st.info(t("sign_in_needed"))
        if st.button(t("sign_in"), type="primary"):
            st.login()
    else:
        st.error(t("not_allowed"))


def sidebar(settings: Settings, user: User, history: History) -> None:
    state = st.session_state
    with st.sidebar:
        name = t("local_user") if user.id == LOCAL_USER else user.name  # single mode
        st.caption(plain(f"{t('signed_in_as')} {name}"))
        if settings.auth_mode == "oidc" and st.button(t("sign_out")):
            st.logout()
        language_switch()
        if st.button(t("new_chat"), icon="➕", use_container_width=True):
            state.turns, state.conversation = [], None
            st.rerun()
        st.subheader(t("conversations"))
        past = history.conversations(user.id)
        if not past:
            st.caption(t("no_conversations"))
        for conversation in past:
            current = conversation.id == state.get("conversation")
            if st.button(
                plain(conversation.title),
                key=f"conv-{conversation.id}",
                type="primary" if current else "tertiary",
                use_container_width=True,
            ):
                state.conversation = conversation.id
                state.turns = history.turns(user.id, conversation.id)
                st.rerun()


def main() -> None:
    st.set_page_config(page_title="Taimatsu", page_icon="🔥", layout="centered")
    settings = Settings()
    user = current_user(settings)
    if user is None:
        sign_in(settings)
        return
    history = _history(str(settings.data_dir))
    answerer = _answerer(settings.model_dump_json())

    def ask_page() -> None:
        st.title("Taimatsu 松明")
        st.caption(t("caption"))
        chat.render(answerer, history, user)

    def admin_page() -> None:
        admin.render(settings, user, answerer)

    def my_documents() -> None:
        mine_page.render(settings, user, answerer.searcher.index)

    def token_page() -> None:
        tokens_page.render(settings, user)

    def audit_view() -> None:
        audit_page.render(settings, user, history)

    pages = [
        st.Page(ask_page, title=t("chat_page"), icon="💬", url_path="ask", default=True),
        st.Page(token_page, title=t("tokens_page"), icon="🔑", url_path="tokens"),
    ]
    if settings.personal_max_files > 0:
        pages.insert(1, st.Page(my_documents, title=t("mine_page"), icon="📁", url_path="mine"))
    if user.admin:
        pages.append(st.Page(admin_page, title=t("admin_page"), icon="🛠️", url_path="admin"))
        pages.append(st.Page(audit_view, title=t("audit_page"), icon="📜", url_path="audit"))
    page = st.navigation(pages)
    sidebar(settings, user, history)
    page.run()


main()
