"""Backup and restore of the embedded index, exactly as docs/operations.md says:
`flock DATA/ingest.lock cp -a DATA BACKUP` (no ingestion run can write meanwhile), and
restore by putting the copy back."""

from __future__ import annotations

import shutil
import subprocess

from assistant.retrieval import Searcher
from ingest.pipeline import Ingestor
from tests.conftest import SAMPLES, need_binary


def test_copy_of_the_data_folder_restores_the_index(settings, embedder, tmp_path):
    flock = need_binary("flock")
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES, docs)
    Ingestor(settings, embedder).run(docs)
    data, backup = settings.data_dir, tmp_path / "backup"
    Searcher(settings, embedder).search("KIRI-STAFF", ["everyone"])  # the page holds it open
    subprocess.run(
        [flock, str(data / "ingest.lock"), "cp", "-a", str(data), str(backup)], check=True
    )

    (docs / "en" / "it-onboarding.txt").unlink()  # then the index changes
    Ingestor(settings, embedder).run(docs)
    assert "en/it-onboarding.txt" not in _sources(settings, embedder)

    shutil.rmtree(data)  # restore: the copy goes back in place
    shutil.copytree(backup, data, symlinks=True)
    restored = settings.model_copy()
    assert "en/it-onboarding.txt" in _sources(restored, embedder)
    summary = Ingestor(restored, embedder).run(docs)  # and the next run catches up
    assert (summary.deleted, summary.unchanged, summary.chunks_embedded) == (1, 7, 0)


def _sources(settings, embedder) -> set[str]:
    from assistant.index import open_index

    index = open_index(settings)
    return set(index.manifest(next(iter(index.roots()))))
