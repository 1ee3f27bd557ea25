"""The audit log: every question, from the page, the API and MCP, one JSON line each.

Each line holds the time (UTC), the user, their groups, the channel, the question, the
documents shown and those cited, the answer mode and the latency. The log is append-only:
lines are only ever added (one write each, under a file lock shared by every process
that answers), and a file is closed off, never edited, when it reaches
TAIMATSU_AUDIT_MAX_MB or a new day begins. Closed files older than
TAIMATSU_AUDIT_RETENTION_DAYS are deleted. The folder is 0700 and the files 0600: only
the service account reads them on disk, and only administrators in the page.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from assistant.settings import Settings

log = logging.getLogger("taimatsu.audit")
CURRENT = "audit.jsonl"
FIELDS = (
    "time",
    "user",
    "groups",
    "channel",
    "question",
    "mode",
    "shown",
    "cited",
    "latency_ms",
)


class AuditLog:
    def __init__(self, settings: Settings) -> None:
        self.folder = Path(settings.data_dir) / "audit"
        self.max_bytes = int(settings.audit_max_mb * 1024 * 1024)
        self.retention = settings.audit_retention_days * 86400
        self.enabled = settings.audit_log

    def _ready(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def record(
        self,
        *,
        channel: str,
        user: str,
        groups: Sequence[str],
        question: str,
        mode: str,
        shown: Sequence[str],
        cited: Sequence[str],
        latency_ms: float,
    ) -> None:
        """Append one question. A log that cannot be written is reported in the server
        log, never to the asker (their answer is already on its way)."""
        if not self.enabled:
            return
        now = time.time()
        entry = {
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "user": user,
            "groups": sorted(groups),
            "channel": channel,
            "question": question,
            "mode": str(mode),
            "shown": list(dict.fromkeys(shown)),
            "cited": list(dict.fromkeys(cited)),
            "latency_ms": round(float(latency_ms), 1),
        }
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        try:
            self._ready()
            with FileLock(self.folder / ".lock", timeout=10):
                self._rotate(now, len(line))
                fd = os.open(self.folder / CURRENT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        except OSError as exc:
            log.error("audit log not written (%s): %s", self.folder, exc)

    def record_answer(
        self,
        channel: str,
        user: str,
        groups: Sequence[str],
        answer: dict[str, Any],
        latency_ms: float,
    ) -> None:
        """Append one answer as `Answer.as_json()` gives it: the documents shown are its
        citations' sources; those cited, the same when the model marked them."""
        shown = [c["source"] for c in answer.get("citations", [])]
        marked = answer.get("mode") == "generated" and answer.get("citations_marked", True)
        self.record(
            channel=channel,
            user=user,
            groups=groups,
            question=answer.get("question", ""),
            mode=answer.get("mode", ""),
            shown=shown,
            cited=shown if marked else [],
            latency_ms=latency_ms,
        )

    def _rotate(self, now: float, incoming: int) -> None:
        """Close the current file off when it is full or from an earlier day (UTC), and
        delete closed files past the retention."""
        current = self.folder / CURRENT
        try:
            stat = current.stat()
        except FileNotFoundError:
            stat = None
        if stat and stat.st_size > 0:
            day = datetime.fromtimestamp(stat.st_mtime, UTC).date()
            today = datetime.fromtimestamp(now, UTC).date()
            if stat.st_size + incoming > self.max_bytes or day != today:
                stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S%f")
                current.rename(self.folder / f"audit-{stamp}.jsonl")
        for closed in self.folder.glob("audit-*.jsonl"):
            if now - closed.stat().st_mtime > self.retention:
                closed.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        """Closed files, oldest first, then the current one."""
        if not self.folder.is_dir():
            return []
        closed = sorted(self.folder.glob("audit-*.jsonl"))
        current = self.folder / CURRENT
        return closed + ([current] if current.exists() else [])

    def _lines(self, since: date | None = None) -> Iterator[dict[str, Any]]:
        for path in self.files():
            closed = path.name[len("audit-") : len("audit-") + 8]
            if since and closed.isdigit() and closed < since.strftime("%Y%m%d"):
                continue  # closed off before `since`: every line in it is older
            try:
                with path.open(encoding="utf-8") as f:
                    for line in f:
                        try:
                            entry = json.loads(line)
                        except ValueError:
                            continue  # a line cut by a crash mid-write
                        if isinstance(entry, dict):
                            yield entry
            except FileNotFoundError:
                continue  # deleted by retention meanwhile

    def entries(
        self,
        user: str | None = None,
        since: date | None = None,
        until: date | None = None,
        document: str | None = None,
        limit: int | None = 1000,
    ) -> list[dict[str, Any]]:
        """Entries, newest first, filtered by user (exact), day range (UTC, inclusive)
        and a document (a part of a source path shown or cited)."""
        found = []
        for entry in self._lines(since):
            day = str(entry.get("time", ""))[:10]
            if user and entry.get("user") != user:
                continue
            if since and day < since.isoformat():
                continue
            if until and day > until.isoformat():
                continue
            sources = [*entry.get("shown", []), *entry.get("cited", [])]
            if document and not any(document in str(s) for s in sources):
                continue
            found.append(entry)
        found.reverse()
        return found[:limit] if limit else found


def as_csv(entries: Iterable[dict[str, Any]]) -> str:
    """Entries as CSV (lists joined by "; "), for a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for entry in entries:
        row = []
        for name in FIELDS:
            value = entry.get(name, "")
            text = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
            # a cell a spreadsheet would run as a formula is quoted (CSV injection)
            row.append("'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text)
        writer.writerow(row)
    return out.getvalue()
