"""Crash safety and concurrency of real `taimatsu ingest` runs on the embedded store.

Runs are killed with SIGKILL at chosen moments, found by watching the run rather than by
sleeping: its locks in /proc/locks (the ingestion lock file; the writers' intent lock
and the shard's WAL folder, which Qdrant Edge locks while a handle is open) and the
index itself (short read-only opens). One kill no observer can time — between a
document's new version and the removal of its old one — is made by the run itself,
through a hook loaded as `sitecustomize`. After every kill the index must answer
correctly; the next run must finish the job, to the same index a fresh ingestion builds.

The corpus is generated: small notes, each paragraph a fact with its own code, ingested
with the smallest chunk size (one chunk per paragraph). Moved notes make a run write
several times (a move reuses vectors, and flushes first), so there are points between
writes and inside them to kill a run at.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from qdrant_edge import EdgeShard, ScrollRequest

from assistant.edge_index import EdgeIndex
from assistant.embedder import Embedder
from assistant.retrieval import Searcher
from assistant.settings import Settings
from ingest.chunker import Chunker
from ingest.parsers import parse
from ingest.pipeline import Ingestor, display_path, walk
from tests.conftest import SAMPLES, closed_port_url, json_lines

pytestmark = pytest.mark.skipif(
    not Path("/proc/locks").is_file(), reason="kill points are found through /proc/locks"
)

CHUNK_SIZE = 32  # tokens: one chunk per paragraph, many points per second of embedding
LOCK_TIMEOUT = 10.0  # seconds a search or a write waits for the store
NOTES = 40  # of 8 chunks each; with the samples, about 500 chunks
WORDS = (
    "badge laptop printer invoice vendor budget payroll holiday canteen parking shuttle "
    "locker archive ledger audit travel visa meeting roster shift training safety helmet "
    "forklift warehouse pallet courier parcel contract renewal licence server backup router"
).split()
QUERIES = [
    "Item K004P1 concerns",  # a paragraph that is the same in both versions of note 4
    "K010P3V2",  # a paragraph that only the second version of note 10 has
    "K011P3",
    "warehouse pallet courier parcel",
    "canteen parking shuttle locker",
    "What does error VPN-0x2F mean?",
    "在宅勤務は週何日までですか",
]


# -- the corpus -----------------------------------------------------------------------------


def note(i: int, version: int = 1) -> str:
    """Eight paragraphs of facts; version 2 rewrites paragraph 3 and keeps the others."""
    rng = random.Random(i)
    paragraphs = [f"# Note {i}"]
    for p in range(8):
        code = f"K{i:03d}P{p}" + ("V2" if version == 2 and p == 3 else "")
        words = " ".join(rng.choice(WORDS) for _ in range(9))
        paragraphs.append(f"Item {code} concerns the {rng.choice(WORDS)}: {words}.")
    return "\n\n".join(paragraphs) + "\n"


def note_path(docs: Path, i: int) -> Path:
    return docs / f"team{i % 10:02d}" / f"note{i:03d}.{'txt' if i % 3 == 0 else 'md'}"


def write_notes(docs: Path, numbers: range) -> None:
    for i in numbers:
        path = note_path(docs, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(note(i), encoding="utf-8")


def make_v2(docs: Path) -> None:
    """Change many notes, move some (their vectors are reused), delete and add a few."""
    for i in range(0, NOTES, 2):
        note_path(docs, i).write_text(note(i, 2), encoding="utf-8")
    for i in range(1, NOTES, 12):  # spread over the folders: reuse flushes mid-run
        old = note_path(docs, i)
        old.rename(old.with_name(f"moved-{old.name}"))
    for i in range(7, NOTES, 16):
        note_path(docs, i).unlink()
    write_notes(docs, range(NOTES, NOTES + 6))


def versions(docs: Path) -> dict[str, str]:
    """source -> sha256 of what is on disk, as the index names them."""
    return {
        display_path(path.relative_to(docs)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in walk(docs)
    }


# -- watching and killing a run ---------------------------------------------------------------


def settings_for(data: Path) -> Settings:
    return Settings(
        data_dir=data,
        chunk_size=CHUNK_SIZE,
        lock_timeout=LOCK_TIMEOUT,
        ollama_host=closed_port_url(),
    )


# Loaded into a run (as sitecustomize) to SIGKILL it at an exact point no outside
# observer can catch: right after the store applied its n-th upsert of a document's
# points, before the removal of that document's other versions.
KILL_HOOK = """
import os, signal
import assistant.edge_index as edge
from assistant.index import Upsert

_after = int(os.environ["TAIMATSU_TEST_KILL_AFTER_UPSERTS"])
_kinds = []  # of the operations converted for the write in progress, in order
_convert = edge._operation
_real = edge.EdgeShard


def _operation(op):
    _kinds.append(isinstance(op, Upsert))
    return _convert(op)


class _Shard:
    def __init__(self, shard):
        self._shard = shard

    def __getattr__(self, name):
        return getattr(self._shard, name)

    def update(self, operation):
        self._shard.update(operation)
        global _after
        if _kinds.pop(0):
            _after -= 1
            if _after == 0:  # the run and any helper process it started
                os.killpg(os.getpgid(0), signal.SIGKILL)


class EdgeShard:
    create = staticmethod(_real.create)

    @staticmethod
    def load(path):
        return _Shard(_real.load(path))


edge._operation = _operation
edge.EdgeShard = EdgeShard
"""


def start_ingest(
    docs: Path, data: Path, kill_after_upserts: int = 0, **env_extra: str
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_")}
    if kill_after_upserts:
        hook = data.parent / "kill-hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(KILL_HOOK, encoding="utf-8")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
        env["TAIMATSU_TEST_KILL_AFTER_UPSERTS"] = str(kill_after_upserts)
    env.update(
        TAIMATSU_DATA_DIR=str(data),
        TAIMATSU_CHUNK_SIZE=str(CHUNK_SIZE),
        # small batches: many writes, so that "inside a write" and "between writes"
        # exist at every point of a run, however fast the machine
        TAIMATSU_EMBED_QUEUE="16",
        TAIMATSU_WRITE_BATCH="16",
        TAIMATSU_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
        TAIMATSU_OLLAMA_HOST=closed_port_url(),
        **env_extra,
    )
    exe = Path(sys.executable).with_name("taimatsu")
    return subprocess.Popen(
        [str(exe), "ingest", "--json", str(docs)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Runs started by a test; any still alive at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def locks_held(pid: int) -> set[int]:
    """Inodes of the exclusive flock/fcntl locks `pid` holds."""
    held = set()
    with open("/proc/locks", encoding="ascii") as fh:
        for line in fh:
            fields = line.split()
            if "->" in fields or len(fields) < 6:  # a waiter, not a holder
                continue
            if fields[3] == "WRITE" and fields[4] == str(pid):
                held.add(int(fields[5].rsplit(":", 1)[1]))
    return held


def holds(pid: int, *paths: Path) -> bool:
    try:
        inodes = {os.stat(path).st_ino for path in paths}
    except FileNotFoundError:
        return False
    return inodes <= locks_held(pid)


def holds_ingest_lock(pid: int, data: Path) -> bool:
    return holds(pid, data / "ingest.lock")


def writing(pid: int, data: Path) -> bool:
    """The run is inside a write: it holds the writer's intent lock and has the shard
    open (Qdrant Edge flocks the shard's WAL folder while a handle is open)."""
    return holds(pid, data / "write.intent", data / "index" / "shard" / "wal")


def wait_for(proc: subprocess.Popen[str], what: str, test: Callable[[], bool], pause: float):
    while not test():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(pause)


def kill(proc: subprocess.Popen[str]) -> None:
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def peek(data: Path) -> list[dict] | None:
    """Every point's payload, read straight from the shard and closed at once; None when
    that cannot be done now. (Not through EdgeIndex, whose reader keeps its handle open
    for a while: the test must not be the reason a run waits.) Like the product's own
    readers, it keeps to the writers' protocol: it opens only while it holds the intent
    lock shared, so that it never tries to open the shard while a writer has it — such
    failed opens can make Qdrant Edge lose the writer's updates."""
    intent = data / "write.intent"
    if not intent.parent.is_dir():
        return None
    fd = os.open(intent, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # a writer is writing or waiting to
            return None
        try:
            shard = EdgeShard.load(str(data / "index" / "shard"))
        except Exception:  # held by a reader, or not created yet  # noqa: BLE001
            return None
        try:
            payloads, offset = [], None
            while True:
                records, offset = shard.scroll(
                    ScrollRequest(offset=offset, limit=1024, with_payload=["source", "doc_hash"])
                )
                payloads += [dict(r.payload or {}) for r in records]
                if offset is None:
                    return payloads
        finally:
            shard.close()
    finally:
        os.close(fd)  # releases the lock


def visible_share(data: Path, targets: set[tuple[str, str]]) -> float:
    """Share of `targets` (source, doc_hash) the index holds."""
    payloads = peek(data)
    if payloads is None:
        return 0.0
    return len(targets & {(p["source"], p["doc_hash"]) for p in payloads}) / len(targets)


def kill_at(
    proc: subprocess.Popen[str],
    data: Path,
    targets: set[tuple[str, str]],
    share: float,
    in_write: bool,
) -> None:
    """Kill once `share` of `targets` is in the index: at once (the run is embedding its
    next batch), or, with `in_write`, as soon as the run next holds the store open."""
    wait_for(
        proc,
        f"{share:.0%} of its documents were written",
        lambda: visible_share(data, targets) >= share,
        0.2,
    )
    if in_write:  # only /proc/locks from here on: nothing that could delay the writer
        wait_for(proc, "its next write", lambda: writing(proc.pid, data), 0.001)
    kill(proc)


# -- what "answering correctly" means ------------------------------------------------------------


def scan(index: EdgeIndex) -> dict[str, dict]:
    """Every point's id and payload (without text and vectors)."""
    points: dict[str, dict] = {}
    offset = None
    fields = ["source", "doc_hash", "chunk", "chunks", "indexed_at"]
    with index.shard() as shard:
        while True:
            records, offset = shard.scroll(
                ScrollRequest(offset=offset, limit=1024, with_payload=fields, with_vector=False)
            )
            points.update((str(r.id), dict(r.payload or {})) for r in records)
            if offset is None:
                return points


def check_answers(
    settings: Settings, embedder: Embedder, root: str, known: set[tuple[str, str]]
) -> dict[str, int]:
    """The index opens and answers as if every write were all-or-nothing: each document
    version it holds is whole and is one the corpus had; no search shows a passage twice
    or two versions of one document. Returns how many documents (versions) it holds and
    how many documents are there in two versions (a replacement the next run finishes)."""
    index = EdgeIndex(settings.data_dir, LOCK_TIMEOUT)
    searcher = Searcher(settings, embedder)
    if not index.exists():  # killed before the index was created
        assert all(searcher.search(q, ["everyone"], 10) == [] for q in QUERIES)
        return {"documents": 0, "two_versions": 0}
    points = scan(index)
    numbers: dict[tuple[str, str], list[int]] = defaultdict(list)
    totals: dict[tuple[str, str], set[int]] = defaultdict(set)
    for payload in points.values():
        version = (payload["source"], payload["doc_hash"])
        numbers[version].append(payload["chunk"])
        totals[version].add(payload["chunks"])
    for version, chunks in numbers.items():
        assert version in known, f"{version} was never on disk"
        assert len(totals[version]) == 1, f"{version}: chunks of two different runs"
        (total,) = totals[version]
        assert sorted(chunks) == list(range(total)), f"{version} is not whole"
    by_source: dict[str, set[str]] = defaultdict(set)
    for source, doc_hash in numbers:
        by_source[source].add(doc_hash)
    assert all(len(hashes) <= 2 for hashes in by_source.values())
    assert index.counts() == {"documents": len(numbers), "chunks": len(points)}
    manifest = index.manifest(root)
    assert {source: info.hashes for source, info in manifest.items()} == by_source

    for query in QUERIES:
        shown: dict[str, str] = {}
        passages: set[tuple[str, int]] = set()
        for passage in searcher.search(query, ["everyone"], 40):
            payload = points[passage.chunk_id]
            source, doc_hash = payload["source"], payload["doc_hash"]
            assert passage.source == source
            assert shown.setdefault(source, doc_hash) == doc_hash, f"{source}: two versions"
            assert (source, payload["chunk"]) not in passages, f"{source}: a passage twice"
            passages.add((source, payload["chunk"]))
    return {
        "documents": len(numbers),
        "two_versions": sum(len(hashes) == 2 for hashes in by_source.values()),
    }


def chunk_count(docs: Path, sources: set[str], settings: Settings, embedder: Embedder) -> int:
    chunker = Chunker(embedder.count_tokens, settings.chunk_size, settings.chunk_overlap)
    return sum(len(chunker.chunks(parse(docs / s, (docs / s).read_bytes()))) for s in sources)


def index_state(data: Path, root: str) -> tuple[dict[str, int], dict[str, set[str]], set[str]]:
    index = EdgeIndex(data, LOCK_TIMEOUT)
    manifest = {source: info.hashes for source, info in index.manifest(root).items()}
    return index.counts(), manifest, set(scan(index))


# -- the tests ------------------------------------------------------------------------------------


def test_runs_killed_at_any_moment_leave_a_correct_index_and_the_next_run_finishes(
    tmp_path, embedder, processes
):
    docs, data = tmp_path / "docs", tmp_path / "data"
    shutil.copytree(SAMPLES, docs)
    write_notes(docs, range(NOTES))
    root = str(docs.resolve())
    settings = settings_for(data)
    v1 = versions(docs)
    known = set(v1.items())
    observed: dict[str, dict[str, int]] = {}

    # 1. a fresh index: killed as soon as the run holds the ingestion lock (before it
    #    writes anything, maybe while it creates the index)
    proc = start_ingest(docs, data)
    processes.append(proc)
    wait_for(proc, "it took the ingestion lock", lambda: holds_ingest_lock(proc.pid, data), 0.002)
    kill(proc)
    observed["v1 at start"] = check_answers(settings, embedder, root, known)

    # 2. the next run does the job
    summary = Ingestor(settings, embedder).run(docs)
    assert summary.failed == [] and summary.added == len(v1)
    assert check_answers(settings, embedder, root, known)["documents"] == len(v1)

    # 3. a new version of the folder: changed, moved, deleted and added documents;
    #    its runs are killed at several points
    make_v2(docs)
    v2 = versions(docs)
    known |= set(v2.items())
    targets = set(v2.items()) - set(v1.items())
    to_embed = chunk_count(docs, {source for source, _ in targets}, settings, embedder)

    # killed by itself between a document's new version and the removal of its old one:
    # the index holds both, and a search must show one
    proc = start_ingest(docs, data, kill_after_upserts=1)
    processes.append(proc)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL, f"not killed by the hook after an upsert: {err}"
    observed["v2 between a new version and the old one's removal"] = state = check_answers(
        settings, embedder, root, known
    )
    assert state["two_versions"] >= 1, "the kill did not leave a half-replaced document"

    proc = start_ingest(docs, data)
    processes.append(proc)
    kill_at(proc, data, targets, 0.15, in_write=True)
    observed["v2 in a write"] = check_answers(settings, embedder, root, known)

    proc = start_ingest(docs, data)
    processes.append(proc)
    kill_at(proc, data, targets, 0.55, in_write=False)
    observed["v2 between writes"] = check_answers(settings, embedder, root, known)

    # 4. the next run finishes the job
    proc = start_ingest(docs, data)
    processes.append(proc)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    (last,) = json_lines(out)
    assert last["failed"] == [] and last["chunks_embedded"] < to_embed / 2, last
    final = check_answers(settings, embedder, root, set(v2.items()))
    assert final == {"documents": len(v2), "two_versions": 0}
    assert len(list((data / "generations").iterdir())) == 1  # no half-built leftovers

    # ... to the index a fresh ingestion of the same folder builds
    fresh = settings_for(tmp_path / "fresh")
    summary = Ingestor(fresh, embedder).run(docs)
    assert summary.added == len(v2) and not summary.failed
    assert index_state(data, root) == index_state(fresh.data_dir, root)
    print(observed)


class Page:
    """A page in use: a search every `pause` seconds in a thread of the test process,
    each one timed; started before the cron run, so the run meets a busy reader."""

    def __init__(self, searcher: Searcher, data: Path, pause: float = 0.2) -> None:
        self.searcher, self.data, self.pause = searcher, data, pause
        self.cron_pid: int | None = None
        self.latencies: list[float] = []
        self.during_writes = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="page", daemon=True)

    def search(self) -> None:
        in_write = self.cron_pid is not None and writing(self.cron_pid, self.data)
        started = time.monotonic()
        try:
            hits = self.searcher.search("What does error VPN-0x2F mean?", ["everyone"], 5)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on
            self.failures.append(f"{exc.__class__.__name__}: {exc}")
        else:
            if not hits or hits[0].source != "en/vpn-troubleshooting.pdf":
                self.failures.append(f"wrong answer: {[h.source for h in hits]}")
        self.latencies.append(time.monotonic() - started)
        self.during_writes += in_write

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.search()
            self._stop.wait(self.pause)

    def __enter__(self) -> Page:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_second_run_waits_or_says_busy_while_the_page_keeps_answering(
    tmp_path, embedder, processes
):
    docs, data = tmp_path / "docs", tmp_path / "data"
    shutil.copytree(SAMPLES, docs)
    settings = settings_for(data)
    assert not Ingestor(settings, embedder).run(docs).failed  # something to search already
    write_notes(docs, range(2 * NOTES))  # a run of several seconds, with two writes
    expected = versions(docs)
    root = str(docs.resolve())

    with Page(Searcher(settings, embedder), data) as page:
        time.sleep(1)  # the page is in use when the cron run starts
        first = start_ingest(docs, data)
        processes.append(first)
        page.cron_pid = first.pid
        wait_for(
            first, "it took the ingestion lock", lambda: holds_ingest_lock(first.pid, data), 0.01
        )
        busy = start_ingest(docs, data, TAIMATSU_INGEST_WAIT="0")
        waiter = start_ingest(docs, data, TAIMATSU_INGEST_WAIT="300")
        processes += [busy, waiter]
        busy_ended_first = False
        while first.poll() is None:
            busy_ended = busy.poll() is not None
            waiter_ended = waiter.poll() is not None
            if holds_ingest_lock(first.pid, data):  # (then it held it at the polls too)
                assert not waiter_ended, "the waiting run did not wait for the first"
                busy_ended_first = busy_ended_first or busy_ended
            if page.during_writes < 3 and writing(first.pid, data):
                page.search()  # a question that arrives in the middle of a write
            time.sleep(0.005)
        searches_during_run = len(page.latencies)

    out, err = first.communicate()
    assert first.returncode == 0, err
    assert json_lines(out)[0]["added"] == 2 * NOTES

    out, err = busy.communicate(timeout=60)
    assert busy_ended_first, "the busy run was still running when the first one ended"
    assert busy.returncode == 4 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "another ingestion run" in err and "TAIMATSU_INGEST_WAIT" in err

    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    (summary,) = json_lines(out)
    assert (summary["added"], summary["updated"], summary["deleted"]) == (0, 0, 0)
    assert summary["unchanged"] == len(expected) and summary["chunks_embedded"] == 0

    assert page.failures == []
    assert searches_during_run >= 5 and page.during_writes >= 1
    assert max(page.latencies) < LOCK_TIMEOUT, page.latencies
    print(
        f"{searches_during_run} searches during the run, {page.during_writes} begun while "
        f"it was writing; slowest {max(page.latencies):.2f} s"
    )
    state = check_answers(settings, embedder, root, set(expected.items()))
    assert state == {"documents": len(expected), "two_versions": 0}
