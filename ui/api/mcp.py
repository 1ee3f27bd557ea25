"""The MCP server (streamable HTTP at `/mcp`, the official `mcp` SDK's MCPServer): tools
`search` and `ask`, so that an agent on an employee's machine can use the knowledge base
without it leaving the site.

Each HTTP request to /mcp is identified as every API request is (ui/api/identity.py:
bearer token, proxy headers, OIDC) before the SDK sees it; the asker rides in the ASGI
scope to the tool, which answers with the asker's groups through the same Service as
the REST routes. The server is stateless (no session kept between requests: nothing to
hijack, nothing to expire) and answers in plain JSON.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from ui.api.errors import ApiError, response
from ui.api.guard import JSON_LIMIT
from ui.api.identity import Asker
from ui.api.service import Service

SCOPE_KEY = "taimatsu.asker"


def _asker(ctx: Context) -> Asker:
    request = ctx.request_context.request
    asker = getattr(request, "scope", {}).get(SCOPE_KEY) if request is not None else None
    if asker is None:  # only reachable through /mcp, which identified the caller
        raise ToolError("This request carries no identity.")
    return asker


def build(service: Service) -> MCPServer:
    server: MCPServer = MCPServer(
        name="taimatsu",
        instructions="Search and ask the organization's documents. Answers cite their "
        "sources with [n] markers; only documents the caller may read are used.",
    )

    @server.tool(description="The passages that best match a query (k of them, at most 50).")
    def search(query: str, ctx: Context, k: int = 5) -> dict[str, Any]:
        asker = _asker(ctx)
        try:
            hits = service.search(asker.user, query, max(1, min(k, 50)), "mcp")
        except ApiError as exc:
            raise ToolError(exc.message) from None
        return {"query": query, "hits": hits}

    @server.tool(
        description="A cited answer to a question, in English or Japanese, from the "
        "documents the caller may read: `answer` with [n] markers and `citations`."
    )
    def ask(question: str, ctx: Context) -> dict[str, Any]:
        asker = _asker(ctx)
        try:
            answer = service.ask(asker.user, question, [], "mcp")
        except ApiError as exc:
            raise ToolError(exc.message) from None
        return service.answer_json(asker.user, answer)

    return server


class McpEndpoint:
    """The ASGI endpoint at /mcp: identify the caller, then hand over to the SDK."""

    def __init__(self, service: Service, server: MCPServer) -> None:
        self.service = service
        server.streamable_http_app(
            stateless_http=True,
            json_response=True,
            max_request_body_size=JSON_LIMIT,
            # bearer tokens, not cookies: a rebinding page cannot send one
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.session_manager = server.session_manager
        self.inner = StreamableHTTPASGIApp(self.session_manager)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[str, list[str]] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        client = scope.get("client")
        try:
            asker = self.service.auth.identify(headers, client[0] if client else "")
        except ApiError as exc:
            await response(exc.status, exc.message, exc.code, exc.headers)(scope, receive, send)
            return
        await self.inner({**scope, SCOPE_KEY: asker}, receive, send)
