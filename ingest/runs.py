"""The ingestion runs log: one JSON line per finished (or refused) run in
`<data_dir>/runs.jsonl`, for the administration page and `taimatsu status` (last runs, their
failures and refusals). Bounded: the oldest lines are dropped past MAX_RUNS.

And what each source's last finished run had in force, in `<data_dir>/sources.json`
({root: {"permissions": ..., "rules": the rules file or null}}): a later run compares
with it, so that rules that were in force and are gone stop the run instead of opening
every document (ingest/permissions.py).

And the runs going on now: each writes `<data_dir>/ingest-progress[-I-of-N].json` (its
process, folder, files done and total, chunks) about once a second and removes it when
it ends, so the administration page shows the progress of a run it did not start (the
cron's), files/s and ETA; and a cancel request, `<data_dir>/ingest.cancel` holding the
time it was made, which every run that started before that time honours between two
files (a run started later is not affected, so a stale request never stops one)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ingest.owners import PERSONAL_FOLDER

MAX_RUNS = 500


def record_run(data_dir: Path, summary: dict[str, Any]) -> None:
    path = data_dir / "runs.jsonl"
    line = json.dumps({"finished": time.time(), **summary}, ensure_ascii=False)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines = [*lines[-(MAX_RUNS - 1) :], line]
    _write_atomic(path, "\n".join(lines) + "\n")


def recent_runs(data_dir: Path, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs, newest first."""
    path = data_dir / "runs.jsonl"
    if not path.exists():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines()[::-1][:limit]:
        try:
            runs.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash: skip it
    return runs


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _sources(data_dir: Path) -> dict[str, Any]:
    """{root: state} from `sources.json`; {} when it is missing or unreadable (the memory
    is lost: the index's own groups still guard, see refuse_lost_rules)."""
    try:
        states = json.loads((data_dir / "sources.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return states if isinstance(states, dict) else {}


def source_state(data_dir: Path, root: str) -> dict[str, Any]:
    """What the last finished run over `root` had in force ({} if none)."""
    state = _sources(data_dir).get(root)
    return state if isinstance(state, dict) else {}


def remember_source(data_dir: Path, root: str, state: dict[str, Any]) -> None:
    states = _sources(data_dir)
    if states.get(root) == state:
        return
    states[root] = state
    text = json.dumps(states, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    _write_atomic(data_dir / "sources.json", text)


def last_run_by_source(
    data_dir: Path, runs: list[dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """{root: the latest run over it} from the runs log (refused runs included), or from
    `runs` (recent_runs' whole log, newest first) when the caller has read it already; a
    remote source's root is its copy's folder, the run carries its `url`."""
    latest: dict[str, dict[str, Any]] = {}
    for run in recent_runs(data_dir, MAX_RUNS) if runs is None else runs:
        root = run.get("root")
        if root and root not in latest:
            latest[root] = run
    return latest


def run_outcome(run: dict[str, Any]) -> dict[str, Any]:
    """What a run did, as counts: its failures counted, not listed."""
    outcome = {name: run.get(name, 0) for name in ("added", "updated", "unchanged", "deleted")}
    outcome["finished"] = run.get("finished")
    outcome["failed"] = len(run.get("failed", []))
    for ended in ("refused", "cancelled"):  # why it stopped before the end
        if run.get(ended):
            outcome[ended] = run[ended]
    return outcome


def ingest_status(
    data_dir: Path, permissions: str, counts: dict[str, dict[str, int]] | None = None
) -> dict[str, Any]:
    """For `taimatsu status`: the permission source set, what each folder's last run had
    in force, the last run (with its refusal, if it was refused), and each source —
    every folder or URL the runs log or the index knows — with its documents and chunks
    in the index (`counts`: {root: {"documents", "chunks"}}) and its last run."""
    every = recent_runs(data_dir, MAX_RUNS)  # newest first, read once
    runs = last_run_by_source(data_dir, every)
    counts = counts or {}
    by_source, personal = [], []
    personal_base = (data_dir / PERSONAL_FOLDER).resolve()
    for root in sorted(set(runs) | set(counts)):
        run = runs.get(root)
        held = counts.get(root, {})
        row = {
            "source": (run or {}).get("url") or root,
            "root": root,
            "documents": held.get("documents", 0),
            "chunks": held.get("chunks", 0),
            "last_run": run_outcome(run) if run else None,
        }
        (personal if Path(root).parent == personal_base else by_source).append(row)
    if personal:  # one line for every user's own uploads (ingest/personal.py)
        ran = [row["last_run"] for row in personal if row["last_run"]]
        by_source.append(
            {
                "source": f"personal uploads ({len(personal)} users)",
                "root": str(personal_base),
                "documents": sum(row["documents"] for row in personal),
                "chunks": sum(row["chunks"] for row in personal),
                "last_run": max(ran, key=lambda r: r.get("finished") or 0) if ran else None,
            }
        )
    return {
        "permissions": permissions,
        "sources": _sources(data_dir),
        "last_run": every[0] if every else None,
        "by_source": by_source,
    }


CANCEL_FILE = "ingest.cancel"
LIVE_GLOB = "ingest-progress*.json"


def request_cancel(data_dir: Path) -> None:
    """Ask every ingestion run on this index that is going on now to stop."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(data_dir / CANCEL_FILE, f"{time.time_ns()}\n")


class CancelWatch:
    """Whether a cancel request was made at or after `since_ns` (the run's start), asked
    before every file: a stat, and a read only when the request file changed."""

    def __init__(self, data_dir: Path, since_ns: int) -> None:
        self.path = data_dir / CANCEL_FILE
        self.since_ns = since_ns
        self._seen: tuple[int, int] | None = None
        self._requested = False

    def requested(self) -> bool:
        try:
            stat = self.path.stat()
        except OSError:
            return False
        if (stat.st_mtime_ns, stat.st_ino) != self._seen:
            self._seen = (stat.st_mtime_ns, stat.st_ino)
            try:
                made = int(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                made = 0
            self._requested = made >= self.since_ns
        return self._requested


@contextmanager
def live_progress(data_dir: Path, name: str, root: str) -> Iterator[Any]:
    """A run's progress file for the time of the run: yields `update(done, total, chunks)`
    (the caller decides how often; about once a second), removed when the run ends."""
    path = data_dir / f"ingest-progress{name}.json"
    state = {"pid": os.getpid(), "root": root, "started": time.time()}

    def update(done: int, total: int, chunks: int) -> None:
        state.update(done=done, total=total, chunks=chunks, updated=time.time())
        with suppress(OSError):  # progress is for show: a full disk must not stop the run
            _write_atomic(path, json.dumps(state, ensure_ascii=False))

    data_dir.mkdir(parents=True, exist_ok=True)
    update(0, 0, 0)
    try:
        yield update
    finally:
        with suppress(OSError):
            path.unlink()


def live_runs(data_dir: Path) -> list[dict[str, Any]]:
    """The runs going on now on this machine (their progress files whose process is
    alive; a crashed run's file is skipped), oldest first."""
    runs = []
    for path in sorted(Path(data_dir).glob(LIVE_GLOB)):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            pid = int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid):
            runs.append(state)
    return sorted(runs, key=lambda state: state.get("started", 0))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
