"""Showing the administration page's background jobs: a progress bar polled while a job
runs (only that part of the page reruns), then each folder's summary and failures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import streamlit as st

from ingest.runs import live_runs
from ui.web import admin_jobs as jobs
from ui.web.chat import plain
from ui.web.i18n import t

POLL_SECONDS = 1.0
MAX_FAILURES_SHOWN = 100


def say(key: str, **params: Any) -> str:
    """A translated message with its values shown literally (names, paths, reasons)."""
    return t(key).format(**{name: plain(str(value)) for name, value in params.items()})


def _progress_text(job: jobs.Job) -> str:
    step = min(job.current, len(job.folders) - 1)
    where = {"step": step + 1, "steps": len(job.folders), "folder": job.folders[step]}
    if not job.files_total:
        return say("admin_progress_starting", **where)
    eta = job.eta
    return say(
        "admin_progress",
        **where,
        done=job.files_done,
        total=job.files_total,
        chunks=job.chunks,
        rate=f"{job.rate:.1f}",
        eta="?" if eta is None else f"{eta:.0f}",
    )


@st.fragment(run_every=POLL_SECONDS)
def poll(job_id: str) -> None:
    """The running job's progress, refreshed every second; once it has finished, the
    whole page reruns to show the outcome (and enable the buttons again)."""
    job = jobs.get(job_id)
    if job is None or not job.running:
        st.rerun()
    st.progress(job.fraction, text=_progress_text(job))


def _live_text(run: dict[str, Any]) -> str:
    done, total = int(run.get("done", 0)), int(run.get("total", 0))
    if not total:
        return say("admin_live_starting", folder=run.get("root", ""))
    elapsed = max(0.0, float(run.get("updated", 0)) - float(run.get("started", 0)))
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f"{(total - done) / rate:.0f}" if done and rate else "?"
    return say(
        "admin_live_run",
        folder=run.get("root", ""),
        done=done,
        total=total,
        chunks=run.get("chunks", 0),
        rate=f"{rate:.1f}",
        eta=eta,
    )


def others(data_dir: Path) -> list[dict[str, Any]]:
    """Ingestion runs of other processes going on now (the cron's, another worker's): this
    process's own jobs are shown by poll()."""
    return [run for run in live_runs(data_dir) if run.get("pid") != os.getpid()]


@st.fragment(run_every=POLL_SECONDS)
def poll_others(data_dir: str) -> None:
    """The progress of runs started elsewhere, from their progress files, every second;
    once none is left, the whole page reruns (the runs table shows how they ended)."""
    runs = others(Path(data_dir))
    if not runs:
        st.rerun()
    for run in runs:
        done, total = int(run.get("done", 0)), int(run.get("total", 0))
        st.progress(min(1.0, done / total) if total else 0.0, text=_live_text(run))


def show_failures(failed: list[dict[str, str]], label: str) -> None:
    if not failed:
        return
    with st.expander(label):
        for failure in failed[:MAX_FAILURES_SHOWN]:
            st.markdown(plain(f"{failure.get('source', '?')}: {failure.get('error', '')}"))
        if len(failed) > MAX_FAILURES_SHOWN:
            st.caption(plain(f"… +{len(failed) - MAX_FAILURES_SHOWN}"))


def show_steps(job: jobs.Job) -> None:
    """Each folder's outcome: its summary line, and the files that failed."""
    for step in job.steps:
        error = t(step.error_key) if step.error_key else step.error
        if error is not None:
            show = st.warning if step.cancelled else st.error
            show(plain(f"{step.folder}: {error}" if step.folder else error))
            continue
        summary = step.summary or {}
        failed = list(summary.get("failed", []))
        line = say(
            "admin_summary",
            folder=step.folder,
            added=summary.get("added", 0),
            updated=summary.get("updated", 0),
            unchanged=summary.get("unchanged", 0),
            deleted=summary.get("deleted", 0),
            failed=len(failed),
            chunks=summary.get("chunks_embedded", 0),
            seconds=f"{summary.get('seconds', 0):.1f}",
        )
        (st.warning if failed else st.success)(line)
        show_failures(failed, t("admin_failed_files"))
