"""The administration page (administrators only): index statistics and health."""

from __future__ import annotations

import streamlit as st

from assistant.answer import Answerer
from assistant.settings import Settings
from assistant.status import collect
from ui.auth import User
from ui.i18n import t


def render(settings: Settings, user: User, answerer: Answerer) -> None:
    if not user.admin:  # the page is not even listed for others; refuse a direct call too
        st.error(t("not_allowed"))
        return
    st.title(t("admin_page"))
    st.json(collect(settings))
