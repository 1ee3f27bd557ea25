"""The FastAPI application: routes, the MCP endpoint, identity, body limits, errors.

OpenAPI is at /openapi.json; there is no interactive docs page (those load their
scripts from a CDN, and nothing here may reach the internet). /healthz says only that
the process answers, for health checks without a token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from starlette.routing import Route

from assistant.embedder import TextEmbedder
from assistant.settings import Settings
from ingest import uploads
from ui.api import chat, errors, mcp, mine, rest
from ui.api.guard import JSON, MULTIPART, BodyGuard
from ui.api.identity import Asker
from ui.api.service import Service

MULTIPART_OVERHEAD = 1024 * 1024  # form fields and part headers around the files


def create_app(settings: Settings, embedder: TextEmbedder | None = None) -> Any:
    """The ASGI application (FastAPI inside the body guard)."""
    service = Service(settings, embedder)
    endpoint = mcp.McpEndpoint(service, mcp.build(service))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with endpoint.session_manager.run():
            yield

    app = FastAPI(
        title="Taimatsu API",
        summary="Cited answers from the organization's documents: OpenAI-compatible chat, "
        "REST and MCP.",
        version="1",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    errors.install(app)

    def asker(request: Request) -> Asker:
        headers: dict[str, list[str]] = {}
        for key, value in request.headers.items():
            headers.setdefault(key.lower(), []).append(value)
        client = request.client
        return service.auth.identify(headers, client.host if client else "")

    app.include_router(chat.router(service, asker))
    app.include_router(rest.router(service, asker))
    app.include_router(mine.router(service, asker))
    app.router.routes.append(Route("/mcp", endpoint, methods=["GET", "POST", "DELETE"]))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    def upload_limit() -> int:
        return uploads.size_limit(settings) * settings.upload_max_files + MULTIPART_OVERHEAD

    types = {
        ("POST", "/v1/chat/completions"): JSON,
        ("POST", "/api/ask"): JSON,
        ("POST", "/api/documents"): MULTIPART,
        ("POST", "/api/my/documents"): MULTIPART,
        ("POST", "/mcp"): JSON,
    }
    guarded = BodyGuard(app, types, upload_limit)
    guarded.app_state = app  # type: ignore[attr-defined]  # for tests: the FastAPI object
    return guarded
