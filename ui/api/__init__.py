"""The HTTP API (`taimatsu api`): OpenAI-compatible chat, REST routes and an MCP server,
for tools and agents, under the same access rules as the page.

`app` builds the FastAPI application, `service` answers (the page's Answerer, History
turns and citation rules), `identity` says who is asking (API tokens, a trusted proxy's
headers, OIDC bearer tokens) and limits their rate, `guard` refuses oversized or
mistyped bodies before they are read, `errors` is the one error shape, `chat` the
OpenAI-compatible routes, `rest` the others, `mcp` the MCP tools, `serve` runs uvicorn.
"""

__all__: list[str] = []
