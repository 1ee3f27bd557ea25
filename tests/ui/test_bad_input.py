"""Bad input in one real `taimatsu ingest` run: each bad file is reported with one line
saying which file and why, the run goes on, and the summary and exit code say some files
failed; good files, whatever the script of their names, are searchable with their names
intact."""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfWriter

from assistant.retrieval import Searcher
from assistant.settings import Settings
from ingest.pipeline import walk
from tests.conftest import CACHE_ENV, SAMPLES, closed_port_url, json_lines

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>
TWO_GB = 2 * 1024**3

# good files with names in several scripts: relative name -> (content, query)
GOOD = {
    "intl/議事録.md": (
        "# 議事録\n\n次回の全社会議はオーロラホールで開催します。合言葉は朱鷺二十三です。\n",
        "全社会議はどこで開催しますか オーロラホール",
    ),
    "intl/تقرير.txt": (
        "تقرير ربع سنوي. The quarterly report codename is QUOKKA-ARABIC-11.\n",
        "quarterly report codename QUOKKA-ARABIC-11",
    ),
    "intl/🔥 incident notes.md": (
        "# Incident\n\nThe fire drill assembly point is the NARWHAL-7 car park.\n",
        "fire drill assembly point NARWHAL-7",
    ),
    "intl/cafe\u0301 menu.txt": (  # NFD: "e" + COMBINING ACUTE ACCENT, kept as is
        "The cafe serves the PELICAN-PIE-88 every Thursday.\n",
        "which pie does the cafe serve PELICAN-PIE-88",
    ),
    "cycle/inside.md": (
        "# Loops\n\nThe folder with a symlink cycle still holds the OCELOT-5 memo.\n",
        "OCELOT-5 memo",
    ),
}
# a name whose bytes are not UTF-8 (Latin-1 "menü-été"), and how the index shows it
BAD_BYTES_NAME = b"intl/men\xfc-\xe9t\xe9.txt"
BAD_BYTES_SHOWN = "intl/men\\xfc-\\xe9t\\xe9.txt"
BAD_BYTES_FACT = ("The canteen special this week is BLINTZ-4471.\n", "canteen special BLINTZ-4471")

# bad file -> words its one-line reason must contain (any one of each tuple)
BAD = {
    "bad/corrupt.pdf": ("pdf",),
    "bad/truncated.pdf": ("pdf",),
    "bad/protected.pdf": ("password",),
    "bad/empty.txt": ("empty",),
    "bad/binary.txt": ("binary", "not a text"),
    "bad/huge.txt": ("taimatsu_max_file_mb", "limit"),
    "bad/loop.txt": ("symbolic link", "loop"),
    "bad/unreadable.txt": ("permission",),
}


def _protected_pdf(data: bytes) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password="hunter2", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _drop_file_override() -> None:  # runs in the child, before exec
    """Root ignores permission bits through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH;
    dropped from the bounding set, the exec'd program is root bound by them (the venv's
    interpreter lives under /root, so switching to 'nobody' could not even start it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _build_corpus(docs: Path) -> None:
    shutil.copytree(SAMPLES, docs)
    for name, (text, _query) in GOOD.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text, encoding="utf-8")
    with open(os.fsencode(docs) + b"/" + BAD_BYTES_NAME, "wb") as fh:
        fh.write(BAD_BYTES_FACT[0].encode())
    os.symlink("..", docs / "cycle" / "back")  # a directory cycle: cycle/back/cycle/back/...

    bad = docs / "bad"
    bad.mkdir()
    pdf = (SAMPLES / "en" / "vpn-troubleshooting.pdf").read_bytes()
    (bad / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    (bad / "truncated.pdf").write_bytes(pdf[: len(pdf) // 2])
    (bad / "protected.pdf").write_bytes(_protected_pdf(pdf))
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(os.urandom(4096) + bytes(range(256)) * 16)
    with open(bad / "huge.txt", "wb") as fh:  # sparse: 2 GB that cost no disk
        fh.truncate(TWO_GB)
    os.symlink("loop.txt", bad / "loop.txt")  # points at itself
    (bad / "unreadable.txt").write_text("The vault code is SECRET-9.\n", encoding="utf-8")
    (bad / "unreadable.txt").chmod(0)


def _bound_by_permissions(unreadable: Path) -> dict[str, object]:
    """Popen arguments under which permission bits apply to the run; skip if none."""
    if os.geteuid() != 0:
        return {}
    probe = subprocess.run(
        [sys.executable, "-c", f"open({str(unreadable)!r}).read()"],
        preexec_fn=_drop_file_override,
        capture_output=True,
        check=False,
    )
    if b"PermissionError" not in probe.stderr:
        pytest.skip(f"cannot make a file unreadable to root here: {probe.stderr[-200:]!r}")
    return {"preexec_fn": _drop_file_override}


# Runs the command and writes its peak memory: a fork of this (large) test process would
# count the test's own memory as the child's until the exec, so a small Python forks it.
PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


def _ingest(
    folder: Path, data: Path, env: dict[str, str], privileges: dict, work: Path
) -> tuple[int, str, str, int]:
    """`taimatsu ingest --json folder` in its own process: exit code, stdout, stderr and
    the run's own peak memory in bytes (with its parser workers)."""
    exe = Path(sys.executable).with_name("taimatsu")
    out, err, peak = (work / f"{data.name}.{n}" for n in ("stdout", "stderr", "peak"))
    with out.open("wb") as stdout_file, err.open("wb") as stderr_file:
        command = [sys.executable, "-c", PEAK_WRAPPER, str(peak), str(exe), "ingest", "--json"]
        proc = subprocess.Popen(
            [*command, str(folder)],
            stdout=stdout_file,
            stderr=stderr_file,
            env={**env, "TAIMATSU_DATA_DIR": str(data)},
            cwd=work,
            **privileges,
        )
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    stderr = err.read_bytes().decode("utf-8", "replace")
    return proc.returncode, out.read_text("utf-8"), stderr, int(peak.read_text()) * 1024


def test_bad_files_are_reported_one_line_each_and_good_files_are_indexed(tmp_path, embedder):
    docs, data = tmp_path / "docs", tmp_path / "data"
    _build_corpus(docs)
    assert os.stat(docs / "bad" / "huge.txt").st_blocks == 0  # really sparse
    privileges = _bound_by_permissions(docs / "bad" / "unreadable.txt")

    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_") or k == CACHE_ENV}
    env.update(TAIMATSU_OLLAMA_HOST=closed_port_url(), TAIMATSU_LOCK_TIMEOUT="10")
    returncode, stdout, stderr, peak = _ingest(docs, data, env, privileges, tmp_path)
    assert returncode == 3, stderr  # finished, some files failed

    (summary,) = json_lines(stdout)
    good = len(list(walk(SAMPLES))) + len(GOOD) + 1
    failed = {f["source"]: f["error"] for f in summary["failed"]}
    assert set(failed) == set(BAD), failed
    for source, words in BAD.items():
        reason = failed[source]
        assert reason.strip() and "\n" not in reason and len(reason) < 200, (source, reason)
        assert any(w in reason.lower() for w in words), (source, reason)
    assert (summary["added"], summary["updated"], summary["deleted"]) == (good, 0, 0)
    assert summary["files_seen"] == good + len(BAD)  # the cycle was not walked into

    # the cron log: one line per bad file, naming it and saying why
    lines = stderr.splitlines()
    for source, reason in failed.items():
        assert [line for line in lines if source in line] == [f"failed: {source}: {reason}"]

    # the 2 GB file was refused without being read into memory
    assert peak < TWO_GB * 0.75

    # the good files answer, under their names as written (undecodable bytes as \\xNN)
    searcher = Searcher(Settings(data_dir=data, lock_timeout=10), embedder)
    expected = {name: query for name, (_text, query) in GOOD.items()}
    expected[BAD_BYTES_SHOWN] = BAD_BYTES_FACT[1]
    for name, query in expected.items():
        sources = [p.source for p in searcher.search(query, ["everyone"], 3)]
        assert name in sources, (name, sources)
    every = {p.source for p in searcher.search("report memo code notes", ["everyone"], 50)}
    assert not any(s.startswith("bad/") or "/back/" in s for s in every), every

    # and nothing else in the log: a line that names no file is noise a reader cannot act on
    noise = [line for line in lines if not line.startswith("failed: ")]
    assert not noise, f"stderr lines that are not one-line file reports: {noise}"
