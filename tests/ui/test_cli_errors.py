"""The command line says what a person can act on in one line, caught once by the command
group (ui/cli/common.py), and keeps the traceback of anything else."""

from __future__ import annotations

import errno

import pytest
import typer
from typer.testing import CliRunner

from assistant.errors import IngestBusy, ModelMismatch, QuestionTooLong, TaimatsuError
from ui.cli.common import EXIT_BUSY, EXIT_FAILED, Commands
from ui.cli.main import app

RAISED: list[BaseException] = []
demo = typer.Typer(cls=Commands, add_completion=False, pretty_exceptions_enable=False)


@demo.command()
def boom() -> None:
    raise RAISED[0]


@demo.command()
def other() -> None:
    """A second command, so that `boom` stays a subcommand of the group."""


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (IngestBusy("another run holds the index"), EXIT_BUSY, "taimatsu: another run holds"),
        (ModelMismatch("reindex"), EXIT_FAILED, "taimatsu: error: reindex"),
        (QuestionTooLong(9, 5, japanese=False), EXIT_FAILED, "taimatsu: error: The question"),
        (TaimatsuError("plain"), EXIT_FAILED, "taimatsu: error: plain"),
        (FileNotFoundError(2, "No such file", "x.md"), EXIT_FAILED, "taimatsu: error: [Errno 2]"),
        (
            OSError(errno.ENOSPC, "full", "/data/runs.jsonl"),
            EXIT_FAILED,
            "taimatsu: error: the disk holding /data ",
        ),
    ],
)
def test_errors_a_person_can_act_on_are_one_line(error, code, line):
    RAISED[:] = [error]
    result = CliRunner().invoke(demo, ["boom"])
    assert result.exit_code == code
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("error", [OSError(errno.EACCES, "denied"), ValueError("a bug")])
def test_anything_else_keeps_its_traceback(error):
    RAISED[:] = [error]
    result = CliRunner().invoke(demo, ["boom"])
    assert result.exception is error and result.stderr == ""


def test_bundle_errors_are_translated_where_the_bundle_commands_are_registered(tmp_path):
    result = CliRunner().invoke(
        app, ["bundle", "build", str(tmp_path / "x.tar"), "--project-dir", str(tmp_path)]
    )
    assert result.exit_code == EXIT_FAILED
    assert result.stderr == (
        "taimatsu: error: run this from a Taimatsu source checkout, or pass --project-dir\n"
    )
