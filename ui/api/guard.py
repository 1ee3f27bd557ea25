"""Bodies are judged before they are read: a POST whose declared length is over the
limit is refused at once (413), one sent without a length is read only up to the limit,
and a route that takes JSON or a multipart upload refuses any other content type (415).
Each refusal is one sentence in the API's error shape (ui/api/errors.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ui.api.errors import body

JSON_LIMIT = 1024 * 1024  # a question is at most a few kB; a conversation fits in 1 MiB
JSON = "application/json"
MULTIPART = "multipart/form-data"
DRAIN_LIMIT = 64 * 1024 * 1024  # past this a refused body is not read: the connection closes


class BodyGuard:
    """ASGI middleware: `types` maps (method, path) to the content type that route takes;
    `upload_limit()` gives the byte limit of the multipart routes (settings may change)."""

    def __init__(
        self, app: ASGIApp, types: dict[tuple[str, str], str], upload_limit: Callable[[], int]
    ) -> None:
        self.app, self.types, self.upload_limit = app, types, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        wanted = self.types.get((scope["method"], scope["path"].rstrip("/") or "/"))
        given = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if wanted and given != wanted:
            what = "a JSON object" if wanted == JSON else "a multipart/form-data upload"
            await _refuse(send, 415, f"This route takes {what} (Content-Type: {wanted}).")
            return
        limit = self.upload_limit() if wanted == MULTIPART else JSON_LIMIT
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _refuse(send, 400, "The Content-Length header is not a number.")
                return
            if int(length) > limit:
                await _refuse(send, 413, _too_large(limit))
                await _drain(receive, int(length))
                return
            await self.app(scope, receive, send)
            return
        if wanted == MULTIPART:  # not buffered in memory: the length must be declared
            await _refuse(send, 411, "Send the upload with a Content-Length header.")
            return
        chunks, size = [], 0
        while True:  # a body without a declared length (chunked): read up to the limit
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, 413, _too_large(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        data = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _drain(receive: Receive, length: int) -> None:
    """Read and drop a refused body (up to DRAIN_LIMIT), so that a client that sends all
    of it before reading the answer sees the 413 instead of a reset connection."""
    if length > DRAIN_LIMIT:
        return
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _too_large(limit: int) -> str:
    return f"The request body is larger than the limit of {limit / 2**20:g} MiB."


async def _refuse(send: Send, status: int, message: str) -> None:
    payload = json.dumps(body(status, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
