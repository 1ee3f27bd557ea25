"""Ingestion against the real embedded store and the real model."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from assistant.errors import IngestError, ModelMismatch
from assistant.index import SCHEMA_VERSION, open_index
from assistant.retrieval import Searcher
from ingest.acl import glob_regex
from ingest.parsing import parse
from ingest.pipeline import Ingestor, Shard
from tests.conftest import SAMPLES, json_lines, run_cli


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    return folder


def stamp_file(settings) -> Path:
    """The embedded index's model stamp, where every version has kept it on disk."""
    return settings.data_dir / "index" / "stamp.json"


def _sources(searcher: Searcher, query: str, k: int = 10) -> list[str]:
    return [p.source for p in searcher.search(query, ["everyone"], k)]


def test_second_run_over_unchanged_files_embeds_nothing(settings, embedder, corpus):
    first = Ingestor(settings, embedder).run(corpus)
    assert (first.added, first.updated, first.deleted, first.failed) == (8, 0, 0, [])
    assert first.chunks_embedded > 8
    second = Ingestor(settings, embedder).run(corpus)
    assert (second.added, second.updated, second.unchanged, second.chunks_embedded) == (0, 0, 8, 0)
    counts = open_index(settings).counts()
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
    assert open_index(settings).counts()["documents"] == 8


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


def test_the_model_embeds_while_the_run_goes_on_to_the_next_file(settings, embedder, corpus):
    """Embedding has a thread of its own: while the model holds one batch, the run reads,
    parses and chunks the next file. The first batch's embedding waits until the run
    has queued the second document, which a run that embeds in its own thread (the
    model idle while parsers work, and parsers idle while the model works) never does."""
    settings.embed_queue = 1  # every document is a batch of its own
    ingestor = Ingestor(settings, embedder)
    queued = 0
    changed = threading.Condition()
    waited: list[bool] = []
    queue_document = ingestor._queue_document

    def counting(*args, **kwargs):
        nonlocal queued
        queue_document(*args, **kwargs)
        with changed:
            queued += 1
            changed.notify_all()

    class Holding:  # the real model, its first batch held until a second document is queued
        def __getattr__(self, name):
            return getattr(embedder, name)

        def embed(self, texts):
            if not waited:
                with changed:
                    waited.append(changed.wait_for(lambda: queued >= 2, timeout=60))
            return embedder.embed(texts)

    ingestor._queue_document = counting
    ingestor.embedder = Holding()
    summary = ingestor.run(corpus)
    assert waited == [True]
    assert summary.failed == [] and summary.added == 8
    assert open_index(settings).counts()["chunks"] == summary.chunks_embedded


def test_interrupted_replacement_is_finished_by_the_next_run(settings, embedder, corpus, tmp_path):
    """A run killed between writing a document's new chunks and removing the old ones
    leaves two versions; the next run keeps exactly the current one, without embedding."""
    ingestor = Ingestor(settings, embedder)
    ingestor.run(corpus)
    store = open_index(settings)
    before = store.counts()["chunks"]
    doc = corpus / "ja" / "オフィス案内.txt"
    doc.write_text(doc.read_text(encoding="utf-8") + "\n■ 屋上庭園\n金曜日のみ開放。\n", "utf-8")
    data = doc.read_bytes()
    new_hash = hashlib.sha256(data).hexdigest()
    root = str(corpus.resolve())
    chunks = ingestor.chunker.chunks(parse(doc, data))
    ingestor._queue_document(root, "ja/オフィス案内.txt", new_hash, chunks, ".txt", ["everyone"])
    ingestor._embed_queued()
    store.write(ingestor._pending[:1])  # the upsert lands, the removal of the old does not
    ingestor._pending = []
    assert len(store.manifest(root)["ja/オフィス案内.txt"].hashes) == 2
    assert store.counts()["chunks"] > before

    summary = Ingestor(settings, embedder).run(corpus)
    assert summary.chunks_embedded == 0
    assert store.manifest(root)["ja/オフィス案内.txt"].hashes == {new_hash}
    fresh = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    Ingestor(fresh, embedder).run(corpus)
    assert store.counts() == open_index(fresh).counts()


def test_other_model_is_refused_with_reindex_hint(settings, embedder, corpus):
    Ingestor(settings, embedder).run(corpus)
    stamp_path = stamp_file(settings)
    stamp = json.loads(stamp_path.read_text())
    stamp["model"]["checksum"] = "0" * 64
    stamp_path.write_text(json.dumps(stamp))
    with pytest.raises(ModelMismatch, match="taimatsu reindex"):
        Ingestor(settings, embedder).run(corpus)


def test_an_index_of_an_older_schema_is_refused_and_reindex_rebuilds_it(settings, embedder, corpus):
    """Schema 1 applied IDF over the whole collection (hidden documents included); its
    keyword scores must not be mixed with this version's: queries and runs refuse it in
    one sentence, `taimatsu reindex` rebuilds it."""
    Ingestor(settings, embedder).run(corpus)
    stamp_path = stamp_file(settings)
    stamp = json.loads(stamp_path.read_text())
    stamp["schema"] = 1
    stamp_path.write_text(json.dumps(stamp))
    with pytest.raises(ModelMismatch, match=r"index schema 1.*run `taimatsu reindex`"):
        Ingestor(settings, embedder).run(corpus)
    search = run_cli("search", "VPN", "--json", settings=settings)
    assert search.returncode != 0 and "taimatsu reindex" in search.stderr
    assert "Traceback" not in search.stderr
    assert run_cli("reindex", "--json", settings=settings).returncode == 0
    assert json.loads(stamp_path.read_text())["schema"] == SCHEMA_VERSION
    assert run_cli("search", "VPN", "--json", settings=settings).returncode == 0


def test_not_a_folder_is_a_clear_error(settings, embedder, tmp_path):
    with pytest.raises(IngestError, match="is not a folder"):
        Ingestor(settings, embedder).run(tmp_path / "nope")


ACL = """
default = ["everyone"]
[[rule]]
pattern = "en/**"
groups = ["staff"]
[[rule]]
pattern = "en/expenses.html"
groups = ["finance"]
"""


def test_acl_file_sets_groups_and_changes_apply_without_embedding(settings, embedder, corpus):
    (corpus / ".taimatsu-acl.toml").write_text(ACL, encoding="utf-8")
    Ingestor(settings, embedder).run(corpus)
    searcher = Searcher(settings, embedder)

    def visible(groups: list[str]) -> set[str]:
        return {p.source for p in searcher.search("taxi leave VPN 在宅勤務", groups, 50)}

    staff = visible(["staff"])
    assert "en/expenses.html" not in staff and "en/leave-policy.md" in staff
    assert visible(["finance"]) >= {"en/expenses.html", "ja/在宅勤務規程.md"}
    assert not any(s.startswith("en/") for s in visible(["sales"]))

    (corpus / ".taimatsu-acl.toml").write_text(ACL.replace('["finance"]', '["everyone"]'))
    summary = Ingestor(settings, embedder).run(corpus)
    assert (summary.acl_updated, summary.chunks_embedded, summary.unchanged) == (1, 0, 8)
    assert "en/expenses.html" in visible(["sales"])


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("hr/**", "hr/a/b.pdf", True),
        ("hr/", "hr/b.pdf", True),
        ("hr/*.pdf", "hr/a/b.pdf", False),
        ("**/secret-*.md", "x/y/secret-plan.md", True),
        ("**/secret-*.md", "secret-plan.md", True),
        ("*.md", "a/b.md", False),
        ("給与/**", "給与/2026.xlsx", True),
        ("a?c.txt", "abc.txt", True),
        ("a?c.txt", "a/c.txt", False),
    ],
)
def test_acl_globs(pattern, path, matches):
    assert bool(glob_regex(pattern).match(path)) is matches


def test_broken_acl_file_stops_the_run_before_anything_is_written(settings, embedder, corpus):
    (corpus / ".taimatsu-acl.toml").write_text('[[rule]]\npattern = "x"\ngroups = "hr"\n')
    with pytest.raises(IngestError, match="non-empty list of group names"):
        Ingestor(settings, embedder).run(corpus)
    assert not open_index(settings).exists()


def test_moved_file_reuses_its_vectors(settings, embedder, corpus):
    Ingestor(settings, embedder).run(corpus)
    (corpus / "archive").mkdir()
    (corpus / "en" / "leave-policy.md").rename(corpus / "archive" / "leave.md")
    summary = Ingestor(settings, embedder).run(corpus)
    assert (summary.added, summary.deleted, summary.chunks_embedded) == (1, 1, 0)
    assert summary.chunks_reused > 0
    sources = _sources(Searcher(settings, embedder), "carry over unused leave days", 5)
    assert sources[0] == "archive/leave.md" and "en/leave-policy.md" not in sources


def test_reindex_rebuilds_from_the_sources(settings, corpus):
    first = json_lines(run_cli("ingest", str(corpus), "--json", settings=settings).stdout)[0]
    stamp_path = stamp_file(settings)
    stamp = json.loads(stamp_path.read_text())
    stamp["model"]["checksum"] = "0" * 64  # as if another model had written the index
    stamp_path.write_text(json.dumps(stamp))
    refused = run_cli("ingest", str(corpus), settings=settings)
    assert refused.returncode == 1 and "taimatsu reindex" in refused.stderr

    result = run_cli("reindex", "--json", settings=settings)
    assert result.returncode == 0, result.stderr
    (body,) = json_lines(result.stdout)
    assert body["reindexed"][0]["chunks_embedded"] == first["chunks_embedded"]
    meta = {}  # the rebuilt index came with its keyword IDF table, counted at its version
    for name in ("keyword-version.sqlite", "keyword-counts.sqlite"):
        db = sqlite3.connect(settings.data_dir / "index" / name)
        meta.update(db.execute("SELECT key, value FROM meta").fetchall())
        db.close()
    assert meta["counted"] == f"{meta['epoch']}:{meta['writes']}"
    again = run_cli("ingest", str(corpus), "--json", settings=settings)
    assert again.returncode == 0 and json_lines(again.stdout)[0]["unchanged"] == 8
    assert len(list((settings.data_dir / "generations").iterdir())) == 1


def test_sharded_workers_split_the_files_and_together_index_all(settings, embedder, corpus):
    shards = [Shard.parse(f"{i}/3") for i in (1, 2, 3)]
    sources = [p.relative_to(corpus).as_posix() for p in corpus.rglob("*.*")]
    assert all(sum(sh.owns(s) for sh in shards) == 1 for s in sources)  # exactly one owner
    summaries = [Ingestor(settings, embedder).run(corpus, shard=shard) for shard in shards]
    assert sum(s.added for s in summaries) == 8 and all(s.deleted == 0 for s in summaries)
    assert sorted(s.files_seen for s in summaries) != [0, 0, 8]  # really split
    index = open_index(settings)
    fresh = settings.model_copy(update={"data_dir": settings.data_dir.parent / "whole"})
    Ingestor(fresh, embedder).run(corpus)
    root = str(corpus.resolve())
    assert {s: i.hashes for s, i in index.manifest(root).items()} == {
        s: i.hashes for s, i in open_index(fresh).manifest(root).items()
    }
    # a file deleted from the share of worker k is removed by worker k only
    victim = "en/it-onboarding.txt"
    (corpus / victim).unlink()
    owner = next(sh for sh in shards if sh.owns(victim))
    others = [Ingestor(settings, embedder).run(corpus, shard=sh) for sh in shards if sh != owner]
    assert all(s.deleted == 0 for s in others) and victim in index.manifest(root)
    assert Ingestor(settings, embedder).run(corpus, shard=owner).deleted == 1


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "3"])
def test_bad_shard_is_refused(text):
    with pytest.raises(ValueError, match="--shard"):
        Shard.parse(text)


def test_each_run_is_logged_for_the_admin_page(settings, embedder, corpus):
    from ingest.runs import recent_runs

    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7 nothing")
    Ingestor(settings, embedder).run(corpus)
    Ingestor(settings, embedder).run(corpus)
    first, second = recent_runs(settings.data_dir)[::-1]
    assert (first["added"], second["unchanged"]) == (8, 8)
    assert second["failed"] == [{"source": "broken.pdf", "error": first["failed"][0]["error"]}]
    assert second["finished"] >= first["finished"]
