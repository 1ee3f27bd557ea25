"""Cancelling a running `taimatsu ingest` (the request the administration page makes),
and the next run resuming: the real CLI in its own process, the real model and index.

The run is held at a known file without timing: one of the files is a named pipe, and
reading it waits until the test writes into it. The test asks for the cancel while the
run waits there, then lets it go on; the run stops before the next file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from assistant.index import open_index
from ingest.pipeline import Ingestor
from ingest.runs import recent_runs, request_cancel
from tests.conftest import CACHE_ENV

FILES = 24
PIPE = "f02-pipe.md"  # third in the listing: the run reads it ahead while on the second
PIPE_TEXT = "# Pipe\n\nThe harbour crane is inspected every March by the port authority.\n"


def _write_folder(folder: Path) -> None:
    folder.mkdir()
    for n in range(FILES):
        if n == 2:
            continue
        text = f"# Note {n}\n\nTeam {n} keeps its meeting notes on the shared drive, room {n}.\n"
        path = folder / ("部署" if n > 2 and n % 2 else "") / f"f{n:02d}-議事録.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, "utf-8")
    os.mkfifo(folder / PIPE)


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_") or k == CACHE_ENV}
    env["TAIMATSU_DATA_DIR"] = str(settings.data_dir)
    return env


def _progress(data: Path) -> dict:
    try:
        return json.loads((data / "ingest-progress.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_cancelled_run_keeps_what_it_did_and_the_next_run_does_the_rest(
    settings, tmp_path, embedder
):
    folder = tmp_path / "share"
    _write_folder(folder)
    exe = str(Path(sys.executable).with_name("taimatsu"))
    data = settings.data_dir
    with subprocess.Popen(
        [exe, "ingest", str(folder), "--json"],
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as run:
        # the run writes its progress once it has listed the folder and done its first
        # file; on the second, it reads the pipe ahead and waits there
        _wait_for(lambda: _progress(data).get("total") or run.poll() is not None, "progress")
        assert _progress(data)["pid"] == run.pid and _progress(data)["total"] == FILES
        request_cancel(data)
        with open(folder / PIPE, "w", encoding="utf-8") as pipe:
            pipe.write(PIPE_TEXT)
        stdout, stderr = run.communicate(timeout=180)
    assert run.returncode == 5, stderr
    assert stdout == ""
    (line,) = [line for line in stderr.splitlines() if line.startswith("taimatsu:")]
    assert line == (
        f"taimatsu: the ingestion of {folder} was cancelled after 2 of {FILES} files; "
        "what it indexed is kept and the next run does the rest"
    )
    assert not list(data.glob("ingest-progress*.json"))  # gone with the run
    (record,) = recent_runs(data)
    assert record["cancelled"] == line.removeprefix("taimatsu: ")
    assert record["added"] == 2 and record["files_seen"] == 2 and record["deleted"] == 0
    assert sorted(open_index(settings).manifest(str(folder))) == ["f00-議事録.md", "f01-議事録.md"]
    version, counted = open_index(settings).label_counts.state()
    assert counted == version  # the keyword table counts what the cancelled run wrote
    status = subprocess.run(
        [exe, "status"], env=_env(settings), capture_output=True, text=True, timeout=120
    ).stdout
    assert f"  {folder}: 2 documents, 2 chunks; last run " in status
    assert "(cancelled): 2 added, " in status

    # the next run embeds only what the cancelled one had not (the pipe is a file now);
    # the old request does not stop it: it was made before this run started
    (folder / PIPE).unlink()
    (folder / PIPE).write_text(PIPE_TEXT, "utf-8")
    summary = Ingestor(settings, embedder).run(folder)
    assert (summary.unchanged, summary.added) == (2, FILES - 2)
    assert summary.chunks_embedded == FILES - 2  # one chunk each: the rest, only
    assert len(open_index(settings).manifest(str(folder))) == FILES
