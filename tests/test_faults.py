"""Faults (issue 8, point 6): a disk that fills up during ingestion, and a Qdrant server
that restarts. Each ends with a one-line message and no traceback; the index still opens
and answers with what was written before (every document whole, in one version); the
next run brings it to what a fresh ingestion builds. Elsewhere: Ollama dying mid-stream
(tests/answering/test_answer.py), the embedded store held by another process (tests/ui/test_app.py,
tests/ingest/test_crash.py), a server never reachable (tests/index/test_backends.py).

The full disk is a real one: an ext4 file system in an image file, loop-mounted, holding
the data folder (this needs root and a loop device: skipped elsewhere, failed in CI). It
is filled by the run itself at a chosen moment — after its n-th write, through a hook
loaded as `sitecustomize` — so the moment is exact and the space is really taken. The
same ingestion runs everywhere with a full disk reported by a stand-in for
shutil.disk_usage, and with the engine's own "No space left on device" error, whose text
was captured from the real engine on the real disk (a test that keeps it honest).

RLIMIT_FSIZE (writes past N bytes fail with EFBIG) cannot simulate a full disk for this
engine: Qdrant Edge gives its files their size when it creates them (32 MiB WAL segments
and storage pages) and writes into them through memory maps, which the limit does not
cover, so a run under a limit fails at the creation of the index or never.

The restarting server is simulated at the client: a stand-in between ServerIndex and
qdrant-client's local mode fails calls as a restarting server does (the call in flight
applied but its answer lost, then connection refused, then HTTP 503 while it starts),
for a restart lasting a given number of seconds of the backend's pauses between
attempts; the pauses are counted, not slept.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from qdrant_edge import ScrollRequest
from typer.testing import CliRunner

import assistant.index.edge as edge_index
import assistant.index.server as server_index
from assistant.errors import DiskFull, StoreError
from assistant.index.edge import MIN_FREE_BYTES, EdgeIndex
from assistant.index.server import RESTART_WAITS, ServerIndex
from assistant.retrieval import Searcher
from assistant.settings import Settings
from ingest.pipeline import Ingestor, display_path, walk
from ingest.runs import recent_runs
from tests.conftest import SAMPLES, CachedEmbedder, closed_port_url, json_lines, run_cli
from ui.cli.main import app

CHUNK_SIZE = 32  # tokens: one chunk per paragraph, many small writes
BATCHES = {"TAIMATSU_EMBED_QUEUE": "16", "TAIMATSU_WRITE_BATCH": "16"}  # two notes a write
WORDS = "badge laptop printer invoice vendor budget payroll holiday canteen parking".split()
Versions = dict[tuple[str, str], set[str]]  # (source, doc_hash) -> ids of its points


@pytest.fixture(scope="module")
def embedder(embedder) -> CachedEmbedder:
    return CachedEmbedder(embedder)


def note(i: int, version: int = 1) -> str:
    """Eight paragraphs, each a fact with its own code; version 2 rewrites paragraph 3."""
    rng = random.Random(i)
    paragraphs = [f"# Note {i}"]
    for p in range(8):
        code = f"K{i:03d}P{p}" + ("V2" if version == 2 and p == 3 else "")
        words = " ".join(rng.choice(WORDS) for _ in range(9))
        paragraphs.append(f"Item {code} concerns the {rng.choice(WORDS)}: {words}.")
    return "\n\n".join(paragraphs) + "\n"


def write_notes(docs: Path, numbers: range, version: int = 1) -> None:
    for i in numbers:
        path = docs / f"team{i % 4}" / f"note{i:03d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(note(i, version), encoding="utf-8")


def on_disk(docs: Path) -> dict[str, str]:
    """source -> sha256 of its bytes, in the order a run goes through them."""
    return {
        display_path(path.relative_to(docs)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in walk(docs)
    }


def change_notes(
    docs: Path, settings: Settings, embedder, tmp_path: Path
) -> tuple[dict[str, str], dict[str, str], list[str], Versions]:
    """Change six notes and add six. Returns the folder's hashes before and after, the
    sources the next run writes (in its order), and the versions a fresh ingestion of
    the new folder holds."""
    old = on_disk(docs)
    write_notes(docs, range(0, 12, 2), version=2)  # six changed notes
    write_notes(docs, range(12, 18))  # and six new ones
    new = on_disk(docs)
    order = [source for source in new if old.get(source) != new[source]]
    fresh_settings = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    Ingestor(fresh_settings, embedder).run(docs)
    return old, new, order, edge_versions(fresh_settings.data_dir)


def check_cut(after: Versions, before: Versions, fresh: Versions, order: list[str]) -> list[str]:
    """The index after a run cut short, with `before` the index before the run, `fresh`
    a fresh ingestion of the folder and `order` the documents the run had to write, in
    its order: every document is whole and in one version, the old one or the new one,
    and the new ones are the first of `order` (the writes before the failed one). Returns
    those written."""
    hashes: dict[str, list[str]] = defaultdict(list)
    for source, doc_hash in after:
        hashes[source].append(doc_hash)
    assert all(len(found) == 1 for found in hashes.values()), "a document in two versions"
    for version, ids in after.items():
        assert ids in (before.get(version), fresh.get(version)), f"{version} is not whole"
    written = [
        source for source, doc_hash in fresh if source in order and (source, doc_hash) in after
    ]
    written.sort(key=order.index)
    assert written == order[: len(written)], "a document of a later write is in"
    assert set(hashes) == {source for source, _ in before} | set(written)
    return written


# -- a full disk, embedded store -------------------------------------------------------------


def edge_versions(data: Path) -> Versions:
    found: Versions = defaultdict(set)
    offset = None
    with EdgeIndex(data, 10).shard() as shard:
        while True:
            records, offset = shard.scroll(
                ScrollRequest(offset=offset, limit=1024, with_payload=["source", "doc_hash"])
            )
            for r in records:
                found[(r.payload["source"], r.payload["doc_hash"])].add(str(r.id))
            if offset is None:
                return dict(found)


def release(folder: Path) -> None:
    """Close this process's reader handles of indexes under `folder` (before unmounting)."""
    for key, shared in list(edge_index._shared.items()):
        if key.startswith(str(folder)):
            shared.release()
            if shared._probe_fd is not None:  # its probe of the writers' intent lock
                os.close(shared._probe_fd)
                shared._probe_fd = None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 128 MiB ext4 file system (no blocks reserved for root), loop-mounted."""
    mkfs = shutil.which("mkfs.ext4")
    image, mount_point = tmp_path / "disk.img", tmp_path / "disk"
    mount_point.mkdir()
    with image.open("wb") as fh:
        fh.truncate(128 * 2**20)
    problem = None if mkfs else "mkfs.ext4 (e2fsprogs) is not installed"
    if mkfs:
        subprocess.run([mkfs, "-q", "-F", "-m", "0", str(image)], check=True, timeout=60)
        mounted = subprocess.run(
            ["mount", "-o", "loop", str(image), str(mount_point)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        problem = mounted.stderr.strip() if mounted.returncode else None
    if problem:
        reason = f"no loop-mounted file system here ({problem}): run as root with loop devices"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        release(mount_point)
        if subprocess.run(["umount", str(mount_point)], check=False).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


# Loaded into a run (as sitecustomize): after the run's n-th write, another program takes
# all the free space of the data folder's disk (but TAIMATSU_TEST_LEAVE_BYTES).
FILL_HOOK = """
import os
import assistant.index.edge as edge

_left = int(os.environ["TAIMATSU_TEST_FILL_AFTER_WRITES"])
_leave = int(os.environ.get("TAIMATSU_TEST_LEAVE_BYTES", "0"))
_write = edge.EdgeIndex.write


def write(self, operations):
    global _left
    _write(self, operations)
    if operations:
        _left -= 1
        if _left == 0:
            usage = os.statvfs(self.data_dir)
            take = usage.f_bavail * usage.f_frsize - _leave
            with open(os.environ["TAIMATSU_TEST_BALLAST"], "wb") as fh:
                while True:
                    try:
                        os.posix_fallocate(fh.fileno(), 0, take)
                        break
                    except OSError:  # the ballast's own block map needs a few blocks
                        take -= 64 * 1024


edge.EdgeIndex.write = write
"""


def test_disk_filling_up_during_ingestion(small_disk, embedder, tmp_path):
    docs = tmp_path / "docs"
    write_notes(docs, range(12))
    settings = Settings(
        data_dir=small_disk / "data",
        chunk_size=CHUNK_SIZE,
        ollama_host=closed_port_url(),
        lock_timeout=10,
    )
    first = Ingestor(settings, embedder).run(docs)
    assert (first.added, first.failed) == (12, [])
    before = edge_versions(settings.data_dir)
    release(small_disk)
    runs_log = (settings.data_dir / "runs.jsonl").read_bytes()

    old, new, order, fresh = change_notes(docs, settings, embedder, tmp_path)

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FILL_HOOK, encoding="utf-8")
    ballast = small_disk / "ballast"
    env = {
        **BATCHES,
        "TAIMATSU_CHUNK_SIZE": str(CHUNK_SIZE),
        "TAIMATSU_PARSE_TIMEOUT": "0",  # plain text: no parsing process to start
        "TAIMATSU_TEST_FILL_AFTER_WRITES": "3",
        "TAIMATSU_TEST_BALLAST": str(ballast),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    failed = run_cli("ingest", "--json", str(docs), settings=settings, extra_env=env)
    assert ballast.is_file(), failed.stderr  # the disk did fill up, after the third write
    assert shutil.disk_usage(small_disk).free < 2**20
    assert failed.returncode == 1, failed.stderr  # not SIGBUS (-7), not a traceback
    assert failed.stdout == "" and "Traceback" not in failed.stderr
    (line,) = failed.stderr.splitlines()
    assert line.startswith(f"taimatsu: error: the disk holding {settings.data_dir} is full (")
    assert "MB free" in line and "free space on it and run again" in line

    # the full disk still answers, with what the three writes brought in
    after = edge_versions(settings.data_dir)
    written = check_cut(after, before, fresh, order)
    assert 0 < len(written) < len(order), "the disk did not fill up in the middle of the run"
    searcher = Searcher(settings, embedder)
    for i, version, index in ((0, 2, fresh), (2, 1, before)):  # written, and not reached
        source = f"team{i % 4}/note{i:03d}.md"
        assert (source in written) is (version == 2)
        paragraph = note(i, version).split("\n\n")[4]  # the one version 2 rewrites
        top = searcher.search(paragraph, ["everyone"], 3)[0]
        assert top.chunk_id in index[(source, (new if version == 2 else old)[source])]
    release(small_disk)
    assert (settings.data_dir / "runs.jsonl").read_bytes() == runs_log  # untouched
    assert EdgeIndex(settings.data_dir).counts()["documents"] == 12 + len(set(written) - set(old))

    # space is freed: the next run (which would exit 4 if the failed one had left the
    # ingestion lock held) finishes the job, and only it
    ballast.unlink()
    env.pop("TAIMATSU_TEST_FILL_AFTER_WRITES")
    again = run_cli("ingest", "--json", str(docs), settings=settings, extra_env=env)
    assert again.returncode == 0, again.stderr
    (summary,) = json_lines(again.stdout)
    assert summary["updated"] + summary["added"] == len(order) - len(written)
    assert summary["chunks_embedded"] == sum(
        len(ids) for (source, _), ids in fresh.items() if source in order[len(written) :]
    )
    assert edge_versions(settings.data_dir) == fresh
    release(small_disk)
    assert [run["added"] for run in recent_runs(settings.data_dir)] == [summary["added"], 12]


# What Qdrant Edge (qdrant-edge-py 0.9.0) raised when it met the full disk itself, captured
# by test_the_engine_meeting_a_full_disk_itself_is_one_sentence on a real ext4 image; the
# stand-in below raises this text, with the path it named.
ENGINE_DISK_FULL = (
    "Service runtime error: Failed to flush payload_index: Service runtime error: failed "
    "to write to file `{folder}/generations/1796632428105104527/shard/segments/"
    "f6218435-d15d-46bc-8b34-325a7ad33359/"
    "payload_index/877mf55q880bgee56kolanof-source-map/tracker_journal.dat`: No space left "
    "on device (os error 28)"
)
ENGINE_DISK_FULL_RE = re.compile(
    r"Service runtime error: Failed to flush payload_index: Service runtime error: failed "
    r"to write to file `(?P<folder>/\S+)/generations/\d+/shard/segments/[0-9a-f-]+/payload_index/"
    r"\S+/tracker_journal\.dat`: No space left on device \(os error 28\)"
)

# With FILL_HOOK: the product's room check before each write is switched off, as if
# another writer took the space between the check and the write, and what the engine
# raised is written down.
ENGINE_HOOK = """
_checked_write = edge.EdgeIndex.write
edge.EdgeIndex._check_room = lambda self, operations: None


def engine_write(self, operations):
    try:
        _checked_write(self, operations)
    except Exception as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        with open(os.environ["TAIMATSU_TEST_ENGINE_ERROR"], "w", encoding="utf-8") as fh:
            fh.write(f"{type(cause).__name__}: {cause}")
        raise


edge.EdgeIndex.write = engine_write
"""


def test_the_engine_meeting_a_full_disk_itself_is_one_sentence(small_disk, embedder, tmp_path):
    """The real engine on a really full disk, with the product's check before writes
    switched off: after the run's first write the disk is filled but for 64 KiB, and the
    next flush of a payload index fails. The engine's own words (ENGINE_DISK_FULL, what
    the stand-in test below raises) become the one-sentence message. Unlike a run stopped
    by the product's check, the index does not open again until space is freed (the
    engine repairs the segment it failed to flush, which needs space), and says so in
    the same sentence; then it opens with every document whole, and the next run
    catches up.

    Left with no space at all, or after the second write, the engine dies of SIGBUS
    instead (it writes through memory maps): that is why the product checks for room
    before each write (tests above). This test pins the one moment the engine reports."""
    docs = tmp_path / "docs"
    write_notes(docs, range(12))
    settings = Settings(
        data_dir=small_disk / "data",
        chunk_size=CHUNK_SIZE,
        ollama_host=closed_port_url(),
        lock_timeout=10,
    )
    Ingestor(settings, embedder).run(docs)
    before = edge_versions(settings.data_dir)
    release(small_disk)
    _, _, order, fresh = change_notes(docs, settings, embedder, tmp_path)

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FILL_HOOK + ENGINE_HOOK, encoding="utf-8")
    ballast, said = small_disk / "ballast", tmp_path / "engine-error.txt"
    env = {
        **BATCHES,
        "TAIMATSU_CHUNK_SIZE": str(CHUNK_SIZE),
        "TAIMATSU_PARSE_TIMEOUT": "0",
        "TAIMATSU_TEST_FILL_AFTER_WRITES": "1",
        "TAIMATSU_TEST_LEAVE_BYTES": str(64 * 1024),
        "TAIMATSU_TEST_BALLAST": str(ballast),
        "TAIMATSU_TEST_ENGINE_ERROR": str(said),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    failed = run_cli("ingest", "--json", str(docs), settings=settings, extra_env=env)
    assert ballast.is_file(), failed.stderr  # the disk did fill up
    assert failed.returncode != -signal.SIGBUS, "the engine died of SIGBUS, reporting nothing"
    assert failed.returncode == 1 and said.is_file(), failed.stderr
    engine_said = said.read_text(encoding="utf-8")
    print(f"the engine said: {engine_said}")
    kind, _, text = engine_said.partition(": ")
    assert kind == "Exception" and (match := ENGINE_DISK_FULL_RE.fullmatch(text)), engine_said
    assert match["folder"] == str(settings.data_dir)
    assert failed.stdout == "" and failed.stderr == (
        f"taimatsu: error: the disk holding {settings.data_dir} is full; free space on it "
        "and run again (what was written before is kept)\n"
    )

    # the engine must repair the segment it failed to flush before it opens it, and that
    # needs space: until some is freed, opening says the same sentence
    with pytest.raises(DiskFull, match="is full; free space on it and run again"):
        edge_versions(settings.data_dir)
    release(small_disk)
    ballast.unlink()
    written = check_cut(edge_versions(settings.data_dir), before, fresh, order)
    assert len(written) < len(order), "the disk did not fill up before the run's end"
    release(small_disk)
    for name in ("TAIMATSU_TEST_FILL_AFTER_WRITES", "TAIMATSU_TEST_LEAVE_BYTES"):
        env.pop(name)
    again = run_cli("ingest", "--json", str(docs), settings=settings, extra_env=env)
    assert again.returncode == 0, again.stderr
    assert edge_versions(settings.data_dir) == fresh
    release(small_disk)


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    write_notes(docs, range(8))
    return docs


def test_a_disk_reported_full_stops_the_run_before_the_write(
    settings, embedder, notes, monkeypatch, tmp_path
):
    """The same run without a file system of its own: shutil.disk_usage says the disk
    is full, from the start, then after the second write of a run."""
    settings = settings.model_copy(
        update={"chunk_size": CHUNK_SIZE, "write_batch": 16, "embed_queue": 16}
    )
    real_usage, real_write = shutil.disk_usage, EdgeIndex.write
    writes: list[int] = []
    full_after = [0]

    def disk_usage(path):
        usage = real_usage(path)
        return usage._replace(free=MIN_FREE_BYTES - 1) if len(writes) >= full_after[0] else usage

    def write(self, operations):
        real_write(self, operations)
        writes.append(len(operations))

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    monkeypatch.setattr(EdgeIndex, "write", write)
    with pytest.raises(DiskFull, match="is full") as refused:  # not even an empty index
        Ingestor(settings, embedder).run(notes)
    assert str(refused.value).startswith(f"the disk holding {settings.data_dir} is full (")
    assert not EdgeIndex(settings.data_dir).exists()
    assert not list((settings.data_dir / "generations").glob("*"))  # nothing half-built

    full_after[0] = 10**6
    Ingestor(settings, embedder).run(notes)
    before, runs = edge_versions(settings.data_dir), recent_runs(settings.data_dir)
    old = on_disk(notes)
    write_notes(notes, range(8), version=2)
    order = list(on_disk(notes))
    fresh_settings = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    Ingestor(fresh_settings, embedder).run(notes)
    fresh = edge_versions(fresh_settings.data_dir)

    writes.clear()
    full_after[0] = 2
    with pytest.raises(DiskFull, match="free space on it and run again"):
        Ingestor(settings, embedder).run(notes)
    assert len(writes) == 2
    written = check_cut(edge_versions(settings.data_dir), before, fresh, order)
    assert 0 < len(written) < len(order) and set(old) == set(order)
    assert recent_runs(settings.data_dir) == runs

    full_after[0] = 10**6
    summary = Ingestor(settings, embedder).run(notes)
    assert (summary.updated, summary.unchanged) == (len(order) - len(written), len(written))
    assert edge_versions(settings.data_dir) == fresh


def test_the_engines_own_disk_full_error_is_one_sentence(settings, embedder, notes, monkeypatch):
    """When the disk fills up between the check and the write (another writer), the
    engine reports it: the run ends with the same sentence, and the next run catches up."""
    settings = settings.model_copy(update={"chunk_size": CHUNK_SIZE})
    real = edge_index.EdgeShard
    full = [True]

    class Shard:
        def __init__(self, shard) -> None:
            self._shard = shard

        def __getattr__(self, name):
            return getattr(self._shard, name)

        def flush(self):
            if full[0]:  # the engine's own words, as captured on a real full disk
                raise Exception(ENGINE_DISK_FULL.format(folder=settings.data_dir))  # noqa: TRY002
            self._shard.flush()

    class EdgeShard:
        create = staticmethod(real.create)

        @staticmethod
        def load(path):
            return Shard(real.load(path))

    monkeypatch.setattr(edge_index, "EdgeShard", EdgeShard)
    with pytest.raises(DiskFull) as failed:
        Ingestor(settings, embedder).run(notes)
    message = str(failed.value)
    assert message.startswith(f"the disk holding {settings.data_dir} is full;")
    assert "\n" not in message and "os error" not in message
    full[0] = False
    summary = Ingestor(settings, embedder).run(notes)
    assert summary.added + summary.unchanged == 8 and not summary.failed
    index = EdgeIndex(settings.data_dir)
    assert index.counts()["documents"] == 8
    assert all(len(info.hashes) == 1 for info in index.manifest(str(notes.resolve())).values())


@pytest.fixture
def cli(monkeypatch, tmp_path, embedder):
    """The `taimatsu` command in this process, with the session's model."""
    for name in list(os.environ):
        if name.startswith("TAIMATSU_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no taimatsu.toml
    monkeypatch.setenv("TAIMATSU_OLLAMA_HOST", closed_port_url())
    monkeypatch.setenv("TAIMATSU_PARSE_TIMEOUT", "0")
    for name, value in BATCHES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("ingest.pipeline.Embedder", lambda *args, **kwargs: embedder)
    monkeypatch.setattr("assistant.retrieval.search.Embedder", lambda *args, **kwargs: embedder)
    return CliRunner()


def test_a_full_disk_outside_the_index_is_one_line(cli, notes, monkeypatch, tmp_path):
    data = tmp_path / "data"
    monkeypatch.setenv("TAIMATSU_DATA_DIR", str(data))

    def record_run(folder, summary):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "runs.tmp"))

    monkeypatch.setattr("ingest.pipeline.record_run", record_run)
    result = cli.invoke(app, ["ingest", str(notes)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        f"taimatsu: error: the disk holding {data} is full; free space on it and run again "
        "(what was written before is kept)\n"
    )

    def refused(folder, summary):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder / "runs.tmp"))

    monkeypatch.setattr("ingest.pipeline.record_run", refused)
    with pytest.raises(PermissionError):  # any other OSError is a bug: not made a sentence
        cli.invoke(app, ["ingest", str(notes)], catch_exceptions=False)


# -- a Qdrant server restarting, server mode ------------------------------------------------


class Restarting:
    """qdrant-client's local mode behind a server that restarts. `crash_at(name, n)`: the
    n-th call of `name` from then on is applied, then the connection drops and the
    server is away for `seconds`: calls are refused, then answered HTTP 503 in its last
    second, until that many seconds of pauses (`pause`, the backend's sleep) have passed,
    or until `back()`."""

    def __init__(self, inner: QdrantClient) -> None:
        self.inner = inner
        self.clock = 0.0
        self.back_at: float | None = None
        self.pauses: list[float] = []
        self.failed: list[str] = []
        self._crash: tuple[str, int, float] | None = None

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock += seconds

    def restart(self, seconds: float) -> None:
        self.back_at = self.clock + seconds

    def crash_at(self, name: str, n: int, seconds: float) -> None:
        self._crash = (name, n, seconds)

    def back(self) -> None:
        self.back_at = None

    def __getattr__(self, name: str):
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.back_at is not None and self.clock < self.back_at:
                self.failed.append(name)
                if self.back_at - self.clock > 1:
                    raise ResponseHandlingException(
                        httpx.ConnectError("[Errno 111] Connection refused")
                    )
                raise UnexpectedResponse(
                    503, "Service Unavailable", b'{"status":{"error":"starting"}}', httpx.Headers()
                )
            if self._crash and self._crash[0] == name:
                _, n, seconds = self._crash
                self._crash = (name, n - 1, seconds) if n > 1 else None
                if n == 1:
                    attr(*args, **kwargs)  # applied; the answer never comes
                    self.restart(seconds)
                    self.failed.append(name)
                    raise ResponseHandlingException(
                        httpx.RemoteProtocolError("Server disconnected without sending a response.")
                    )
            return attr(*args, **kwargs)

        return call


URL = "http://qdrant.test:6333"


@pytest.fixture
def server(tmp_path: Path, monkeypatch) -> Iterator[Restarting]:
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    restarting = Restarting(client)
    monkeypatch.setattr(server_index, "_sleep", restarting.pause)
    yield restarting
    client.close()


def server_versions(client: QdrantClient) -> Versions:
    found: Versions = defaultdict(set)
    offset = None
    while True:
        records, offset = client.scroll(
            "taimatsu", limit=1024, offset=offset, with_payload=["source", "doc_hash"]
        )
        for r in records:
            found[(r.payload["source"], r.payload["doc_hash"])].add(str(r.id))
        if offset is None:
            return dict(found)


@pytest.fixture(scope="module")
def samples_fresh(tmp_path_factory, embedder) -> Versions:
    """The samples ingested at once into the server backend: what every run must reach."""
    folder = tmp_path_factory.mktemp("fresh-server")
    client = QdrantClient(path=str(folder / "qdrant"))
    settings = Settings(data_dir=folder / "data", write_batch=8, embed_queue=8)
    Ingestor(settings, embedder, index=ServerIndex(settings, client=client)).run(SAMPLES)
    try:
        return server_versions(client)
    finally:
        client.close()


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", qdrant_url=URL, ollama_host=closed_port_url())


def test_a_query_waits_out_a_restart_and_fails_after_ten_seconds(
    server, server_settings, embedder, samples_fresh
):
    index = ServerIndex(server_settings, client=server)  # type: ignore[arg-type]
    Ingestor(server_settings, embedder, index=index).run(SAMPLES)
    searcher = Searcher(server_settings, embedder)
    searcher.index = index
    question = "How many days a week may I work from home?"
    answered = [p.chunk_id for p in searcher.search(question, ["everyone"], 5)]
    assert answered

    server.restart(3.0)  # a short restart: the query waits for it
    assert [p.chunk_id for p in searcher.search(question, ["everyone"], 5)] == answered
    assert server.pauses == [0.1, 0.2, 0.4, 0.8, 1.5] and server.failed

    server.pauses.clear()
    server.restart(60.0)  # a long one: one sentence after about ten seconds
    with pytest.raises(StoreError) as failed:
        searcher.search(question, ["everyone"], 5)
    assert server.pauses == list(RESTART_WAITS) and 9 < sum(RESTART_WAITS) < 12
    message = str(failed.value)
    assert message.startswith(f"the Qdrant server at {URL} is unreachable (")
    assert "\n" not in message and "Traceback" not in message and "home" not in message

    server.back()
    assert [p.chunk_id for p in searcher.search(question, ["everyone"], 5)] == answered
    assert server_versions(server.inner) == samples_fresh


def test_a_server_that_never_answered_fails_at_once(server, server_settings):
    server.restart(60.0)
    index = ServerIndex(server_settings, client=server)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="is unreachable"):
        index.exists()
    assert server.pauses == [] and server.failed == ["get_collection"]


@pytest.fixture
def server_cli(cli, server, monkeypatch, tmp_path) -> CliRunner:
    """The command in server mode, its client the restarting stand-in; the samples go in
    four writes of two documents."""
    monkeypatch.setattr(ServerIndex, "_connect", lambda self, settings: server)
    monkeypatch.setenv("TAIMATSU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TAIMATSU_QDRANT_URL", URL)
    monkeypatch.setenv("TAIMATSU_EMBED_QUEUE", "8")
    monkeypatch.setenv("TAIMATSU_WRITE_BATCH", "8")
    return cli


def test_ingestion_through_a_restart(server_cli, server, samples_fresh):
    """A short restart in the middle of a run: the write in flight was applied but its
    answer lost; it is sent again once the server is back, to the same index."""
    server.crash_at("batch_update_points", 3, seconds=2.0)
    result = server_cli.invoke(app, ["ingest", "--json", str(SAMPLES)])
    assert result.exit_code == 0, result.output
    assert server.failed[0] == "batch_update_points"
    assert server.pauses == [0.1, 0.2, 0.4, 0.8, 1.5]  # back after two seconds
    assert json_lines(result.stdout)[0]["added"] == 8
    assert server_versions(server.inner) == samples_fresh


def test_ingestion_cut_by_a_long_restart_then_caught_up(
    server_cli, server, tmp_path, samples_fresh
):
    cli, data = server_cli, tmp_path / "data"
    server.crash_at("batch_update_points", 3, seconds=120.0)
    failed = cli.invoke(app, ["ingest", "--json", str(SAMPLES)])
    assert failed.exit_code == 1 and failed.stdout == ""
    (line,) = failed.stderr.splitlines()
    assert line.startswith(f"taimatsu: error: the Qdrant server at {URL} is unreachable (")
    assert "check TAIMATSU_QDRANT_URL" in line and server.pauses == list(RESTART_WAITS)
    assert recent_runs(data) == []

    # while it is away, a query is one sentence and shows nothing of the documents
    query = cli.invoke(app, ["search", "VPN-0x2F"])
    assert query.exit_code == 1 and query.stdout == ""
    assert query.stderr.startswith(f"taimatsu: error: the Qdrant server at {URL} is unreachable")
    assert query.stderr.count("\n") == 1

    server.back()
    order = list(on_disk(SAMPLES))
    written = check_cut(server_versions(server.inner), {}, samples_fresh, order)
    assert 0 < len(written) < len(order)
    query = cli.invoke(app, ["search", "--json", "VPN-0x2F"])
    assert query.exit_code == 0, query.output
    again = cli.invoke(app, ["ingest", "--json", str(SAMPLES)])
    assert again.exit_code == 0, again.output
    summary = json_lines(again.stdout)[0]
    assert (summary["added"], summary["unchanged"]) == (len(order) - len(written), len(written))
    assert server_versions(server.inner) == samples_fresh
    assert [run["added"] for run in recent_runs(data)] == [summary["added"]]
