"""The faces of Taimatsu: `cli` (the `taimatsu` command), `web` (the Streamlit page) and
`api` (the HTTP API and MCP server); `identity` holds the sign-in rules the page and the
API share. They import `ingest`, `assistant` and `bundle`; nothing imports them."""

__all__: list[str] = []
