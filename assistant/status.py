"""Health of the index and of the model server, as one JSON-ready report."""

from __future__ import annotations

from typing import Any

from assistant.answering import llm_health
from assistant.errors import StoreError
from assistant.index import open_index
from assistant.settings import Settings


def index_status(settings: Settings) -> dict[str, Any]:
    index = open_index(settings)
    report: dict[str, Any] = {
        "backend": index.description,
        "exists": index.exists(),
        "healthy": False,
        "documents": 0,
        "chunks": 0,
        "embedding_model": {},
    }
    if not report["exists"]:
        report["error"] = f"no index in {index.description}; run `taimatsu ingest FOLDER`"
        return report
    try:
        stamp = index.read_stamp() or {}
        model = stamp.get("model", {})  # a served model's probe vector is not for people
        report["embedding_model"] = {k: v for k, v in model.items() if k != "probe"}
        report.update(index.counts())
        report["healthy"] = True
    except StoreError as exc:
        report["error"] = str(exc)
    return report


def collect(settings: Settings) -> dict[str, Any]:
    return {"index": index_status(settings), "llm": llm_health(settings)}
