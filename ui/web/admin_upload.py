"""The administration page's upload: documents into TAIMATSU_UPLOAD_DIR with the groups
that may read them, checked and written by ingest/uploads.py, then ingested in the
background (ui/web/admin_jobs.py) with progress, and announced once searchable."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from assistant.settings import EVERYONE, Settings
from ingest import upload_checks, uploads
from ui.web import admin_jobs as jobs
from ui.web.admin_progress import poll, say
from ui.web.chat import plain
from ui.web.i18n import t


def _reason(code: str, params: dict[str, str]) -> str:
    return say(f"upload_{code}", **params)


def _upload(settings: Settings, files: list[Any], chosen: list[str], extra: str) -> dict:
    """Check, save and start indexing; the outcome as plain data kept in the session."""
    result: dict[str, Any] = {"refused": [], "saved": [], "renamed": [], "job": None}
    try:
        groups = uploads.clean_groups(chosen, extra)
        incoming = [uploads.Incoming(f.name, f.size, f.getvalue) for f in files]
        accepted, refused = uploads.check(settings, incoming)
        saved = uploads.save(settings, accepted, groups) if accepted else []
        folder = str(uploads.upload_folder(settings))
    except uploads.UploadError as exc:
        result["error"] = (exc.code, exc.params)
        return result
    result["refused"] = [(r.name, r.problem.code, r.problem.params) for r in refused]
    result["saved"] = [(s.original, s.name) for s in saved]
    result["renamed"] = [
        (a.original, s.name) for a, s in zip(accepted, saved, strict=True) if a.renamed
    ]
    result["groups"] = groups
    if saved:
        job, started = jobs.start(settings, jobs.UPLOAD, [folder], saved, groups)
        result["job"] = job.id if started else None
    return result


def _show_result(result: dict[str, Any] | None) -> None:
    if not result:
        return
    if "error" in result:
        st.error(_reason(*result["error"]))
        return
    for name, code, params in result["refused"]:
        st.error(t("upload_refused").format(name=plain(name), reason=_reason(code, params)))
    for name, saved in result["renamed"]:
        st.info(say("upload_renamed", name=name, saved=saved))
    if not result["saved"]:
        return
    job = jobs.get(result["job"])
    if job is None:  # another job was running: the files wait for the next sync
        st.warning(say("upload_not_indexed", error=t("admin_job_running")))
        return
    if job.running:
        poll(job.id)
        return
    step = job.steps[-1] if job.steps else None
    if step is None or step.summary is None:
        error = (t(step.error_key) if step.error_key else step.error) if step else None
        st.warning(say("upload_not_indexed", error=error or "?"))
        return
    for saved in job.searchable:
        st.success(say("upload_searchable", name=saved.name, groups=", ".join(job.groups)))
    for name, error in job.unreadable:
        st.error(say("upload_unreadable", name=name, error=error))


def render_upload(settings: Settings, known_groups: list[str]) -> None:
    st.subheader(t("admin_upload"))
    try:
        uploads.upload_settings_problem(settings)
    except uploads.UploadError as exc:
        st.info(_reason(exc.code, exc.params))
        return
    state = st.session_state
    generation = state.setdefault("admin_uploader", 0)
    limit_mb = uploads.size_limit(settings) / 2**20
    suffixes = upload_checks.accepted_suffixes()
    label = t("upload_files").format(files=settings.upload_max_files, mb=f"{limit_mb:g}")
    # The extensions filter the browser's file picker; the one MIME type among them makes
    # Streamlit leave the check of names to us (its own would fail the whole script run
    # before this code, with no message), so every file gets its one-line reason.
    files = st.file_uploader(
        label,
        type=[*suffixes, "text/plain"],
        accept_multiple_files=True,
        key=f"admin-uploader-{generation}",
        max_upload_size=max(1, math.ceil(limit_mb)),
    )
    st.caption(say("upload_folder_is", folder=settings.upload_dir))
    chosen = st.multiselect(
        t("upload_groups"), known_groups, default=[EVERYONE], key="admin-upload-groups"
    )
    extra = st.text_input(t("upload_more_groups"), key="admin-upload-extra")
    busy = jobs.running(settings) is not None
    if st.button(
        t("upload_button"),
        icon="📤",
        type="primary",
        key="admin-upload",
        disabled=busy or not files,
    ):
        state.admin_upload_result = _upload(settings, list(files or []), chosen, extra)
        state.admin_uploader = generation + 1  # empties the uploader
        st.rerun()
    _show_result(state.get("admin_upload_result"))
