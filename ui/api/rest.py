"""The REST routes: search, ask, status, a document's original file, upload."""

import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from assistant.answering import Turn
from assistant.errors import IngestBusy, TaimatsuError
from assistant.status import collect
from ingest import uploads
from ingest.pipeline import Ingestor
from ui.api.errors import ApiError
from ui.api.identity import Asker
from ui.api.service import Service

log = logging.getLogger("taimatsu.api")


class TurnIn(BaseModel):
    question: str = Field(max_length=100_000)
    answer: str = Field(max_length=100_000)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(description="The question, in English or Japanese.")
    history: list[TurnIn] = Field(
        default_factory=list,
        max_length=100,
        description="Earlier turns of the conversation, oldest first (for follow-ups).",
    )


def router(service: Service, asker: Any) -> APIRouter:
    """`asker` is the dependency that identifies the caller (ui/api/app.py)."""
    api = APIRouter(prefix="/api", tags=["rest"])
    Caller = Annotated[Asker, Depends(asker)]

    @api.get("/search", summary="The passages that best match a query")
    def search(
        caller: Caller,
        q: Annotated[str, Query(description="The query.")],
        k: Annotated[int, Query(ge=1, le=100, description="Number of hits.")] = 5,
    ) -> dict[str, Any]:
        hits = service.search(caller.user, q, k, "api")
        return {"query": q, "hits": hits}

    @api.post("/ask", summary="A cited answer to a question")
    def ask(caller: Caller, request: AskRequest) -> dict[str, Any]:
        history = [Turn(t.question, t.answer) for t in request.history]
        answer = service.ask(caller.user, request.question, history, "api")
        return service.answer_json(caller.user, answer)

    @api.get("/status", summary="Health of the index and of the model server")
    def status(caller: Caller) -> dict[str, Any]:
        report = collect(service.settings)
        index, llm = report["index"], report["llm"]
        out: dict[str, Any] = {
            "index": {"healthy": index["healthy"], "exists": index["exists"]},
            "llm": {
                "backend": llm.get("backend"),
                "reachable": llm.get("reachable"),
                "model": llm.get("model"),
                "model_present": llm.get("model_present"),
            },
            "user": {"id": caller.user.id, "groups": list(caller.user.groups)},
        }
        if caller.user.admin:  # counts of the whole index: not for everyone's eyes
            out["index"] = index
            out["llm"] = llm
        return out

    @api.get(
        "/documents/{doc_id}/original",
        summary="The original file of a document the caller may read",
        response_class=FileResponse,
    )
    def original(caller: Caller, doc_id: str) -> FileResponse:
        path = service.original(caller.user, doc_id)
        return FileResponse(path, filename=path.name)

    @api.post("/documents", summary="Upload documents (administrators), then ingest them")
    async def upload(
        caller: Caller,
        files: Annotated[list[UploadFile], File(description="The documents.")],
        groups: Annotated[
            str, Form(description="Comma-separated groups that may read them.")
        ] = "everyone",
    ) -> dict[str, Any]:
        if not caller.user.admin:
            raise ApiError(403, "Only administrators may upload documents.", "forbidden")
        return await run_in_threadpool(_upload, service, files, groups)

    return api


def _upload(service: Service, files: list[UploadFile], groups_text: str) -> dict[str, Any]:
    settings = service.settings
    try:
        groups = uploads.clean_groups([], groups_text)
        incoming = [uploads.Incoming(f.filename or "", f.size or 0, f.file.read) for f in files]
        accepted, refused = uploads.check(settings, incoming)
        if not accepted:
            first = refused[0].line if refused else "no file was sent"
            raise ApiError(400, f"No file was accepted ({first}).", "upload_refused")
        saved = uploads.save(settings, accepted, groups)
        folder = uploads.upload_folder(settings)
    except uploads.UploadError as exc:
        raise ApiError(400, str(exc), exc.code) from None
    result: dict[str, Any] = {
        "groups": groups,
        "saved": [
            {"name": s.name, "original": s.original, "renamed": a.renamed}
            for a, s in zip(accepted, saved, strict=True)
        ],
        "refused": [{"name": r.name, "error": str(r.problem)} for r in refused],
    }
    started = time.monotonic()
    try:
        summary = Ingestor(settings, service.embedder).run(Path(folder))
    except IngestBusy as exc:
        result["ingest"] = {"done": False, "error": str(exc)}
        return result
    except TaimatsuError as exc:
        result["ingest"] = {"done": False, "error": str(exc)}
        return result
    names = {s.name for s in saved}
    unreadable = [f for f in summary.failed if f.get("source") in names]
    for failure in unreadable:  # it would fail every run: removed, the caller told why
        try:
            uploads.remove(settings, failure["source"])
        except (OSError, uploads.UploadError):
            log.warning("could not remove the unreadable upload %s", failure["source"])
    result["ingest"] = {
        "done": True,
        "searchable": sorted(names - {f["source"] for f in unreadable}),
        "unreadable": [{"name": f["source"], "error": f.get("error", "")} for f in unreadable],
        "seconds": round(time.monotonic() - started, 3),
    }
    return result
