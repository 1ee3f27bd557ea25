"""Congruence: every behaviour of the index contract gives the same result on both
backends (after qdrant-client's tests/congruence_tests).

The same random data goes into the embedded backend (EdgeIndex, in a temporary folder)
and the server backend (ServerIndex over qdrant-client's local mode); each behaviour runs
on both and the results are compared: ids and their order, payloads, counts, facets, and
scores within a tolerance. Random vectors are enough here: the index's behaviour does
not depend on what the vectors mean (the real model: tests/index/test_backends.py)."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from qdrant_client import QdrantClient

from assistant.embedder import ModelStamp
from assistant.errors import ModelMismatch, StoreError
from assistant.index import (
    ChunkPoint,
    DeleteDocument,
    Field,
    Hit,
    Index,
    SearchRequest,
    SetGroups,
    SparseTerms,
    Upsert,
    groups_in_index,
    index_stats,
)
from assistant.index.base import KEYWORD_FIELDS
from assistant.index.edge import EdgeIndex
from assistant.index.server import ServerIndex
from assistant.settings import Settings
from ingest.acl import ACL_FILE_NAME
from ingest.pipeline import Ingestor
from tests.conftest import closed_port_url

DIM = 16
STAMP = ModelStamp("congruence-random", "c" * 64, DIM)
OTHER = ModelStamp("another-model", "d" * 64, DIM)
GROUPS = ["everyone", "hr", "sales", "legal"]
VOCABULARY = 60  # keyword term ids 0..59: every term is held by several chunks
ROOTS = ["/srv/docs", "/srv/archive"]
KINDS = ["md", "txt", "pdf", "html"]
ASKERS = [["everyone"], ["hr"], ["sales", "everyone"], ["legal", "hr"], GROUPS, ["nobody"]]
SCORE = 1e-5  # the same float32 arithmetic on both sides, summed in another order

T = TypeVar("T")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Index, Index]]:
    """An empty index of each backend."""
    settings = Settings(data_dir=tmp_path / "data", lock_timeout=5)
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    yield EdgeIndex(settings.data_dir, settings.lock_timeout), ServerIndex(settings, client=client)
    client.close()


def both(pair: tuple[Index, Index], call: Callable[[Index], T]) -> T:
    """`call` on each backend; the two results must be equal. Returns the result."""
    edge, server = (call(index) for index in pair)
    assert edge == server
    return edge


def both_fail(pair: tuple[Index, Index], call: Callable[[Index], Any], error: type) -> None:
    for index in pair:
        with pytest.raises(error):
            call(index)


# -- the data ------------------------------------------------------------------------------


def unit(rng: random.Random) -> list[float]:
    vector = [rng.gauss(0, 1) for _ in range(DIM)]
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def terms(rng: random.Random, count: int) -> SparseTerms:
    indices = sorted(rng.sample(range(VOCABULARY), count))
    # exact in the engine's float32 (what is read back equals what was written), and many
    # values: two chunks scoring alike in a leg would be ranked either way (a tie)
    return SparseTerms(indices, [rng.randint(256, 4096) / 1024 for _ in indices])


def document(
    rng: random.Random, root: str, source: str, version: str, groups: list[str]
) -> list[ChunkPoint]:
    """A document version's points, with every payload field the pipeline writes."""
    chunks = rng.randint(1, 4)
    doc_hash = f"{source}@{version}"
    return [
        ChunkPoint(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"{root}/{doc_hash}#{n}")),
            unit(rng),
            terms(rng, rng.randint(3, 8)),
            {
                Field.ROOT: root,
                Field.SOURCE: source,
                Field.DOC_HASH: doc_hash,
                Field.CHUNK: n,
                Field.CHUNKS: chunks,
                Field.PAGE: n + 1 if source.endswith(".pdf") else None,
                Field.SECTION: f"Part {n}" if n else None,
                Field.TEXT: f"{source} chunk {n} of version {version}",
                Field.KIND: source.rsplit(".", 1)[-1],
                Field.GROUPS: groups,
                Field.INDEXED_AT: 1_700_000_000.0 + rng.randint(0, 10_000),
            },
        )
        for n in range(chunks)
    ]


def corpus(seed: int = 7, documents: int = 24) -> list[ChunkPoint]:
    rng = random.Random(seed)
    points = []
    for i in range(documents):
        groups = sorted(rng.sample(GROUPS, rng.randint(1, 2)))
        source = f"folder-{i % 3}/doc-{i:02d}.{KINDS[i % len(KINDS)]}"
        points += document(rng, ROOTS[i % 2], source, "v1", groups)
    return points


def filled(pair: tuple[Index, Index], points: list[ChunkPoint] | None = None) -> list[ChunkPoint]:
    points = corpus() if points is None else points
    for index in pair:
        index.ensure(STAMP)
        index.write([Upsert(points)])
    return points


def questions(seed: int = 11, count: int = 6) -> list[tuple[list[float], SparseTerms]]:
    rng = random.Random(seed)
    return [(unit(rng), terms(rng, rng.randint(1, 4))) for _ in range(count)] + [
        (unit(rng), SparseTerms([], [])),  # no keyword term at all
        (unit(rng), SparseTerms([VOCABULARY + 5], [1.0])),  # a term nobody holds
    ]


# -- comparing results -----------------------------------------------------------------------


def ranking(hits: list[Hit]) -> list[tuple[float, frozenset[str]]]:
    """Hits as (score, ids) groups in order: ids of equal scores (RRF ties) as a set, since
    the engines may order a tie either way."""
    groups: list[tuple[float, set[str]]] = []
    for hit in hits:
        if groups and math.isclose(hit.score, groups[-1][0], abs_tol=SCORE):
            groups[-1][1].add(hit.id)
        else:
            groups.append((hit.score, {hit.id}))
    return [(score, frozenset(ids)) for score, ids in groups]


def same_ranking(first: list[Hit], second: list[Hit], limit: int) -> None:
    """The same ids in the same order (up to ties), the same scores, relevance signals and
    payloads. Past the limit a tie may be cut differently: the last group of equal scores
    is compared by score only when the engines had more to give."""
    assert len(first) == len(second)
    ours, theirs = ranking(first), ranking(second)
    assert [s for s, _ in ours] == pytest.approx([s for s, _ in theirs], abs=SCORE)
    cut = len(first) == limit
    for (_, a), (_, b) in zip(ours[:-1] if cut else ours, theirs, strict=False):
        assert a == b
    by_id = {h.id: h for h in second}
    for hit in first:
        if hit.id not in by_id:  # only in a tie cut at the limit
            continue
        other = by_id[hit.id]
        assert hit.payload == other.payload
        assert hit.similarity == pytest.approx(other.similarity, abs=1e-3)
        assert hit.coverage == other.coverage


def same_hits(pair: tuple[Index, Index], request: SearchRequest) -> list[Hit]:
    """The request on both backends, with the same hits (`same_ranking`)."""
    edge, server = (index.search(request) for index in pair)
    try:
        same_ranking(edge, server, request.limit)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nfor {request}") from None
    return edge


def visible(hit: Hit, groups: list[str]) -> bool:
    return bool(set(hit.payload[Field.GROUPS]) & set(groups))


# -- lifecycle -------------------------------------------------------------------------------


def test_a_missing_index_reads_as_empty_on_both(pair):
    assert both(pair, lambda i: i.exists()) is False
    assert both(pair, lambda i: i.read_stamp()) is None
    assert both(pair, lambda i: i.manifest(ROOTS[0])) == {}
    assert both(pair, lambda i: i.document_groups(ROOTS[0], "a.md")) is None
    assert both(pair, lambda i: i.roots()) == []
    assert both(pair, lambda i: i.facet(Field.GROUPS)) == {}
    assert both(pair, index_stats)["documents"] == 0
    both_fail(pair, lambda i: i.counts(), StoreError)
    request = SearchRequest(unit(random.Random(1)), SparseTerms([1], [1.0]), ["everyone"], 5)
    both_fail(pair, lambda i: i.search(request), StoreError)


def test_stamp_ensure_and_another_model(pair):
    for index in pair:
        index.ensure(STAMP)
        index.ensure(STAMP)  # a second ensure changes nothing
    assert both(pair, lambda i: i.exists()) is True
    stamps = both(pair, lambda i: {k: v for k, v in i.read_stamp().items() if k != "created"})
    assert stamps["model"] == STAMP.as_dict()
    messages = []
    for index in pair:
        with pytest.raises(ModelMismatch) as refused:
            index.ensure(OTHER)
        messages.append(str(refused.value))
    assert messages[0] == messages[1] and "taimatsu reindex" in messages[0]
    assert both(pair, lambda i: i.counts()) == {"documents": 0, "chunks": 0}


def test_engine_version_and_optimize(pair):
    filled(pair)
    edge, server = pair
    assert edge.engine_version().startswith("qdrant-edge-py ")
    version = server.engine_version()  # local mode has no server to ask
    assert version is None or version.startswith("Qdrant ")
    request = SearchRequest(*questions()[0], ["everyone", "hr"], 8)
    before = same_hits(pair, request)
    for index in pair:
        index.optimize()
    same_ranking(same_hits(pair, request), before, request.limit)


# -- reads -----------------------------------------------------------------------------------


def test_reads_after_a_write(pair):
    points = filled(pair)
    documents = {(p.payload[Field.ROOT], p.payload[Field.SOURCE]) for p in points}
    assert both(pair, lambda i: i.counts()) == {
        "documents": len(documents),
        "chunks": len(points),
    }
    assert both(pair, lambda i: i.roots()) == sorted(ROOTS)
    for root in ROOTS:
        manifest = both(pair, lambda i, root=root: i.manifest(root))
        assert set(manifest) == {source for r, source in documents if r == root}
    for root, source in sorted(documents):
        groups = both(pair, lambda i, r=root, s=source: i.document_groups(r, s))
        assert groups == next(
            p.payload[Field.GROUPS] for p in points if p.payload[Field.SOURCE] == source
        )
        (doc_hash,) = both(pair, lambda i, r=root: i.manifest(r))[source].hashes
        edge, server = (i.points_of(root, source, doc_hash) for i in pair)
        written = [p for p in points if p.payload[Field.SOURCE] == source]
        for found in (edge, server):
            assert [p.id for p in found] == [p.id for p in written]
            assert [p.sparse for p in found] == [p.sparse for p in written]
            for p, q in zip(found, written, strict=True):
                assert p.dense == pytest.approx(q.dense, abs=1e-6)  # stored normalized
                assert p.payload == {**q.payload, Field.TERMS: q.sparse.indices}
    assert both(pair, lambda i: i.document_groups(ROOTS[0], "nowhere.md")) is None
    assert both(pair, lambda i: i.manifest("/not/a/root")) == {}
    assert both(pair, lambda i: i.points_of(ROOTS[0], "nowhere.md", "h")) == []


def test_facets_first_chunks_and_statistics(pair):
    points = filled(pair)
    for key in KEYWORD_FIELDS:
        chunks = both(pair, lambda i, key=key: i.facet(key))
        documents = both(pair, lambda i, key=key: i.facet(key, first_chunks=True))
        if key == Field.GROUPS:  # a chunk counts once per group it has
            assert sum(chunks.values()) == sum(len(p.payload[key]) for p in points)
        else:
            assert sum(chunks.values()) == len(points)
        assert set(documents) == set(chunks)
        assert sum(documents.values()) == sum(
            len(p.payload[key]) if key == Field.GROUPS else 1
            for p in points
            if p.payload[Field.CHUNK] == 0
        )
    fields = [Field.ROOT, Field.SOURCE, Field.KIND, Field.CHUNKS]
    first = both(pair, lambda i: sorted(i.first_chunks(fields), key=lambda p: p[Field.SOURCE]))
    assert len(first) == len({p.payload[Field.SOURCE] for p in points})
    assert all(set(payload) == set(fields) for payload in first)
    stats = both(pair, index_stats)
    assert sum(row["chunks"] for row in stats["by_kind"]) == stats["chunks"] == len(points)
    assert both(pair, groups_in_index) == sorted(
        {g for p in points for g in p.payload[Field.GROUPS]}
    )


def test_statistics_of_an_ingested_folder(tmp_path, embedder):
    """The same folder through the pipeline into each backend: the same statistics."""
    docs = tmp_path / "docs"
    (docs / "hr").mkdir(parents=True)
    (docs / "a.md").write_text("# Alpha\n\nAlpha is the first letter.\n", "utf-8")
    (docs / "b.txt").write_text("Beta follows alpha in the Greek alphabet.\n", "utf-8")
    (docs / "hr" / "pay.md").write_text("# Pay\n\nSalaries are paid monthly.\n", "utf-8")
    (docs / ACL_FILE_NAME).write_text('[[rule]]\npattern = "hr/**"\ngroups = ["hr"]\n', "utf-8")
    settings = Settings(data_dir=tmp_path / "data", ollama_host=closed_port_url())
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        pair = (EdgeIndex(settings.data_dir), ServerIndex(settings, client=client))
        for index in pair:
            Ingestor(settings, embedder, index=index).run(docs)
        stats = both(pair, index_stats)
        groups = both(pair, groups_in_index)
    finally:
        client.close()
    assert (stats["documents"], groups) == (3, ["everyone", "hr"])
    assert {row["kind"]: row["documents"] for row in stats["by_kind"]} == {"md": 2, "txt": 1}
    assert sum(row["chunks"] for row in stats["by_kind"]) == stats["chunks"]
    assert [(r["root"], r["documents"]) for r in stats["by_root"]] == [(str(docs.resolve()), 3)]


# -- the query -------------------------------------------------------------------------------


@pytest.mark.parametrize("legs", ["both", "dense", "keyword"])
def test_search_in_each_legs_mode_with_group_filters(pair, legs):
    points = filled(pair)
    for dense, keyword in questions():
        for groups in ASKERS:
            for limit in (3, 10, len(points)):  # the last: everything the asker may read
                request = SearchRequest(dense, keyword, groups, limit, legs=legs)
                hits = same_hits(pair, request)
                assert all(visible(h, groups) for h in hits), request
                if groups == ["nobody"]:
                    assert hits == []
                if legs != "both":  # the data has no ties in a leg: each fusion is defined
                    assert len({round(h.score, 5) for h in hits}) == len(hits), request


@pytest.mark.parametrize("weights", [(1.0, 1.0), (3.0, 1.0), (1.0, 3.0), (0.0, 1.0)])
def test_weighted_fusion_for_the_ablation(pair, weights):
    filled(pair)
    for dense, keyword in questions(seed=13):
        for groups in ASKERS[:4]:
            request = SearchRequest(dense, keyword, groups, 10, weights=weights)
            same_hits(pair, request)
            if weights == (1.0, 1.0):  # equal weights are the product's fusion
                plain = same_hits(pair, replace(request, weights=None))
                same_ranking(plain, same_hits(pair, request), request.limit)


def test_candidates_bound_each_leg(pair):
    filled(pair)
    dense, keyword = questions()[0]
    for candidates in (1, 5, 40):
        same_hits(pair, SearchRequest(dense, keyword, GROUPS, 5, candidates=candidates))


def test_the_keyword_weights_count_only_what_the_asker_may_read(pair):
    """The keyword leg's IDF is counted over the asker's chunks: hiding documents from an
    asker changes nothing of what they see, on either backend (scores included)."""
    points = filled(pair)
    _, keyword = questions()[0]
    request = SearchRequest([0.0] * DIM, keyword, ["sales"], 50, legs="keyword")
    before = same_hits(pair, request)
    hidden = {
        (p.payload[Field.ROOT], p.payload[Field.SOURCE])
        for p in points
        if "sales" not in p.payload[Field.GROUPS]
    }
    for index in pair:
        index.write([SetGroups(root, source, ["vault"]) for root, source in sorted(hidden)])
    after = same_hits(pair, request)
    assert [(h.id, h.score) for h in after] == [(h.id, h.score) for h in before]


# -- writes ----------------------------------------------------------------------------------


def test_writes_in_order_set_groups_delete_and_replace(pair):
    points = filled(pair)
    rng = random.Random(3)
    root, source = points[0].payload[Field.ROOT], points[0].payload[Field.SOURCE]
    victim = next(p for p in points if p.payload[Field.SOURCE] != source)
    other = (victim.payload[Field.ROOT], victim.payload[Field.SOURCE])
    new = document(rng, root, source, "v2", ["legal"])
    operations = [
        SetGroups(*other, ["hr", "legal"]),
        Upsert(new),  # the new version, then the removal of the others: as a run writes
        DeleteDocument(root, source, keep_hash=new[0].payload[Field.DOC_HASH]),
        DeleteDocument(ROOTS[1], "not-indexed.md"),
    ]
    for index in pair:
        index.write(operations)
    assert both(pair, lambda i: i.document_groups(*other)) == ["hr", "legal"]
    assert both(pair, lambda i: i.manifest(root))[source].hashes == {f"{source}@v2"}
    assert both(pair, lambda i: i.counts())["chunks"] == len(points) - sum(
        p.payload[Field.SOURCE] == source for p in points
    ) + len(new)
    for dense, keyword in questions(seed=5):
        hits = same_hits(pair, SearchRequest(dense, keyword, ["legal"], 50))
        assert all(visible(h, ["legal"]) for h in hits)
    for index in pair:
        index.write([DeleteDocument(*other)])
    assert both(pair, lambda i: i.document_groups(*other)) is None
    assert (
        both(pair, index_stats)["documents"] == len({p.payload[Field.SOURCE] for p in points}) - 1
    )


def test_staging_and_promote(pair):
    points = filled(pair)
    stagings = [index.staging() for index in pair]
    assert [s.exists() for s in stagings] == [False, False]
    rebuilt = corpus(seed=21, documents=6)
    for staging in stagings:
        staging.ensure(STAMP)
        staging.write([Upsert(rebuilt)])
    assert both(pair, lambda i: i.counts())["chunks"] == len(points)  # the old one answers
    for index, staging in zip(pair, stagings, strict=True):
        index.promote(staging)
    assert both(pair, lambda i: i.counts()) == {"documents": 6, "chunks": len(rebuilt)}
    assert both(pair, lambda i: i.read_stamp()["model"]) == STAMP.as_dict()
    for dense, keyword in questions():
        same_hits(pair, SearchRequest(dense, keyword, GROUPS, 10))
    for index in pair:
        with pytest.raises(StoreError, match="run `taimatsu reindex` again"):
            index.promote(index.staging())  # never filled
