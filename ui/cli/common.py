"""What every `taimatsu` command shares: the exit codes, the one-line failure, the logging
set-up, and `Commands`, the command group that turns errors into those lines.

Exit codes (the README's "Exit codes"): 0 success; 1 the command failed (one
`taimatsu: error:` line on stderr); 2 wrong usage (typer's own); 3 an ingestion run
finished but some files could not be read; 4 another ingestion run holds the index and
this one did nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from assistant.errors import IngestBusy, IngestCancelled, TaimatsuError
from assistant.settings import settings_problem

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_BUSY, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5

# libraries that narrate recoverable trouble (pypdf: "EOF marker not found"); the file's
# own failure, if any, is reported once as a `failed:` line
NOISY_LOGGERS = ("httpx", "sentence_transformers", "transformers", "urllib3", "pypdf")


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)


def fail(message: str) -> typer.Exit:
    """The one stderr line of a failed command; raise what it returns."""
    typer.echo(f"taimatsu: error: {message}", err=True)
    return typer.Exit(EXIT_FAILED)


def _disk_full(exc: OSError) -> typer.Exit:
    """A disk that filled up outside the index (the runs log, a lock file) as one line;
    any other OSError is a bug, raised again with its traceback."""
    from assistant.index import disk_full, is_disk_full
    from assistant.settings import Settings

    if not is_disk_full(exc):
        raise exc
    folder = Path(exc.filename).parent if exc.filename else Settings().data_dir
    return fail(str(disk_full(folder)))


class Commands(TyperGroup):
    """A command group that catches, once for all its commands, what a person can act on:
    a TaimatsuError (IngestBusy: its sentence and exit code 4; IngestCancelled: its
    sentence and exit code 5; any other: one
    `taimatsu: error:` line, exit code 1), a setting that does not validate, a missing
    file, a full disk. Anything else is a
    bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IngestBusy as exc:
            typer.echo(f"taimatsu: {exc}", err=True)
            raise typer.Exit(EXIT_BUSY) from None
        except IngestCancelled as exc:
            typer.echo(f"taimatsu: {exc}", err=True)
            raise typer.Exit(EXIT_CANCELLED) from None
        except (TaimatsuError, FileNotFoundError) as exc:
            raise fail(str(exc)) from None
        except ValidationError as exc:  # a TAIMATSU_* setting of the wrong kind
            raise fail(settings_problem(exc)) from None
        except OSError as exc:
            raise _disk_full(exc) from None
