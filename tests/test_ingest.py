"""Ingestion against the real embedded store and the real model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from assistant.edge_index import EdgeIndex as Store
from assistant.index import ModelMismatch
from assistant.retrieval import Searcher
from ingest.parsers import parse
from ingest.pipeline import IngestError, Ingestor
from tests.conftest import SAMPLES


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    return folder


def _sources(searcher: Searcher, query: str, k: int = 10) -> list[str]:
    return [p.source for p in searcher.search(query, ["everyone"], k)]


def test_second_run_over_unchanged_files_embeds_nothing(settings, embedder, corpus):
    first = Ingestor(settings, embedder).run(corpus)
    assert (first.added, first.updated, first.deleted, first.failed) == (8, 0, 0, [])
    assert first.chunks_embedded > 8
    second = Ingestor(settings, embedder).run(corpus)
    assert (second.added, second.updated, second.unchanged, second.chunks_embedded) == (0, 0, 8, 0)
    counts = Store(settings.data_dir).counts()
    assert counts == {"documents": 8, "chunks": first.chunks_embedded}


def test_chunks_keep_source_page_and_heading(settings, embedder, corpus):
    Ingestor(settings, embedder).run(corpus)
    hits = Searcher(settings, embedder).search("VPN-0x2F certificate expired", ["everyone"], 3)
    assert (hits[0].source, hits[0].page) == ("en/vpn-troubleshooting.pdf", 2)
    hits = Searcher(settings, embedder).search("carry over unused leave days", ["everyone"], 3)
    assert hits[0].source == "en/leave-policy.md" and "Carrying over" in hits[0].section


def test_changed_file_replaces_its_old_chunks(settings, embedder, corpus):
    Ingestor(settings, embedder).run(corpus)
    doc = corpus / "en" / "it-onboarding.txt"
    doc.write_text("Wi-Fi: the staff network is now called ZEPHYR-NET-77.\n", encoding="utf-8")
    summary = Ingestor(settings, embedder).run(corpus)
    assert (summary.updated, summary.added, summary.unchanged) == (1, 0, 7)
    searcher = Searcher(settings, embedder)
    texts = [p.text for p in searcher.search("staff Wi-Fi network name", ["everyone"], 20)]
    assert any("ZEPHYR-NET-77" in t for t in texts)
    assert not any("KIRI-STAFF" in t for t in texts)  # the old version is gone
    assert Store(settings.data_dir).counts()["documents"] == 8


def test_deleted_file_disappears_from_search(settings, embedder, corpus):
    Ingestor(settings, embedder).run(corpus)
    (corpus / "en" / "vpn-troubleshooting.pdf").unlink()
    summary = Ingestor(settings, embedder).run(corpus)
    assert summary.deleted == 1
    assert "en/vpn-troubleshooting.pdf" not in _sources(Searcher(settings, embedder), "VPN-0x2F")


def test_broken_file_is_listed_and_the_rest_is_ingested(settings, embedder, corpus):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7\ngarbage")
    (corpus / "binary.txt").write_bytes(bytes(range(256)) * 10)
    summary = Ingestor(settings, embedder).run(corpus)
    failed = {f["source"]: f["error"] for f in summary.failed}
    assert set(failed) == {"broken.pdf", "binary.txt"}
    assert all(reason and "\n" not in reason for reason in failed.values())
    assert summary.added == 8


def test_a_file_that_breaks_keeps_its_indexed_version(settings, embedder, corpus):
    Ingestor(settings, embedder).run(corpus)
    (corpus / "en" / "vpn-troubleshooting.pdf").write_bytes(b"%PDF-1.7 truncated")
    summary = Ingestor(settings, embedder).run(corpus)
    assert [f["source"] for f in summary.failed] == ["en/vpn-troubleshooting.pdf"]
    assert summary.deleted == 0
    assert "en/vpn-troubleshooting.pdf" in _sources(Searcher(settings, embedder), "VPN-0x2F")


def test_oversized_file_is_refused(settings, embedder, corpus):
    settings.max_file_mb = 0.001  # about 1 kB
    summary = Ingestor(settings, embedder).run(corpus)
    assert any("TAIMATSU_MAX_FILE_MB" in f["error"] for f in summary.failed)


def test_interrupted_replacement_is_finished_by_the_next_run(settings, embedder, corpus, tmp_path):
    """A run killed between writing a document's new chunks and removing the old ones
    leaves two versions; the next run keeps exactly the current one, without embedding."""
    ingestor = Ingestor(settings, embedder)
    ingestor.run(corpus)
    store = Store(settings.data_dir)
    before = store.counts()["chunks"]
    doc = corpus / "ja" / "オフィス案内.txt"
    doc.write_text(doc.read_text(encoding="utf-8") + "\n■ 屋上庭園\n金曜日のみ開放。\n", "utf-8")
    data = doc.read_bytes()
    new_hash = hashlib.sha256(data).hexdigest()
    root = str(corpus.resolve())
    chunks = ingestor.chunker.chunks(parse(doc, data))
    ingestor._queue_document(root, "ja/オフィス案内.txt", new_hash, chunks, ".txt", ["everyone"])
    store.write(ingestor._pending[:1])  # the upsert lands, the removal of the old does not
    ingestor._pending = []
    assert len(store.manifest(root)["ja/オフィス案内.txt"].hashes) == 2
    assert store.counts()["chunks"] > before

    summary = Ingestor(settings, embedder).run(corpus)
    assert summary.chunks_embedded == 0
    assert store.manifest(root)["ja/オフィス案内.txt"].hashes == {new_hash}
    fresh = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    Ingestor(fresh, embedder).run(corpus)
    assert store.counts() == Store(fresh.data_dir).counts()


def test_other_model_is_refused_with_reindex_hint(settings, embedder, corpus):
    Ingestor(settings, embedder).run(corpus)
    stamp_path = Store(settings.data_dir).stamp_path
    stamp = json.loads(stamp_path.read_text())
    stamp["model"]["checksum"] = "0" * 64
    stamp_path.write_text(json.dumps(stamp))
    with pytest.raises(ModelMismatch, match="taimatsu reindex"):
        Ingestor(settings, embedder).run(corpus)


def test_not_a_folder_is_a_clear_error(settings, embedder, tmp_path):
    with pytest.raises(IngestError, match="is not a folder"):
        Ingestor(settings, embedder).run(tmp_path / "nope")
