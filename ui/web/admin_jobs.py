"""Long work started from the administration page — a sync of every source folder, the
ingestion of an upload — in a background thread, one job at a time per index.

A job outlives the script run that started it: navigating away, closing the tab or another
administrator's click does not cut it short, and any administrator's page shows its
progress (files, chunks, rate, ETA) by polling it. Other users' sessions are not blocked:
the ingestion holds the index only in short critical sections, as the cron's does. The
job has its own embedding model instance: the page's answers use theirs concurrently, and
a tokenizer is not safe to share between threads.

A job is cancelled like any run (ingest/runs.py: a cancel request in the data folder): the
folder being ingested stops after the file it is on, keeping what it indexed, and the
folders after it are left for the next sync.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.embedder import Embedder, TextEmbedder, local_options
from assistant.errors import IngestBusy, IngestCancelled, TaimatsuError
from assistant.served_embedder import open_embedder
from assistant.settings import Settings
from ingest import uploads
from ingest.pipeline import Ingestor

log = logging.getLogger("taimatsu.ui")
KEEP_FINISHED = 20
PAGE_INGEST_WAIT = 60.0  # seconds a page job waits for another ingestion run (the cron)
SYNC, UPLOAD = "sync", "upload"
UNEXPECTED = "admin_unexpected"


@dataclass
class Step:
    """One folder's ingestion run within a job."""

    folder: str
    summary: dict[str, Any] | None = None
    error: str | None = None  # one sentence (from the pipeline or the index)
    error_key: str | None = None  # or a message of the page's own (ui.web.i18n key)
    busy: bool = False  # another ingestion run held the index
    cancelled: bool = False  # stopped on a cancel request (error says where)


@dataclass
class Job:
    kind: str  # SYNC or UPLOAD
    folders: list[str]
    saved: list[uploads.Saved] = field(default_factory=list)  # an upload's files
    groups: list[str] = field(default_factory=list)  # who may read them
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    current: int = 0  # the folder being ingested
    files_done: int = 0
    files_total: int = 0
    chunks: int = 0
    folder_started: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # removed uploads

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def fraction(self) -> float:
        """Of the whole job: folders done plus this folder's share of files."""
        if not self.folders:
            return 1.0
        within = self.files_done / self.files_total if self.files_total else 0.0
        return min(1.0, (self.current + within) / len(self.folders))

    @property
    def rate(self) -> float:
        """Files a second in the current folder."""
        elapsed = time.monotonic() - self.folder_started
        return self.files_done / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left in the current folder, once there is a rate to go by."""
        if not self.files_done or not self.rate:
            return None
        return max(0.0, (self.files_total - self.files_done) / self.rate)

    def progress(self, done: int, total: int, chunks: int) -> None:
        self.files_done, self.files_total, self.chunks = done, total, chunks

    @property
    def searchable(self) -> list[uploads.Saved]:
        """The uploaded files the finished job indexed."""
        if self.running or not self.steps or self.steps[-1].summary is None:
            return []
        gone = {name for name, _ in self.unreadable}
        return [s for s in self.saved if s.name not in gone]


_jobs: OrderedDict[str, Job] = OrderedDict()  # by id, oldest first
_current: dict[str, str] = {}  # index key -> id of its latest job
_guard = threading.Lock()
_embedders: dict[tuple[str, int], Embedder] = {}


def index_key(settings: Settings) -> str:
    if settings.qdrant_url:
        return f"{settings.qdrant_url}#{settings.qdrant_collection}"
    return str(Path(settings.data_dir).resolve())


def current(settings: Settings) -> Job | None:
    """The latest job on this index (running or finished)."""
    with _guard:
        job_id = _current.get(index_key(settings))
        return _jobs.get(job_id) if job_id else None


def get(job_id: str | None) -> Job | None:
    with _guard:
        return _jobs.get(job_id) if job_id else None


def running(settings: Settings) -> Job | None:
    job = current(settings)
    return job if job is not None and job.running else None


def start(
    settings: Settings,
    kind: str,
    folders: list[str],
    saved: list[uploads.Saved] | None = None,
    groups: list[str] | None = None,
) -> tuple[Job, bool]:
    """(the job, True) once started; (the running job, False) if one is already running."""
    key = index_key(settings)
    with _guard:
        busy = _jobs.get(_current.get(key, ""))
        if busy is not None and busy.running:
            return busy, False
        job = Job(kind, list(folders), list(saved or []), list(groups or []))
        _jobs[job.id] = job
        _current[key] = job.id
        while len(_jobs) > KEEP_FINISHED:
            oldest = next(iter(_jobs))
            if _jobs[oldest].running:
                break
            del _jobs[oldest]
    thread = threading.Thread(
        target=_run, args=(settings, job), name=f"taimatsu-{kind}-{job.id[:8]}", daemon=True
    )
    thread.start()
    return job, True


def wait(job: Job, timeout: float) -> bool:
    """Until the job finishes (for tests); whether it did."""
    deadline = time.monotonic() + timeout
    while job.running and time.monotonic() < deadline:
        time.sleep(0.05)
    return not job.running


def ingest_embedder(settings: Settings) -> TextEmbedder:
    """The model ingestion runs of this process use (jobs, personal uploads): one at a
    time, since every run holds the ingestion lock while it embeds."""
    if settings.embed_backend != "local":  # a served model: nothing to load, nothing to share
        return open_embedder(settings)
    embedder = Embedder(**local_options(settings))
    key = (str(embedder.model_dir), embedder.batch_size, embedder.runtime, str(embedder.cache_dir))
    with _guard:
        if key not in _embedders:
            _embedders[key] = embedder
        return _embedders[key]


def _run(settings: Settings, job: Job) -> None:
    settings = settings.model_copy(
        update={"ingest_wait": max(settings.ingest_wait, PAGE_INGEST_WAIT)}
    )
    try:
        embedder = ingest_embedder(settings)
        for number, folder in enumerate(job.folders):
            job.current, job.folder_started = number, time.monotonic()
            job.files_done = job.files_total = job.chunks = 0
            step = Step(folder)
            job.steps.append(step)
            try:
                ingestor = Ingestor(settings, embedder)
                summary = ingestor.run(Path(folder), job.progress, since=job.started)
                step.summary = summary.as_json()
            except IngestCancelled as exc:
                step.error, step.cancelled = str(exc), True
                break  # the other folders wait for the next sync
            except IngestBusy as exc:
                step.error, step.busy = str(exc), True
            except TaimatsuError as exc:
                step.error = str(exc)
            except Exception:  # the page says so in one sentence; the log has the rest
                log.exception("ingestion of %s from the administration page failed", folder)
                step.error_key = UNEXPECTED
        if job.kind == UPLOAD:
            _remove_unreadable(settings, job)
    except Exception:
        log.exception("administration job %s failed", job.kind)
        job.steps.append(Step("", error_key=UNEXPECTED))
    finally:
        job.current = len(job.folders)
        job.finished = time.time()


def _remove_unreadable(settings: Settings, job: Job) -> None:
    """An uploaded file ingestion could not read is removed again: it would fail every
    run, and the administrator is told why, to fix it and upload it again."""
    summary = job.steps[-1].summary if job.steps else None
    if summary is None:
        return
    names = {s.name for s in job.saved}
    for failure in summary.get("failed", []):
        if failure.get("source") in names:
            try:
                uploads.remove(settings, failure["source"])
            except (OSError, uploads.UploadError):
                log.warning("could not remove the unreadable upload %s", failure["source"])
            job.unreadable.append((failure["source"], failure.get("error", "")))
