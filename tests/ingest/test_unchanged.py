"""An unchanged file is not read again: the index records the size, modification and
change time each version was read with, and a re-run that finds the same three trusts
them (TAIMATSU_TRUST_FILE_STAT). A file rewritten with its size and modification time
put back has a new change time, and is read, hashed and re-embedded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assistant.index import open_index
from ingest.pipeline import Ingestor


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The names of the files the run reads."""
    seen: list[str] = []
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        seen.append(self.name)
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return seen


def test_a_rerun_reads_only_files_whose_stat_changed(settings, embedder, tmp_path, reads):
    folder = tmp_path / "share"
    (folder / "経理部").mkdir(parents=True)
    for n, name in enumerate(["a.md", "b.txt", "経理部/c.md"]):
        (folder / name).write_text(f"# Note {n}\n\nThe archive room {n} opens at nine.\n")
    Ingestor(settings, embedder).run(folder)
    assert sorted(reads) == ["a.md", "b.txt", "c.md"]

    reads.clear()
    summary = Ingestor(settings, embedder).run(folder)
    assert summary.unchanged == 3 and not reads

    # same size, modification time put back: the change time tells
    target = folder / "b.txt"
    before = target.stat()
    target.write_text(target.read_text().replace("nine", "ten!"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (
        before.st_size,
        before.st_mtime_ns,
    )
    reads.clear()
    summary = Ingestor(settings, embedder).run(folder)
    assert (summary.updated, summary.unchanged, summary.chunks_embedded) == (1, 2, 1)
    assert reads == ["b.txt"]
    hits = open_index(settings).manifest(str(folder.resolve()))
    assert len(hits["b.txt"].hashes) == 1 and len(hits["b.txt"].stats) == 1

    # the stat-only skip can be turned off: every file is read and hashed
    reads.clear()
    strict = settings.model_copy(update={"trust_file_stat": False})
    summary = Ingestor(strict, embedder).run(folder)
    assert summary.unchanged == 3 and sorted(reads) == ["a.md", "b.txt", "c.md"]
