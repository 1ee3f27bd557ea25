"""Health of the index and of Ollama, as one JSON-ready report."""

from __future__ import annotations

from typing import Any

from assistant.answer import ollama_health
from assistant.settings import Settings
from assistant.store import Store, StoreError


def index_status(settings: Settings) -> dict[str, Any]:
    store = Store(settings.data_dir, settings.lock_timeout)
    report: dict[str, Any] = {
        "path": str(store.path.resolve()),
        "backend": "embedded (qdrant-edge)",
        "exists": store.exists(),
        "healthy": False,
        "documents": 0,
        "chunks": 0,
        "embedding_model": {},
    }
    if not report["exists"]:
        report["error"] = f"no index under {settings.data_dir}; run `taimatsu ingest FOLDER`"
        return report
    try:
        stamp = store.read_stamp() or {}
        report["embedding_model"] = stamp.get("model", {})
        report.update(store.counts())
        report["healthy"] = True
    except StoreError as exc:
        report["error"] = str(exc)
    return report


def collect(settings: Settings) -> dict[str, Any]:
    return {"index": index_status(settings), "ollama": ollama_health(settings)}
