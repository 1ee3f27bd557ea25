"""The caller's own documents ("My documents", ingest/personal.py): list, upload, remove.

Every signed-in caller may keep a few files readable by them alone, within the quotas the
administrator set. A document's id is the one its citations carry (ui/api/service.py), so
`/api/documents/{id}/original` downloads it; an id that is not one of the caller's own
files gets the 404 of a document that does not exist, whoever's it is.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.concurrency import run_in_threadpool

from assistant.errors import IngestBusy, StoreBusy, TaimatsuError, UploadError
from ingest import personal, uploads
from ingest.owners import folder_of
from ui.api.errors import ApiError
from ui.api.identity import Asker
from ui.api.service import (
    BUSY_RETRY_SECONDS,
    Service,
    document_id,
    download_path,
    parse_document_id,
    root_digest,
)
from ui.identity import User

NOT_FOUND = "There is no document with this id that you may read."  # as Service.original's
REFUSED = {"personal_off": 403}


def _root(service: Service, user: User) -> str:
    return str(folder_of(service.settings, user.id).resolve())


def _usage(service: Service, user: User) -> dict[str, Any]:
    settings = service.settings
    now = personal.usage(settings, user.id)
    return {
        "files": now.files,
        "max_files": settings.personal_max_files,
        "mb": float(now.mb),
        "max_mb": settings.personal_max_mb,
    }


def listing(service: Service, user: User) -> dict[str, Any]:
    root = _root(service, user)
    try:
        mine = personal.documents(service.settings, user.id, service.searcher.index)
    except TaimatsuError as exc:
        raise service.refused(exc) from None
    documents = []
    for doc in mine:
        doc_id = document_id(root, doc.name)
        documents.append(
            {
                "id": doc_id,
                "name": doc.name,
                "bytes": doc.size,
                "modified": doc.modified,
                "chunks": doc.chunks,
                "download": download_path(doc_id) if doc.chunks else None,
            }
        )
    return {"documents": documents, "usage": _usage(service, user)}


def _add(service: Service, user: User, files: list[UploadFile]) -> dict[str, Any]:
    incoming = [uploads.Incoming(f.filename or "", f.size or 0, f.file.read) for f in files]
    try:
        added = personal.add(service.settings, user.id, incoming, service.embedder)
    except UploadError as exc:
        raise ApiError(REFUSED.get(exc.code, 400), f"{_sentence(str(exc))}", exc.code) from None
    if not added.saved:
        first = added.refused[0].line if added.refused else "no file was sent"
        error = UploadError("nothing_accepted", first=first)
        raise ApiError(400, _sentence(str(error)), error.code)
    root = _root(service, user)
    searchable = set(added.searchable)
    return {
        "saved": [
            {"id": document_id(root, s.name), "name": s.name, "original": s.original}
            for s in added.saved
            if s.name in searchable
        ],
        "renamed": [{"original": o, "name": n} for o, n in added.renamed],
        "refused": [{"name": r.name, "error": str(r.problem)} for r in added.refused],
        "unreadable": [{"name": n, "error": e} for n, e in added.unreadable],
        "usage": _usage(service, user),
    }


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


def _remove(service: Service, user: User, doc_id: str) -> dict[str, Any]:
    place = parse_document_id(doc_id)
    root = _root(service, user)
    if place is None or place[0] != root_digest(root):
        raise ApiError(404, NOT_FOUND, "not_found")
    try:
        removed = personal.remove(service.settings, user.id, place[1])
    except (IngestBusy, StoreBusy):
        raise ApiError(
            503,
            "The index is busy (an ingestion run is writing to it); try again shortly.",
            "index_busy",
            {"Retry-After": str(BUSY_RETRY_SECONDS)},
        ) from None
    except TaimatsuError as exc:
        raise service.refused(exc) from None
    if not removed:
        raise ApiError(404, NOT_FOUND, "not_found")
    return {"removed": place[1], "usage": _usage(service, user)}


def router(service: Service, asker: Any) -> APIRouter:
    api = APIRouter(prefix="/api/my", tags=["my documents"])
    Caller = Annotated[Asker, Depends(asker)]

    @api.get("/documents", summary="The caller's own documents, and their quota")
    def my_documents(caller: Caller) -> dict[str, Any]:
        """`{"documents": [{"id", "name", "bytes", "modified", "chunks", "download"}],
        "usage": {"files", "max_files", "mb", "max_mb"}}`: the files the caller uploaded,
        readable by them alone, each with its chunks in the index."""
        return listing(service, caller.user)

    @api.post("/documents", summary="Upload documents readable by the caller alone")
    async def add_mine(
        caller: Caller,
        files: Annotated[list[UploadFile], File(description="The documents.")],
    ) -> dict[str, Any]:
        """Checked as an administrator's upload (names, types, size, content) and against
        the caller's quota (TAIMATSU_PERSONAL_MAX_FILES, TAIMATSU_PERSONAL_MAX_MB), then
        indexed at once for the caller's group `user:<id>` alone. Over the quota, or with
        no acceptable file, nothing is written and the answer is `400` with one sentence."""
        return await run_in_threadpool(_add, service, caller.user, files)

    @api.delete("/documents/{doc_id}", summary="Remove one of the caller's documents")
    def remove_mine(caller: Caller, doc_id: str) -> dict[str, Any]:
        """Its chunks leave the index, then the file is deleted. An id that is not one of
        the caller's documents gets `404`, as a document that does not exist."""
        return _remove(service, caller.user, doc_id)

    return api
