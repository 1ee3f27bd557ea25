"""The ingestion runs log: one JSON line per finished run in `<data_dir>/runs.jsonl`, for
the administration page (last runs and their failures). Bounded: the oldest lines are
dropped past MAX_RUNS."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

MAX_RUNS = 500


def record_run(data_dir: Path, summary: dict[str, Any]) -> None:
    path = data_dir / "runs.jsonl"
    line = json.dumps({"finished": time.time(), **summary}, ensure_ascii=False)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines = [*lines[-(MAX_RUNS - 1) :], line]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
