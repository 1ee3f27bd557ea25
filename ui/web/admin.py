"""The administration page (administrators only): what the index holds (documents and
chunks, by file type and by source folder), the health of the index and of the model server, the
last ingestion runs and their failures, "Sync now", and uploads (ui/web/admin_upload.py).
While an ingestion runs — the page's own, or another process's such as the cron's — its
progress (files, chunks, files/s, ETA) is shown with a button that cancels it.

Long work runs in the background (ui/web/admin_jobs.py) and shows its progress here. Names
of files and folders, and reasons from the pipeline, are shown literally (plain()).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import streamlit as st

from assistant.answering import Answerer
from assistant.errors import TaimatsuError
from assistant.index import Index, groups_in_index, index_stats
from assistant.settings import EVERYONE, Settings
from assistant.status import collect
from ingest.runs import last_run_by_source, recent_runs, request_cancel, run_outcome
from ui.web import admin_jobs as jobs
from ui.web.admin_progress import others, poll, poll_others, say, show_failures, show_steps
from ui.web.admin_upload import render_upload
from ui.web.auth import User
from ui.web.chat import plain
from ui.web.i18n import t

RUNS_SHOWN = 10


@st.cache_data(ttl=30, show_spinner=False)
def _health(settings_json: str) -> dict[str, Any]:
    """Index and model-server health (a server may take its timeout to answer: kept 30 s)."""
    settings = Settings.model_validate_json(settings_json)
    return collect(settings)


@st.cache_data(ttl=60, show_spinner=False)
def _stats(settings_json: str, _index: Index, generation: str) -> dict[str, Any]:
    """Counts, versions and groups; recomputed after each job (`generation`)."""
    del settings_json, generation  # cache keys
    try:
        stats = index_stats(_index)
        stats["groups"] = groups_in_index(_index)
    except TaimatsuError as exc:
        return {"error": str(exc)}
    stats["engine"] = _index.engine_version()
    stats["exists"] = _index.exists()
    return stats


def _generation(settings: Settings) -> str:
    job = jobs.current(settings)
    return f"{job.id}:{job.finished}" if job else ""


def _last_run(run: dict[str, Any] | None) -> str:
    """A source's last run in one cell: when, then what it did or why it was refused."""
    if run is None:
        return ""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.get("finished") or 0))
    if run.get("refused"):
        return f"{when} · {t('admin_refused_short')}"
    outcome = run_outcome(run)
    if run.get("cancelled"):
        when += f" · {t('admin_cancelled_short')}"
    done = f"+{outcome['added']} ~{outcome['updated']} -{outcome['deleted']}"
    failed = f" · {outcome['failed']} {t('admin_col_failed')}" if outcome["failed"] else ""
    return f"{when} · {done}{failed}"


def show_index(stats: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
    """`runs`: each source folder's last run (ingest/runs.py), shown beside its counts."""
    st.subheader(t("admin_index"))
    if "error" in stats:
        st.error(plain(f"{t('admin_index_error')}: {stats['error']}"))
        return
    if not stats["exists"]:
        st.info(t("admin_no_index"))
        return
    documents, chunks = st.columns(2)
    documents.metric(t("admin_documents"), stats["documents"])
    chunks.metric(t("admin_chunks"), stats["chunks"])
    counts = {t("admin_documents"): "documents", t("admin_chunks"): "chunks"}
    by_kind, by_root = st.columns([2, 3])
    with by_kind:
        st.markdown(f"**{t('admin_by_kind')}**")
        rows = [
            {t("admin_col_kind"): row["kind"]} | {k: row[v] for k, v in counts.items()}
            for row in stats["by_kind"]
        ]
        st.dataframe(rows, hide_index=True, width="stretch")
    with by_root:
        st.markdown(f"**{t('admin_by_root')}**")
        rows = [
            {k: row[v] for k, v in counts.items()}
            | {t("admin_col_last_run"): _last_run(runs.get(row["root"]))}
            | {t("admin_col_root"): (runs.get(row["root"]) or {}).get("url") or row["root"]}
            for row in stats["by_root"]
        ]
        st.dataframe(rows, hide_index=True, width="stretch")


def show_health(settings: Settings, stats: dict[str, Any], health: dict[str, Any]) -> None:
    title, refresh = st.columns([4, 1])
    title.subheader(t("admin_health"))
    if refresh.button(t("admin_refresh"), icon="🔁", key="admin-refresh"):
        _health.clear()
        _stats.clear()
        st.rerun()
    index = health["index"]
    engine = stats.get("engine") or ""
    where = plain(f"{index['backend']}{f' — {engine}' if engine else ''}")
    if index["healthy"]:
        st.success(f"{t('admin_index_ok')} · {t('admin_backend')}: {where}")
        model = index.get("embedding_model") or {}
        if model:
            st.caption(plain(f"{t('admin_model')}: {model.get('name')} ({model.get('dim')})"))
    else:
        st.error(plain(f"{t('admin_index_error')}: {index.get('error', '')}") + f" · {where}")
    backend = health["llm"]["backend"]
    for server in health["llm"]["servers"]:
        values = {
            "host": server["url"],
            "version": server.get("version") or "?",
            "model": server["model"],
        }
        if not server["reachable"]:
            st.error(say(f"admin_{backend}_down", **values))
        elif server.get("key_refused"):
            st.error(say("admin_llm_key_refused", **values))
        elif not server["model_present"]:
            st.warning(say(f"admin_{backend}_missing", **values))
        else:
            st.success(say(f"admin_{backend}_ok", **values))


def show_runs(settings: Settings) -> None:
    st.subheader(t("admin_runs"))
    runs = recent_runs(settings.data_dir, RUNS_SHOWN)
    if not runs:
        st.caption(t("admin_no_runs"))
        return
    columns = ["added", "updated", "unchanged", "deleted"]
    rows = []
    for run in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.get("finished", 0)))
        row = {t("admin_col_finished"): when}
        row |= {t(f"admin_col_{name}"): run.get(name, 0) for name in columns}
        row[t("admin_col_failed")] = len(run.get("failed", []))
        row[t("admin_col_seconds")] = round(float(run.get("seconds", 0)), 1)
        # last: long paths do not hide counts
        row[t("admin_col_root")] = run.get("url") or run.get("root", "")
        rows.append(row)
    st.dataframe(rows, hide_index=True, width="stretch")
    for run, row in zip(runs, rows, strict=True):
        when, root = row[t("admin_col_finished")], run.get("url") or run.get("root", "")
        if run.get("refused"):  # a run that would have opened or deleted documents
            st.error(say("admin_refused", root=root, when=when, reason=run["refused"]))
            continue
        if run.get("cancelled"):
            st.warning(say("admin_cancelled", root=root, when=when, reason=run["cancelled"]))
        failed = run.get("failed", [])
        label = say(
            "admin_failures",
            count=len(failed),
            root=run.get("url") or run.get("root", ""),
            when=row[t("admin_col_finished")],
        )
        show_failures(failed, label)


def sync_folders(settings: Settings, roots: list[str]) -> list[str]:
    """Every folder the index was built from, and the upload folder if there is one."""
    folders = list(roots)
    if settings.upload_dir is not None and Path(settings.upload_dir).is_dir():
        upload = str(Path(settings.upload_dir).resolve())
        if upload not in folders:
            folders.append(upload)
    return folders


def show_sync(settings: Settings, index: Index) -> None:
    st.subheader(t("admin_sync"))
    st.caption(t("admin_sync_help"))
    try:
        roots = index.roots()
    except TaimatsuError:
        roots = []
    folders = sync_folders(settings, roots)
    state = st.session_state
    running = jobs.running(settings)
    if st.button(
        t("admin_sync"),
        icon="🔄",
        type="primary",
        key="admin-sync",
        disabled=running is not None or not folders,
    ):
        job, started = jobs.start(settings, jobs.SYNC, folders)
        if started:
            state.admin_sync_job = job.id
        st.rerun()  # drawn again with the button disabled and the progress below
    if not folders:
        st.info(t("admin_sync_nothing"))
    elsewhere = others(settings.data_dir)
    if (running is not None or elsewhere) and st.button(
        t("admin_cancel"), icon="⏹️", key="admin-cancel"
    ):
        request_cancel(settings.data_dir)
        st.info(t("admin_cancel_requested"))
    if elsewhere:
        poll_others(str(settings.data_dir))
    if running is not None:
        upload = (state.get("admin_upload_result") or {}).get("job")
        if running.id not in (state.get("admin_sync_job"), upload):  # another session's job
            st.info(t("admin_job_running"))
            poll(running.id)
            return
        if running.kind == jobs.SYNC:
            poll(running.id)
            return
    finished = jobs.get(state.get("admin_sync_job"))
    if finished is not None and not finished.running:
        st.success(t("admin_sync_done"))
        show_steps(finished)


def render(settings: Settings, user: User, answerer: Answerer) -> None:
    if not user.admin:  # the page is not even listed for others; refuse a direct call too
        st.error(t("admin_only"))
        return
    st.title(t("admin_page"))
    index = answerer.searcher.index
    settings_json = settings.model_dump_json()
    health = _health(settings_json)
    stats = _stats(settings_json, index, _generation(settings))
    show_index(stats, last_run_by_source(settings.data_dir))
    show_health(settings, stats, health)
    show_sync(settings, index)
    render_upload(settings, sorted({EVERYONE, *settings.default_groups, *stats.get("groups", [])}))
    show_runs(settings)
