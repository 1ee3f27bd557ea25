"""The embedded index's vector index (assistant/index/edge.py, build_search_indexes): Qdrant
Edge builds no HNSW graph unless asked, and asking holds the shard for minutes at scale.
The end of an ingestion run builds it on a copy, readers going on meanwhile, and switches
to the copy only if no write came since it was taken. Real engine, real model; the
threshold is lowered so that the samples' 44 chunks count as "enough"."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from qdrant_edge import PayloadSchemaType

from assistant import sparse
from assistant.index import edge
from assistant.index.base import NO_TERMS, ChunkPoint, SearchRequest, SparseTerms, Upsert
from assistant.index.edge import EdgeIndex
from assistant.index.edge_lock import open_handle_lock, try_flock
from ingest.pipeline import Ingestor
from tests.conftest import SAMPLES, CachedEmbedder

QUESTION = "How many days a week may I work from home?"


@pytest.fixture(scope="module")
def model(embedder) -> CachedEmbedder:
    return CachedEmbedder(embedder)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    return folder


def hook_optimize(monkeypatch, during) -> list[str]:
    """Run `during()` when the engine is asked to optimize (the copy, outside any hold)."""
    real = edge.EdgeShard
    calls: list[str] = []

    class Shard:
        def __init__(self, inner) -> None:
            self._inner = inner

        def __getattr__(self, name: str):
            return getattr(self._inner, name)

        def optimize(self):
            calls.append("optimize")
            during()
            return self._inner.optimize()

    loader = SimpleNamespace(create=real.create, load=lambda *a: Shard(real.load(*a)))
    monkeypatch.setattr(edge, "EdgeShard", loader)
    return calls


def unindexed(index: EdgeIndex) -> int:
    with index.shard() as shard:
        info = shard.info()
    return 2 * info.points_count - info.indexed_vectors_count


def indexed_segments(index: EdgeIndex) -> set[str]:
    """The names of the shard's segments that have a vector graph."""
    segments = index.link.resolve() / "shard" / "segments"
    return {p.name for p in segments.iterdir() if (p / "vector_index-dense" / "graph.bin").exists()}


def generations(index: EdgeIndex) -> list[str]:
    return sorted(p.name for p in (index.data_dir / "generations").iterdir())


def ask(index: EdgeIndex, model: CachedEmbedder, legs: str) -> list[str]:
    request = SearchRequest(
        model.embed_query(QUESTION),
        SparseTerms.of(sparse.embed_query(QUESTION)),
        ["everyone"],
        limit=10,
        legs=legs,
    )
    return [hit.id for hit in index.search(request)]


def test_a_run_builds_the_vector_index_while_readers_go_on(
    settings, model, corpus, monkeypatch, tmp_path
):
    index = EdgeIndex(settings.data_dir, settings.lock_timeout)
    Ingestor(settings, model, index=index).run(corpus)  # 44 chunks: under the threshold
    before = generations(index)
    assert unindexed(index) > 10 and len(before) == 1
    answers = {legs: ask(index, model, legs) for legs in ("dense", "keyword", "both")}
    counts = index.counts()
    assert all(answers.values())

    seen_meanwhile: list[list[str]] = []
    calls = hook_optimize(monkeypatch, lambda: seen_meanwhile.append(ask(index, model, "both")))
    monkeypatch.setattr(edge, "UNINDEXED_MIN", 10)
    summary = Ingestor(settings, model, index=index).run(corpus)

    assert summary.unchanged == 8 and calls == ["optimize"]
    assert seen_meanwhile == [answers["both"]]  # a query during the build was not held
    assert unindexed(index) == 0  # every dense vector is in the graph now
    after = generations(index)
    assert len(after) == 1 and after != before  # switched to the copy, the old one removed
    assert index.link.resolve().name == after[0]
    assert {legs: ask(index, model, legs) for legs in answers} == answers
    assert index.counts() == counts

    # an old generation another process still read at a switch stays while it is held,
    # and the first run's end after it is let go removes it
    old = index.data_dir / "generations" / "1"
    shutil.copytree(index.link.resolve(), old)
    held = open_handle_lock(old)
    assert try_flock(held, fcntl.LOCK_EX)
    Ingestor(settings, model, index=index).run(corpus)
    assert generations(index) == sorted(["1", *after])
    os.close(held)

    # nothing new to index: the next run neither copies nor switches
    Ingestor(settings, model, index=index).run(corpus)
    assert calls == ["optimize"] and generations(index) == after

    # new documents: their points get a graph of their own; the built one is kept as it is
    graphs = indexed_segments(index)
    more = tmp_path / "more"
    shutil.copytree(SAMPLES / "ja", more)
    Ingestor(settings, model, index=index).run(more)
    assert calls == ["optimize", "optimize"] and unindexed(index) == 0
    assert graphs < indexed_segments(index)


def test_a_write_during_the_build_is_kept_and_the_copy_dropped(
    settings, model, corpus, monkeypatch
):
    index = EdgeIndex(settings.data_dir, settings.lock_timeout)
    Ingestor(settings, model, index=index).run(corpus)
    before = generations(index)
    vector = model.embed_query("A note written while the index was being built")
    point = ChunkPoint(
        "00000000-0000-4000-8000-000000000001",
        vector,
        SparseTerms.of(sparse.embed_query("note")),
        {
            "root": "/elsewhere",
            "source": "late.md",
            "doc_hash": "h",
            "chunk": 0,
            "groups": ["everyone"],
        },
    )
    hook_optimize(monkeypatch, lambda: index.write([Upsert([point])]))
    monkeypatch.setattr(edge, "UNINDEXED_MIN", 10)

    assert index.build_search_indexes() is False
    assert generations(index) == before  # the copy that missed the write is gone
    assert index.link.resolve().name == before[0]
    found = index.search(SearchRequest(vector, NO_TERMS, ["everyone"], limit=1, legs="dense"))
    assert [hit.id for hit in found] == [point.id]


def test_a_promoted_rebuild_is_never_taken_for_a_leftover(settings, model, corpus, monkeypatch):
    index = EdgeIndex(settings.data_dir, settings.lock_timeout)
    Ingestor(settings, model, index=index).run(corpus)
    staging = index.staging()
    Ingestor(settings, model, index=staging).run(corpus)
    counts = staging.counts()
    real_switch = EdgeIndex._switch_to

    def switch(self: EdgeIndex, generation: Path) -> None:
        # another shard's run ends at the worst moment: it removes unused generations
        self._remove_old_generations(self.link.resolve())
        real_switch(self, generation)

    monkeypatch.setattr(EdgeIndex, "_switch_to", switch)
    index.promote(staging)
    assert index.counts() == counts and index.link.resolve().is_dir()
    assert ask(index, model, "both")


def outdated_fields(index: EdgeIndex) -> list[str]:
    with index.shard() as shard:
        return edge._outdated(shard.info())


def index_as_before(name: str) -> PayloadSchemaType:
    """A field's index as the engine's defaults made it before decisions §17."""
    integer = name in edge.INTEGER_FIELDS
    return PayloadSchemaType.Integer if integer else PayloadSchemaType.Keyword


def test_payload_fields_are_indexed_lean_and_an_older_index_gets_them_so(
    settings, model, corpus, monkeypatch
):
    """The integer fields' range index cost 70% of a large shard's open time and was never
    used, and the fields no query filters on need no index in memory: a new index is made
    so, and one made before is changed, once, at the end of its next run (on the copy, as
    a graph is built)."""
    fresh = EdgeIndex(settings.data_dir / "fresh", settings.lock_timeout)
    fresh.ensure(model.stamp)
    assert outdated_fields(fresh) == []
    with fresh.shard() as shard:
        schema = shard.info().payload_schema
    assert [n for n in sorted(schema) if not schema[n].params.on_disk] == ["chunk", "groups"]

    index = EdgeIndex(settings.data_dir, settings.lock_timeout)
    with monkeypatch.context() as old:
        old.setattr(edge, "_field_params", index_as_before)
        Ingestor(settings, model, index=index).run(corpus)
    assert outdated_fields(index) == ["chunk", "doc_hash", "root", "source", "terms"]
    answers = {legs: ask(index, model, legs) for legs in ("dense", "keyword", "both")}
    counts, before = index.counts(), generations(index)
    manifest = index.manifest(str(corpus.resolve()))

    calls = hook_optimize(monkeypatch, lambda: None)
    Ingestor(settings, model, index=index).run(corpus)  # 44 chunks: no graph to build
    assert outdated_fields(index) == [] and calls == ["optimize"]
    assert generations(index) != before
    assert {legs: ask(index, model, legs) for legs in answers} == answers
    assert index.counts() == counts and index.manifest(str(corpus.resolve())) == manifest

    Ingestor(settings, model, index=index).run(corpus)
    assert calls == ["optimize"]  # done once: the next run copies nothing


def test_no_build_without_room_for_a_copy(settings, model, corpus, monkeypatch, caplog):
    """The build needs free disk for a second copy of the index and the segments its
    optimization writes; without it the run ends as it is, with a warning, and the index
    stays searchable."""
    index = EdgeIndex(settings.data_dir, settings.lock_timeout)
    Ingestor(settings, model, index=index).run(corpus)
    before = generations(index)
    monkeypatch.setattr(edge, "UNINDEXED_MIN", 10)
    real = edge.shutil.disk_usage
    on_disk = sum(f.stat().st_blocks * 512 for f in index.link.resolve().rglob("*") if f.is_file())

    def short(path):  # just under twice the generation's blocks, besides the reserve
        usage = real(path)
        return usage._replace(free=2 * on_disk + edge.MIN_FREE_BYTES - 1)

    monkeypatch.setattr(edge.shutil, "disk_usage", short)
    assert index.build_search_indexes() is False
    assert generations(index) == before and unindexed(index) > 10
    assert "needs" in caplog.text and ask(index, model, "both")

    monkeypatch.setattr(
        edge.shutil, "disk_usage", lambda path: short(path)._replace(free=short(path).free + 1)
    )
    assert index.build_search_indexes() is True and unindexed(index) == 0
