"""The `taimatsu` command line (typer): ingest, reindex, search, ask, status, ui, eval and
bundle. `main` is the console script's entry point."""

from __future__ import annotations

from ui.cli.main import app, main

__all__ = ["app", "main"]
