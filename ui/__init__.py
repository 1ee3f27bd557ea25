"""The faces of Taimatsu: `cli` (the `taimatsu` command) and `web` (the Streamlit page).
They import `ingest`, `assistant` and `bundle`; nothing imports them."""

__all__: list[str] = []
