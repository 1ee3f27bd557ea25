"""The "My documents" page: every signed-in user uploads a few files readable by them alone
(ingest/personal.py: the administrator upload's checks, then the quota, then indexed at once
for `user:<id>`), sees them listed with their passages in the index, and removes them (their
chunks leave the index). Refusals are one sentence each, as the administration upload's."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from assistant.errors import IngestBusy, StoreBusy, TaimatsuError
from assistant.index import Index
from assistant.settings import Settings
from ingest import personal, upload_checks, uploads
from ui.web.admin_jobs import ingest_embedder
from ui.web.admin_progress import say
from ui.web.auth import User
from ui.web.chat import plain
from ui.web.i18n import t


def _reason(code: str, params: dict[str, str]) -> str:
    return say(f"upload_{code}", **params)


def _upload(settings: Settings, user: User, files: list[Any]) -> dict[str, Any]:
    """Check, save and index; the outcome as plain data kept in the session."""
    incoming = [uploads.Incoming(f.name, f.size, f.getvalue) for f in files]
    try:
        added = personal.add(settings, user.id, incoming, ingest_embedder(settings))
    except uploads.UploadError as exc:
        return {"error": (exc.code, exc.params)}
    return {
        "refused": [(r.name, r.problem.code, r.problem.params) for r in added.refused],
        "renamed": added.renamed,
        "searchable": added.searchable,
        "unreadable": added.unreadable,
    }


def _show(result: dict[str, Any] | None) -> None:
    if not result:
        return
    if "error" in result:
        st.error(_sentence(_reason(*result["error"])))
        return
    for name, code, params in result["refused"]:
        st.error(t("upload_refused").format(name=plain(name), reason=_reason(code, params)))
    for name, saved in result["renamed"]:
        st.info(say("upload_renamed", name=name, saved=saved))
    for name in result["searchable"]:
        st.success(say("mine_searchable", name=name))
    for name, error in result["unreadable"]:
        st.error(say("mine_unreadable", name=name, error=error))


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


def _remove(settings: Settings, user: User, name: str) -> tuple[str, str]:
    try:
        removed = personal.remove(settings, user.id, name)
    except (IngestBusy, StoreBusy):
        return "error", t("mine_busy")
    except TaimatsuError as exc:
        return "error", plain(str(exc))
    if not removed:  # gone already (another tab)
        return "info", say("mine_removed", name=name)
    return "success", say("mine_removed", name=name)


def remove_key(name: str) -> str:
    return f"mine-remove-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def render(settings: Settings, user: User, index: Index) -> None:
    st.title(t("mine_page"))
    st.caption(t("mine_help"))
    try:
        personal.off_problem(settings)
    except uploads.UploadError as exc:
        st.info(_sentence(_reason(exc.code, exc.params)))
        return
    state = st.session_state
    if notice := state.pop("mine_notice", None):
        getattr(st, notice[0])(notice[1])
    _show(state.pop("mine_result", None))

    now = personal.usage(settings, user.id)
    st.caption(
        say(
            "mine_usage",
            files=now.files,
            max_files=settings.personal_max_files,
            mb=now.mb,
            max_mb=f"{settings.personal_max_mb:g}",
        )
    )
    generation = state.setdefault("mine_uploader", 0)
    limit_mb = uploads.size_limit(settings) / 2**20
    files = st.file_uploader(
        t("mine_files").format(mb=f"{limit_mb:g}"),
        type=[*upload_checks.accepted_suffixes(), "text/plain"],  # see admin_upload.py
        accept_multiple_files=True,
        key=f"mine-uploader-{generation}",
        max_upload_size=max(1, math.ceil(limit_mb)),
    )
    upload = st.button(
        t("mine_upload"), icon="📤", type="primary", key="mine-upload", disabled=not files
    )
    if upload:
        with st.spinner(t("mine_indexing")):
            state.mine_result = _upload(settings, user, list(files or []))
        state.mine_uploader = generation + 1  # empties the uploader
        st.rerun()

    try:
        mine = personal.documents(settings, user.id, index)
    except TaimatsuError as exc:
        st.error(plain(str(exc)))
        return
    if not mine:
        st.caption(t("mine_none"))
    for doc in mine:
        label, button = st.columns([5, 1])
        when = datetime.fromtimestamp(doc.modified, UTC).strftime("%Y-%m-%d %H:%M")
        indexed = say("mine_chunks", chunks=doc.chunks) if doc.chunks else t("mine_not_indexed")
        label.markdown(f"**{plain(doc.name)}**  \n{uploads._mb(doc.size)} MB · {when} · {indexed}")
        if button.button(t("mine_remove"), key=remove_key(doc.name)):
            state.mine_notice = _remove(settings, user, doc.name)
            st.rerun()
