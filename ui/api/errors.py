"""The API's one error shape, as OpenAI's API has it (so its clients show the message):
`{"error": {"message": "<one sentence>", "type": "...", "code": "..."}}`. Nothing else
reaches a client: no traceback, no echo of the request body."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("taimatsu.api")

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    411: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An answer of the API's own: a status and one sentence."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


def body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": TYPES.get(status, "error"), "code": code}}


def response(
    status: int, message: str, code: str | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(body(status, message, code), status_code=status, headers=headers)


def _validation_sentence(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "The request body is not valid JSON; send one JSON object."
    first = errors[0] if errors else {}
    places = ("body", "query", "path", "header", "form", "file")
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in places) or "the request"
    kind = first.get("type", "")
    if kind == "missing":
        return f"The field {where} is missing; see /openapi.json for the request format."
    if kind in ("model_type", "dict_type") and where == "the request":
        return "The request body must be one JSON object; see /openapi.json."
    return f"The field {where} is not valid ({first.get('msg', 'wrong value')}); see /openapi.json."


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return response(400, _validation_sentence(exc), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {
            404: "There is nothing at this address; see /openapi.json for the routes.",
            405: "This address does not take this method; see /openapi.json.",
        }
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail.endswith(".") else None
        message = messages.get(exc.status_code) or detail or "The request was refused."
        return response(exc.status_code, message, None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the API", exc_info=exc)
        return response(500, "Something went wrong on the server; the log has the details.")
