"""The ingestion runs log: one JSON line per finished (or refused) run in
`<data_dir>/runs.jsonl`, for the administration page and `taimatsu status` (last runs, their
failures and refusals). Bounded: the oldest lines are dropped past MAX_RUNS.

And what each source's last finished run had in force, in `<data_dir>/sources.json`
({root: {"permissions": ..., "rules": the rules file or null}}): a later run compares
with it, so that rules that were in force and are gone stop the run instead of opening
every document (ingest/permissions.py)."""

from __future__ import annotations

import json
import os
import time
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


def last_run_by_source(data_dir: Path) -> dict[str, dict[str, Any]]:
    """{root: the latest run over it} from the runs log (refused runs included); a
    remote source's root is its copy's folder, the run carries its `url`."""
    latest: dict[str, dict[str, Any]] = {}
    for run in recent_runs(data_dir, MAX_RUNS):  # newest first
        root = run.get("root")
        if root and root not in latest:
            latest[root] = run
    return latest


def run_outcome(run: dict[str, Any]) -> dict[str, Any]:
    """What a run did, as counts: its failures counted, not listed."""
    outcome = {name: run.get(name, 0) for name in ("added", "updated", "unchanged", "deleted")}
    outcome["finished"] = run.get("finished")
    outcome["failed"] = len(run.get("failed", []))
    if run.get("refused"):
        outcome["refused"] = run["refused"]
    return outcome


def ingest_status(
    data_dir: Path, permissions: str, counts: dict[str, dict[str, int]] | None = None
) -> dict[str, Any]:
    """For `taimatsu status`: the permission source set, what each folder's last run had
    in force, the last run (with its refusal, if it was refused), and each source —
    every folder or URL the runs log or the index knows — with its documents and chunks
    in the index (`counts`: {root: {"documents", "chunks"}}) and its last run."""
    last = recent_runs(data_dir, 1)
    runs = last_run_by_source(data_dir)
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
        "last_run": last[0] if last else None,
        "by_source": by_source,
    }
