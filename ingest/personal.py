"""Personal uploads ("My documents"): a signed-in user's own few files, readable by that
user alone (their chunks carry only the group `user:<id>`), within the quotas the
administrator sets (TAIMATSU_PERSONAL_MAX_FILES, TAIMATSU_PERSONAL_MAX_MB).

Each user's files live in their own folder, `<data_dir>/.personal/<digest of the user id>/`,
one source root of the index each. The folder is hidden, so a folder source that happens to
contain the data folder never lists it, and it is apart from every folder source, so a
folder run neither sees nor deletes these files. The folder holds a hidden owner file
naming its user; every ingestion run over the folder (an upload here, the administration
page's "Sync now", `taimatsu reindex`) takes the readers from it (`owner_groups`), never
from rules or file permissions, and a personal folder without a readable owner file stops
the run: its documents are never opened to anyone else.

An upload passes the administrator upload's checks (ingest/upload_checks.py: names, types,
sizes, content) and the quota, under a lock on the user's folder, before anything is
written; then the folder is ingested at once. If that run cannot finish (the index busy),
the new files are removed again: what the user's list shows is what they can ask about.
Removing a file deletes its chunks from the index first, then the file, under the
ingestion lock: a deliberate deletion that no mass-delete guard needs to confirm.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from assistant.embedder import TextEmbedder
from assistant.errors import IngestBusy, TaimatsuError, UploadError
from assistant.index import DeleteDocument, Index, open_index
from assistant.settings import Settings
from ingest import uploads
from ingest.listing import list_folder
from ingest.owners import OWNER_FILE, folder_of
from ingest.pipeline import Ingestor, Summary, display_path, ingest_lock, recount_keywords

log = logging.getLogger(__name__)

INGEST_WAIT = 60.0  # seconds an upload waits for another ingestion run (the cron's)


@dataclass(frozen=True)
class MyDocument:
    name: str
    size: int
    modified: float
    chunks: int  # 0: not (yet) in the index


@dataclass
class Usage:
    files: int
    bytes: int

    @property
    def mb(self) -> str:
        return uploads._mb(self.bytes)


@dataclass
class Added:
    saved: list[uploads.Saved] = field(default_factory=list)
    refused: list[uploads.Refusal] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # removed again
    renamed: list[tuple[str, str]] = field(default_factory=list)
    summary: Summary | None = None

    @property
    def searchable(self) -> list[str]:
        gone = {name for name, _ in self.unreadable}
        return [s.name for s in self.saved if s.name not in gone]


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return list_folder(folder).files


def usage(settings: Settings, user_id: str) -> Usage:
    files = _files(folder_of(settings, user_id))
    return Usage(len(files), sum(p.stat().st_size for p in files))


def documents(settings: Settings, user_id: str, index: Index) -> list[MyDocument]:
    """The user's files, each with how many chunks the index holds of it."""
    folder = folder_of(settings, user_id)
    files = _files(folder)
    if not files:
        return []
    root = str(folder.resolve())
    indexed = index.manifest(root)
    out = []
    for path in files:
        source = display_path(path.relative_to(folder))
        stat = path.stat()
        info = indexed.get(source)
        out.append(MyDocument(source, stat.st_size, stat.st_mtime, info.chunks if info else 0))
    return out


def off_problem(settings: Settings) -> None:
    if settings.personal_max_files <= 0:
        raise UploadError("personal_off")


def _check_quota(settings: Settings, now: Usage, accepted: Sequence[uploads.Accepted]) -> None:
    files = now.files + len(accepted)
    if files > settings.personal_max_files:
        raise UploadError("quota_files", count=files, limit=settings.personal_max_files)
    total = now.bytes + sum(len(a.data) for a in accepted)
    limit = int(settings.personal_max_mb * 2**20)
    if total > limit:
        raise UploadError("quota_mb", size=uploads._mb(total), limit=uploads._mb(limit))


def _prepare(settings: Settings, user_id: str) -> Path:
    """The user's folder, created with its owner file; resolved."""
    folder = folder_of(settings, user_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        folder = folder.resolve(strict=True)
        owner = folder / OWNER_FILE
        if not owner.is_file():
            temp = uploads._write_temp(folder, json.dumps({"user": user_id}).encode())
            os.replace(temp, owner)
    except OSError as exc:
        raise UploadError("folder", folder=folder, reason=exc.strerror or exc) from exc
    return folder


def add(
    settings: Settings, user_id: str, files: Sequence[uploads.Incoming], embedder: TextEmbedder
) -> Added:
    """Check the files and the quota, save them into the user's folder and index them.
    UploadError (nothing written) when the upload as a whole is refused: off, too many
    files, over the quota, or the index could not take them; with no file accepted,
    nothing is written and each refusal says why."""
    off_problem(settings)
    accepted, refused = uploads.check_files(settings, files)
    if not accepted:  # each refused file says why; nothing to write
        return Added(refused=refused)
    folder = _prepare(settings, user_id)
    result = Added(refused=refused)
    try:
        with FileLock(str(folder / uploads.LOCK_NAME), timeout=30):
            uploads._remove_stale_temps(folder)
            _check_quota(settings, usage(settings, user_id), accepted)
            for item in accepted:
                final = uploads.free_name(folder, item.name)
                temp = uploads._write_temp(folder, item.data)
                os.replace(temp, final)
                result.saved.append(uploads.Saved(item.original, final.name))
                if item.renamed:
                    result.renamed.append((item.original, final.name))
            uploads._fsync_folder(folder)
            _ingest(settings, folder, result, embedder)
    except Timeout:
        raise UploadError("busy") from None
    return result


def _ingest(settings: Settings, folder: Path, result: Added, embedder: TextEmbedder) -> None:
    run_settings = settings.model_copy(
        update={"ingest_wait": max(settings.ingest_wait, INGEST_WAIT)}
    )
    try:
        summary = Ingestor(run_settings, embedder).run(folder)
    except TaimatsuError as exc:  # busy, disk full, ...: the new files go again
        log.warning("personal upload into %s not indexed: %s", folder, exc)
        names = [s.name for s in result.saved]
        for name in names:
            (folder / name).unlink(missing_ok=True)
        if not isinstance(exc, IngestBusy):  # a run that wrote nothing needs no cleaning
            _take_back(run_settings, folder, names)
        raise UploadError("personal_not_indexed", reason=str(exc).rstrip(".")) from None
    result.summary = summary
    names = {s.name for s in result.saved}
    for failure in summary.failed:
        if failure.get("source") in names:  # it would fail every run: removed, and said why
            (folder / failure["source"]).unlink(missing_ok=True)
            result.unreadable.append((failure["source"], failure.get("error", "")))


def _take_back(settings: Settings, folder: Path, names: list[str]) -> None:
    """Remove whatever a failed run may have indexed of files just saved (and removed)."""
    try:
        with ingest_lock(settings):
            index = open_index(settings)
            if index.exists():
                index.write([DeleteDocument(str(folder), name) for name in names])
                recount_keywords(index)
    except TaimatsuError as exc:  # the next run over the folder deletes them
        log.warning("could not remove the chunks of %s from the index: %s", names, exc)


def remove(settings: Settings, user_id: str, name: str) -> bool:
    """Delete one of the user's files and its chunks; False if they have no such file."""
    folder = folder_of(settings, user_id)
    if not folder.is_dir() or name.startswith(".") or "/" in name or "\\" in name:
        return False
    folder = folder.resolve()
    if name not in {display_path(p.relative_to(folder)) for p in _files(folder)}:
        return False
    run_settings = settings.model_copy(
        update={"ingest_wait": max(settings.ingest_wait, INGEST_WAIT)}
    )
    with ingest_lock(run_settings):
        index = open_index(settings)
        if index.exists():  # the chunks first: a crash in between leaves a file to sync
            index.write([DeleteDocument(str(folder), name)])
        uploads._inside(folder, folder / name).unlink(missing_ok=True)
        if index.exists():
            recount_keywords(index)
    return True
