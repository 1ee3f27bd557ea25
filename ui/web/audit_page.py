"""The audit page (administrators only): every question from the page, the API and MCP,
filtered by user, day and document, exported as CSV, and the feedback people left.
Everything in it is shown literally (a dataframe, or plain()): questions are user input."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from assistant.answering import History
from assistant.audit import AuditLog, as_csv
from assistant.settings import Settings
from ui.web.auth import User
from ui.web.i18n import t

SHOWN = 500


def render(settings: Settings, user: User, history: History) -> None:
    if not user.admin:  # not listed for others; refuse a direct call too
        st.error(t("admin_only"))
        return
    st.title(t("audit_page"))
    who, days, document = st.columns([2, 3, 2])
    name = who.text_input(t("audit_user")).strip() or None
    today = date.today()
    chosen = days.date_input(t("audit_days"), (today - timedelta(days=7), today))
    since, until = (chosen[0], chosen[-1]) if chosen else (None, None)
    part = document.text_input(t("audit_document")).strip() or None
    entries = AuditLog(settings).entries(name, since, until, part, limit=None)
    st.caption(t("audit_count").format(count=len(entries)))
    rows = [
        {
            **entry,
            "groups": ", ".join(entry.get("groups", [])),
            "shown": "\n".join(entry.get("shown", [])),
            "cited": "\n".join(entry.get("cited", [])),
        }
        for entry in entries[:SHOWN]
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.download_button(
        t("audit_csv"),
        data=as_csv(entries),
        file_name="taimatsu-audit.csv",
        mime="text/csv",
        on_click="ignore",
        icon="⬇️",
    )
    st.subheader(t("audit_feedback"))
    feedback = history.feedback()
    if not feedback:
        st.caption(t("audit_no_feedback"))
        return
    st.dataframe(
        [
            {
                "created": date.fromtimestamp(f["created"]).isoformat(),
                "user": f["user_id"],
                "rating": "👍" if f["rating"] > 0 else "👎",
                "comment": f["comment"],
                "question": f["question"],
                "answer": f["answer"],
                "sources": "\n".join(s.get("source", "") for s in f["sources"]),
            }
            for f in feedback
        ],
        hide_index=True,
        width="stretch",
    )
