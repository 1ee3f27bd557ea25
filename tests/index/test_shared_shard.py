"""Several processes on one embedded shard (assistant/index/edge_lock.py): nobody calls the
engine's open while another process has the shard open. A failed open is not harmless in
qdrant-edge-py 0.9: it rewrites the holder's sparse-vector tracker journal (the holder's
next flush fails, or the shard no longer opens after a crash)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import assistant.index.edge as edge
from assistant.index.base import DeleteDocument
from assistant.index.edge import EdgeIndex

READER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from assistant.index.edge import EdgeIndex

    index = EdgeIndex(Path(sys.argv[1]), lock_timeout=60)
    index.counts()  # opens the shard; the handle is kept for the next question
    print("open", flush=True)
    sys.stdin.read()
    """
)


def start_reader(data: Path) -> subprocess.Popen[str]:
    """Another process that opens the index, says "open" and keeps its handle until its
    stdin closes (its reaper closes it sooner when someone signals an intent)."""
    return subprocess.Popen(
        [sys.executable, "-c", READER, str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(Path(edge.__file__).parents[2]), "PATH": ""},
    )


def test_a_writer_waits_for_another_process_to_close_its_handle(tmp_path, embedder, monkeypatch):
    data = tmp_path / "data"
    index = EdgeIndex(data, lock_timeout=60)
    index.ensure(embedder.stamp)

    attempts: list[str] = []
    real = edge.EdgeShard

    class Counted:
        create = staticmethod(real.create)

        @staticmethod
        def load(path: str):
            try:
                shard = real.load(path)
            except Exception as exc:
                attempts.append(f"failed: {exc}")
                raise
            attempts.append("opened")
            return shard

    monkeypatch.setattr(edge, "EdgeShard", Counted)
    reader = start_reader(data)
    try:
        assert reader.stdout.readline().strip() == "open"
        index.write([DeleteDocument("/nowhere", "a.md")])  # waits for the reader's handle
        assert reader.poll() is None, "the reader let go by dying, not by closing its handle"
    finally:
        reader.stdin.close()
        reader.wait(timeout=60)
    assert attempts == ["opened"], attempts
    assert reader.returncode == 0


def test_an_old_generation_held_open_is_kept_and_removed_once_let_go(tmp_path, embedder):
    data = tmp_path / "data"
    index = EdgeIndex(data, lock_timeout=60)
    index.ensure(embedder.stamp)
    old = index.link.resolve()
    reader = start_reader(data)
    try:
        assert reader.stdout.readline().strip() == "open"
        new = index._new_generation(embedder.stamp)
        index._switch_to(new)  # the reader still has the old one open
        assert old.is_dir()
    finally:
        reader.stdin.close()
        reader.wait(timeout=60)
    index._remove_old_generations(new)
    assert not old.exists()
    assert [p.name for p in (data / "generations").iterdir()] == [new.name]
