"""The keyword leg's document frequencies kept per ACL label (assistant/index/label_counts.py):
the table gives exactly the engine's filtered counts for every asker, is used only when it
was counted at the index's current version, and otherwise the engine counts (a stale table
costs time, never a count of a chunk the asker cannot read)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

import assistant.index.edge as edge_module
import assistant.index.label_counts as label_counts
from assistant.index import DeleteDocument, Field, SearchRequest, SetGroups, SparseTerms, Upsert
from assistant.index.base import Match, groups_filter
from assistant.index.edge import EdgeIndex
from assistant.index.label_counts import TABLE_FILE, VERSION_FILE
from assistant.index.server import ServerIndex
from assistant.retrieval import Searcher
from assistant.settings import Settings
from ingest.pipeline import Ingestor
from tests.index.test_congruence import (
    ASKERS,
    DIM,
    STAMP,
    VOCABULARY,
    corpus,
    document,
    questions,
    same_hits,
    same_ranking,
)

# several labels per group, labels sharing some groups, an asker in none, an asker with
# no group, repeated and unknown groups
TABLE_ASKERS = [*ASKERS, [], ["hr", "hr", "ghost"], ["vault"]]
TERMS = [*range(VOCABULARY), VOCABULARY + 5, 3, 3]  # every term, one nobody holds, repeats


def engine_counts(index: EdgeIndex, groups: list[str]) -> tuple[int, dict[int, int]]:
    """What the engine counts for `groups` (the fallback's numbers)."""
    visible = groups_filter(groups)
    df = {t: index._count(visible.where(Match(Field.TERMS, t))) for t in set(TERMS)}
    return index._count(visible), {t: n for t, n in df.items() if n}


def assert_exact(index: EdgeIndex) -> None:
    for groups in TABLE_ASKERS:
        found = index.label_counts.lookup(groups, TERMS)
        assert found is not None, "the table is not up to date"
        total, df = found
        assert (total, {t: n for t, n in df.items() if n}) == engine_counts(index, groups), groups


def is_fresh(index: EdgeIndex) -> bool:
    return index.label_counts.lookup(["everyone"], [1]) is not None


@pytest.fixture
def index(tmp_path: Path) -> EdgeIndex:
    edge = EdgeIndex(tmp_path / "data", lock_timeout=5)
    edge.ensure(STAMP)
    edge.write([Upsert(corpus(documents=30))])
    return edge


@pytest.fixture
def engine_counting(monkeypatch) -> Iterator[Counter[str]]:
    """Counts the engine counts a search makes (the fallback's)."""
    calls: Counter[str] = Counter()
    inner = edge_module._count_on

    def counted(shard, where):
        calls["count"] += 1
        return inner(shard, where)

    monkeypatch.setattr(edge_module, "_count_on", counted)
    yield calls


def test_the_table_equals_the_engines_counts_after_every_kind_of_write(index, monkeypatch):
    assert not is_fresh(index)  # written, not counted yet
    index.refresh_keyword_counts()
    assert_exact(index)
    index.write([DeleteDocument("/srv/none", "none.md")])  # a write that changes nothing
    monkeypatch.setattr(label_counts, "COMPACT_AT", 7)  # pairs summed in many steps
    monkeypatch.setattr(edge_module, "COUNT_PAGE", 10)
    index.refresh_keyword_counts()
    assert_exact(index)
    monkeypatch.undo()

    points = corpus(documents=30)
    first, second = (p.payload for p in (points[0], points[-1]))
    index.write([SetGroups(first[Field.ROOT], first[Field.SOURCE], ["vault", "hr"])])
    assert not is_fresh(index)  # a write made it stale: not used until recounted
    index.refresh_keyword_counts()
    assert_exact(index)

    index.write([DeleteDocument(second[Field.ROOT], second[Field.SOURCE])])
    index.refresh_keyword_counts()
    assert_exact(index)

    new = document(random.Random(5), "/srv/new", "n.md", "v1", ["legal", "sales"])
    index.write([Upsert(new), SetGroups(first[Field.ROOT], first[Field.SOURCE], ["everyone"])])
    index.refresh_keyword_counts()
    assert_exact(index)


def test_a_search_uses_the_table_only_when_it_is_up_to_date(index, engine_counting):
    """Fresh: no engine count, and the same hits (up to the order of ties) and scores, bit
    for bit, as the engine's counts give; stale (a write since): the engine counts again."""
    requests = [
        SearchRequest(dense, keyword, groups, 20, legs=legs)
        for dense, keyword in questions()
        for groups in TABLE_ASKERS
        for legs in ("keyword", "both")
    ]
    counted = [index.search(r) for r in requests]  # no table yet: the engine counts
    assert engine_counting["count"] > 0
    index.refresh_keyword_counts()
    engine_counting.clear()
    from_table = [index.search(r) for r in requests]
    assert engine_counting["count"] == 0
    for request, ours, theirs in zip(requests, from_table, counted, strict=True):
        same_ranking(ours, theirs, request.limit)  # the engine orders an RRF tie either way
        assert [h.score for h in ours] == [h.score for h in theirs]  # bit for bit

    point = corpus(documents=30)[0].payload
    index.write([SetGroups(point[Field.ROOT], point[Field.SOURCE], ["vault"])])
    index.search(requests[0])
    assert engine_counting["count"] > 0


def test_a_write_during_the_count_leaves_the_table_unused(index, monkeypatch):
    """The count reads the index page by page; a writer that comes in between pages
    raises the version, so the count is not taken for the index's (the next run counts
    again)."""
    monkeypatch.setattr(edge_module, "COUNT_PAGE", 16)
    point = corpus(documents=30)[0].payload
    pages = index._pages

    def pages_with_a_writer(where, fields):
        for n, page in enumerate(pages(where, fields)):
            if n == 1:
                index.write([SetGroups(point[Field.ROOT], point[Field.SOURCE], ["vault"])])
            yield page

    monkeypatch.setattr(index, "_pages", pages_with_a_writer)
    index.refresh_keyword_counts()
    assert not is_fresh(index)
    monkeypatch.undo()
    index.refresh_keyword_counts()
    assert_exact(index)


def test_damaged_files_are_not_used_and_the_next_count_replaces_them(index):
    """A damaged table: the engine counts, and the next count replaces it. A damaged
    version file: the next write removes both files (no table is as safe as a stale one)
    and goes ahead."""
    index.refresh_keyword_counts()
    generation = index.link.resolve()
    request = SearchRequest([0.0] * DIM, SparseTerms([1, 2], [1.0, 1.0]), ["hr"], 10)
    expected = [(h.id, h.score) for h in index.search(request)]
    (generation / TABLE_FILE).write_bytes(b"this is not a database" * 100)
    assert not is_fresh(index)
    assert [(h.id, h.score) for h in index.search(request)] == expected  # engine's counts
    index.refresh_keyword_counts()
    assert_exact(index)

    (generation / VERSION_FILE).write_bytes(b"this is not a database either" * 100)
    assert not is_fresh(index)
    index.write([Upsert(corpus(seed=3, documents=2))])
    assert not (generation / TABLE_FILE).exists()
    index.refresh_keyword_counts()
    assert_exact(index)


def test_a_rebuilt_index_brings_its_own_table(index):
    """`taimatsu reindex` fills a staging index and promotes it: the table counted on the
    staging index is the one the promoted index answers with."""
    staging = index.staging()
    staging.ensure(STAMP)
    staging.write([Upsert(corpus(seed=9, documents=12))])
    staging.refresh_keyword_counts()
    index.promote(staging)
    assert is_fresh(index)
    assert_exact(index)


def test_the_server_backend_counts_per_query_with_the_same_results(index, tmp_path):
    """The server keeps the engine's per-term counts (no table): its hits and scores are
    those of the embedded backend answering from its table."""
    settings = Settings(data_dir=tmp_path / "server-data", lock_timeout=5)
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        server = ServerIndex(settings, client=client)
        server.ensure(STAMP)
        server.write([Upsert(corpus(documents=30))])
        server.refresh_keyword_counts()  # nothing to do, and no error
        index.refresh_keyword_counts()
        assert is_fresh(index)
        for dense, keyword in questions():
            for groups in TABLE_ASKERS:
                same_hits((index, server), SearchRequest(dense, keyword, groups, 20))
                same_hits(
                    (index, server), SearchRequest(dense, keyword, groups, 20, legs="keyword")
                )
    finally:
        client.close()


def test_an_ingestion_run_leaves_the_table_counted(tmp_path, embedder, engine_counting):
    """The end of a run that wrote something counts; a search then counts nothing in the
    engine. An unchanged run neither writes nor counts again."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Travel\n\nTaxi receipts go with the expense claim.\n")
    (folder / "b.md").write_text("# VPN\n\nThe VPN certificate expires yearly.\n")
    settings = Settings(data_dir=tmp_path / "data", lock_timeout=5, parse_timeout=0)
    Ingestor(settings, embedder).run(folder)
    index = EdgeIndex(settings.data_dir)
    state = index.label_counts.state()
    assert state is not None and state[0] == state[1] and is_fresh(index)
    Searcher(settings, embedder).search("taxi receipt", ["everyone"], 3, "keyword")
    assert engine_counting["count"] == 0
    Ingestor(settings, embedder).run(folder)
    assert index.label_counts.state() == state
