"""The server backend (assistant/index/server.py) through qdrant-client's local mode, which
speaks the client API with no server; the behaviour checks run on both backends, the
embedded one (EdgeIndex) and the server one (ServerIndex), to show one schema and one
behaviour. The wire-level checks talk HTTP to a small stand-in server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from qdrant_client import QdrantClient, models

from assistant import sparse
from assistant.embedder import ModelStamp
from assistant.errors import ModelMismatch, StoreError
from assistant.index import open_index
from assistant.index.base import (
    DENSE,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    SPARSE,
    ChunkPoint,
    DeleteDocument,
    Index,
    SearchRequest,
    SetGroups,
    SparseTerms,
    Upsert,
    stamp_problem,
)
from assistant.index.edge import EdgeIndex
from assistant.index.server import STAMP_KEY, ServerIndex
from assistant.retrieval import Searcher
from assistant.settings import Settings
from ingest.pipeline import Ingestor, walk
from tests.conftest import SAMPLES, CachedEmbedder, closed_port_url

BACKENDS = ["edge", "server"]
OTHER_MODEL = ModelStamp("multilingual-e5-small", "0" * 64, 384)


class Recording:
    """A client that notes every call before passing it on."""

    def __init__(self, inner: QdrantClient) -> None:
        self._inner = inner
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, kwargs))
            return attr(*args, **kwargs)

        return call

    def named(self, name: str) -> list[dict]:
        return [kwargs for called, kwargs in self.calls if called == name]


@pytest.fixture(scope="module")
def model(embedder) -> CachedEmbedder:
    return CachedEmbedder(embedder)


@pytest.fixture
def local_client(tmp_path: Path):
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    yield client
    client.close()


@pytest.fixture(params=BACKENDS)
def backend(request, settings: Settings, tmp_path: Path) -> Index:
    """An empty index of each backend (the server one in qdrant-client local mode)."""
    if request.param == "edge":
        return EdgeIndex(settings.data_dir, settings.lock_timeout)
    return ServerIndex(settings, client=request.getfixturevalue("local_client"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    return folder


@pytest.fixture(scope="module")
def server_samples(tmp_path_factory: pytest.TempPathFactory, embedder):
    """The bundled samples ingested once into the server backend (read-only for tests)."""
    folder = tmp_path_factory.mktemp("server-samples")
    settings = Settings(data_dir=folder / "data", ollama_host=closed_port_url())
    client = QdrantClient(path=str(folder / "qdrant"))
    index = ServerIndex(settings, client=client)
    summary = Ingestor(settings, embedder, index=index).run(SAMPLES)
    assert summary.added == len(list(walk(SAMPLES))) and not summary.failed
    yield settings, index
    client.close()


@pytest.fixture(params=BACKENDS)
def samples_index(request) -> tuple[Settings, Index]:
    if request.param == "edge":
        settings = request.getfixturevalue("sample_settings")
        return settings, EdgeIndex(settings.data_dir, settings.lock_timeout)
    return request.getfixturevalue("server_samples")


def searcher_on(settings: Settings, embedder, index: Index) -> Searcher:
    searcher = Searcher(settings, embedder)
    searcher.index = index  # Searcher opens the index from settings; here, the one under test
    return searcher


def _sources(searcher: Searcher, query: str, groups: list[str], k: int = 20) -> set[str]:
    return {p.source for p in searcher.search(query, groups, k)}


# -- the same behaviour on both backends ----------------------------------------------


def test_second_run_embeds_nothing(settings, model, backend, corpus):
    first = Ingestor(settings, model, index=backend).run(corpus)
    assert (first.added, first.failed) == (8, [])
    second = Ingestor(settings, model, index=backend).run(corpus)
    assert (second.unchanged, second.chunks_embedded, second.changed) == (8, 0, False)
    assert backend.counts() == {"documents": 8, "chunks": first.chunks_embedded}
    assert backend.roots() == [str(corpus.resolve())]


def test_changed_file_replaces_its_chunks(settings, model, backend, corpus):
    Ingestor(settings, model, index=backend).run(corpus)
    before = backend.counts()
    (corpus / "en" / "it-onboarding.txt").write_text(
        "Wi-Fi: the staff network is now called ZEPHYR-NET-77.\n", encoding="utf-8"
    )
    summary = Ingestor(settings, model, index=backend).run(corpus)
    assert (summary.updated, summary.unchanged) == (1, 7)
    texts = [p.text for p in searcher_on(settings, model, backend).search("staff Wi-Fi", [], 20)]
    assert any("ZEPHYR-NET-77" in t for t in texts)
    assert not any("KIRI-STAFF" in t for t in texts)
    manifest = backend.manifest(str(corpus.resolve()))
    assert len(manifest["en/it-onboarding.txt"].hashes) == 1
    assert backend.counts()["chunks"] < before["chunks"]


def test_deleted_file_is_gone(settings, model, backend, corpus):
    Ingestor(settings, model, index=backend).run(corpus)
    (corpus / "en" / "vpn-troubleshooting.pdf").unlink()
    assert Ingestor(settings, model, index=backend).run(corpus).deleted == 1
    searcher = searcher_on(settings, model, backend)
    assert "en/vpn-troubleshooting.pdf" not in _sources(searcher, "VPN-0x2F", [])
    assert "en/vpn-troubleshooting.pdf" not in backend.manifest(str(corpus.resolve()))
    assert backend.counts()["documents"] == 7


def test_moved_file_reuses_its_vectors(settings, model, backend, corpus):
    Ingestor(settings, model, index=backend).run(corpus)
    (corpus / "archive").mkdir()
    (corpus / "en" / "leave-policy.md").rename(corpus / "archive" / "leave-policy.md")
    summary = Ingestor(settings, model, index=backend).run(corpus)
    assert (summary.added, summary.deleted, summary.chunks_embedded) == (1, 1, 0)
    assert summary.chunks_reused > 0
    manifest = backend.manifest(str(corpus.resolve()))
    assert "archive/leave-policy.md" in manifest and "en/leave-policy.md" not in manifest
    hits = searcher_on(settings, model, backend).search("carry over unused leave days", [], 3)
    assert hits[0].source == "archive/leave-policy.md"


def test_group_filter_is_applied_in_the_engine(settings, model, backend, corpus):
    Ingestor(settings, model, index=backend).run(corpus)
    root = str(corpus.resolve())
    backend.write([SetGroups(root, "en/vpn-troubleshooting.pdf", ["hr"])])
    assert backend.manifest(root)["en/vpn-troubleshooting.pdf"].groups == ["hr"]
    searcher = searcher_on(settings, model, backend)
    for groups, visible in ((["sales"], False), (["hr"], True), (["sales", "hr"], True)):
        sources = _sources(searcher, "VPN-0x2F error", groups)
        assert ("en/vpn-troubleshooting.pdf" in sources) is visible, groups
        assert "en/it-onboarding.txt" in sources
    # the engine returns nothing else: no hit of the hidden document even at depth 100
    vpn, none = model.embed_query("VPN"), SparseTerms([], [])
    hits = backend.search(SearchRequest(vpn, none, ["sales", "everyone"], 100))
    assert hits and all(h.payload["groups"] == ["everyone"] for h in hits)
    assert backend.search(SearchRequest(vpn, none, ["sales"], 100)) == []
    # each leg alone keeps the filter too
    terms = SparseTerms.of(sparse.embed_query("VPN-0x2F"))
    for legs in ("dense", "keyword"):
        request = SearchRequest(model.embed_query("VPN-0x2F"), terms, ["everyone"], 100, legs=legs)
        hits = backend.search(request)
        assert hits and all(h.payload["groups"] == ["everyone"] for h in hits), legs
        assert backend.search(SearchRequest(vpn, terms, ["sales"], 100, legs=legs)) == []
    # no group at all (file-system permissions that let nobody read): no hit for anyone
    backend.write([SetGroups(root, "en/vpn-troubleshooting.pdf", [])])
    assert backend.manifest(root)["en/vpn-troubleshooting.pdf"].groups == []
    everybody = ["everyone", "hr", "sales"]
    hits = backend.search(SearchRequest(vpn, none, everybody, 100))
    assert hits and "en/vpn-troubleshooting.pdf" not in {h.payload["source"] for h in hits}


def test_exact_code_and_japanese_question(samples_index, model):
    settings, index = samples_index
    searcher = searcher_on(settings, model, index)
    hits = searcher.search("VPN-0x31", ["everyone"], 2)
    assert any(
        (h.source, h.page) == ("en/vpn-troubleshooting.pdf", 2) and "VPN-0x31" in h.text
        for h in hits
    ), [h.where for h in hits]
    hits = searcher.search("在宅勤務は週何日までですか", ["everyone"], 3)
    assert "ja/在宅勤務規程.md" in [h.source for h in hits], [h.where for h in hits]


def test_other_model_is_refused_with_the_same_message(settings, model, backend, corpus):
    Ingestor(settings, model, index=backend).run(corpus)
    other = SimpleNamespace(stamp=OTHER_MODEL)  # the run stops before it embeds anything
    with pytest.raises(ModelMismatch, match="run `taimatsu reindex`") as refused:
        Ingestor(settings, other, index=backend).run(corpus)
    assert str(refused.value) == stamp_problem(backend.read_stamp(), OTHER_MODEL)
    assert backend.read_stamp()["model"] == model.stamp.as_dict()


def test_staging_and_promote_swap_the_contents(settings, model, backend, corpus, tmp_path):
    Ingestor(settings, model, index=backend).run(corpus)
    japanese = tmp_path / "ja-only"
    shutil.copytree(SAMPLES / "ja", japanese)
    staging = backend.staging()
    assert not staging.exists()
    Ingestor(settings, model, index=staging).run(japanese)
    assert backend.roots() == [str(corpus.resolve())]  # the old index answers meanwhile
    assert backend.counts()["documents"] == 8
    backend.promote(staging)
    assert backend.roots() == [str(japanese.resolve())]
    assert backend.counts()["documents"] == 4
    assert backend.read_stamp()["model"] == model.stamp.as_dict()
    sources = _sources(searcher_on(settings, model, backend), "VPN-0x2F", [])
    assert sources and sources <= {p.name for p in (SAMPLES / "ja").iterdir()}


def test_both_backends_hold_the_same_index(sample_settings, server_samples, embedder):
    edge = EdgeIndex(sample_settings.data_dir)
    _, server = server_samples
    root = str(SAMPLES.resolve())
    assert server.counts() == edge.counts()
    assert server.roots() == edge.roots() == [root]
    assert server.manifest(root) == edge.manifest(root)
    assert server.read_stamp()["model"] == edge.read_stamp()["model"]
    source = "en/leave-policy.md"
    (doc_hash,) = server.manifest(root)[source].hashes
    ours, theirs = server.points_of(root, source, doc_hash), edge.points_of(root, source, doc_hash)
    assert [p.id for p in ours] == [p.id for p in theirs]
    assert [p.sparse.indices for p in ours] == [p.sparse.indices for p in theirs]
    assert all(
        p.dense == pytest.approx(q.dense, abs=1e-6) for p, q in zip(ours, theirs, strict=True)
    )
    question = "What does error VPN-0x2F mean?"
    terms = SparseTerms.of(sparse.embed_query(question))
    request = SearchRequest(embedder.embed_query(question), terms, ["everyone"], 5)
    ours_hits = {h.id: h for h in server.search(request)}
    theirs_hits = {h.id: h for h in edge.search(request)}
    common = set(ours_hits) & set(theirs_hits)
    assert common and any(ours_hits[i].coverage > 0 for i in common)
    for i in common:  # the same relevance signals for the same chunk
        assert ours_hits[i].similarity == pytest.approx(theirs_hits[i].similarity, abs=1e-3)
        assert ours_hits[i].coverage == theirs_hits[i].coverage
    unstamped = [{k: v for k, v in p.payload.items() if k != "indexed_at"} for p in ours]
    assert unstamped == [{k: v for k, v in p.payload.items() if k != "indexed_at"} for p in theirs]


# -- the server backend itself -----------------------------------------------------------


def test_schema_and_stamp_in_the_collection(settings, model, local_client):
    recording = Recording(local_client)
    index = ServerIndex(settings, client=recording)  # type: ignore[arg-type]
    assert not index.exists() and index.read_stamp() is None
    index.ensure(model.stamp)
    (created,) = recording.named("create_collection")
    dense = created["vectors_config"][DENSE]
    assert (dense.size, dense.distance) == (model.stamp.dim, models.Distance.COSINE)
    # no engine IDF: it would count chunks the asker may not read (visible_idf instead)
    assert created["sparse_vectors_config"][SPARSE].modifier is None
    indexes = {c["field_name"]: c["field_schema"] for c in recording.named("create_payload_index")}
    # matched, never ranged; on disk unless every query filters on it (decisions §17)
    assert indexes == {
        **{
            name: models.KeywordIndexParams(type="keyword", on_disk=True) for name in KEYWORD_FIELDS
        },
        **{
            name: models.IntegerIndexParams(type="integer", lookup=True, range=False, on_disk=True)
            for name in INTEGER_FIELDS
        },
        "groups": models.KeywordIndexParams(type="keyword", on_disk=False),
        "chunk": models.IntegerIndexParams(type="integer", lookup=True, range=False, on_disk=False),
    }
    assert all(c["wait"] for c in recording.named("create_payload_index"))
    # the real data sits in a versioned collection behind the alias, stamp in its metadata
    (alias,) = local_client.get_aliases().aliases
    assert alias.alias_name == "taimatsu" and alias.collection_name == created["collection_name"]
    info = local_client.get_collection("taimatsu")
    assert info.config.metadata[STAMP_KEY]["model"] == model.stamp.as_dict()
    assert info.points_count == 0  # no reserved point: the stamp is not a point
    assert index.description == "qdrant-client local mode (collection taimatsu)"
    index.ensure(model.stamp)  # a second ensure creates nothing
    assert len(recording.named("create_collection")) == 1
    assert (created["shard_number"], created["replication_factor"]) == (1, 1)


def test_cluster_shards_and_replicas_come_from_settings(settings, model, local_client):
    recording = Recording(local_client)
    cluster = settings.model_copy(update={"qdrant_shards": 6, "qdrant_replicas": 2})
    ServerIndex(cluster, client=recording).ensure(model.stamp)  # type: ignore[arg-type]
    (created,) = recording.named("create_collection")
    assert (created["shard_number"], created["replication_factor"]) == (6, 2)


def test_writes_wait_and_hybrid_filters_every_leg(settings, model, local_client, corpus):
    recording = Recording(local_client)
    index = ServerIndex(settings, client=recording)  # type: ignore[arg-type]
    Ingestor(settings, model, index=index).run(corpus)
    writes = recording.named("batch_update_points")
    assert writes and all(w["wait"] is True for w in writes)
    terms = SparseTerms([1], [1.0])
    assert index.search(SearchRequest(model.embed_query("leave"), terms, ["hr", "everyone"], 4))
    (query,) = recording.named("query_points")
    groups = models.Filter(
        must=[models.FieldCondition(key="groups", match=models.MatchAny(any=["everyone", "hr"]))]
    )
    assert [p.filter for p in query["prefetch"]] == [groups, groups]
    assert [p.using for p in query["prefetch"]] == [DENSE, SPARSE]
    assert "query_filter" not in query and query["with_payload"] is True
    assert query["query"] == models.RrfQuery(rrf=models.Rrf(k=60))


def test_an_interrupted_rebuild_is_cleaned_up(settings, model, local_client):
    index = ServerIndex(settings, client=local_client)
    index.ensure(model.stamp)
    abandoned = index.staging()
    abandoned.ensure(model.stamp)
    assert abandoned.exists() and abandoned.name.startswith("taimatsu-")
    time.sleep(0.001)
    fresh = index.staging()
    assert not abandoned.exists() and fresh.name != abandoned.name
    assert index.exists()  # the answering collection is kept
    with pytest.raises(StoreError, match="run `taimatsu reindex` again"):
        index.promote(fresh)  # never filled


def test_a_foreign_collection_is_not_taken_over(settings, model, local_client):
    local_client.create_collection(
        "taimatsu", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
    )
    index = ServerIndex(settings, client=local_client)
    with pytest.raises(StoreError, match="no Taimatsu model stamp") as refused:
        index.ensure(model.stamp)
    assert "TAIMATSU_QDRANT_COLLECTION" in str(refused.value)
    staging = index.staging()
    staging.ensure(model.stamp)
    with pytest.raises(StoreError, match="no Taimatsu model stamp"):
        index.promote(staging)  # nor replaced by a rebuild
    assert local_client.get_collection("taimatsu").config.params.vectors.size == 4


def test_an_unreachable_server_is_one_sentence(model, tmp_path):
    url = closed_port_url()
    settings = Settings(data_dir=tmp_path / "data", qdrant_url=url)
    index = open_index(settings)
    assert isinstance(index, ServerIndex)
    assert index.description == f"Qdrant server at {url} (collection taimatsu)"
    started = time.monotonic()
    for attempt in (index.exists, index.counts, lambda: index.ensure(model.stamp)):
        with pytest.raises(StoreError) as failed:
            attempt()
        message = str(failed.value)
        assert "\n" not in message and "Traceback" not in message
        assert message.startswith(f"the Qdrant server at {url} is unreachable (")
        assert "check TAIMATSU_QDRANT_URL" in message
    with pytest.raises(StoreError, match="unreachable"):
        Ingestor(settings, model).run(SAMPLES)
    assert time.monotonic() - started < 10
    secret = url.replace("http://", "http://reader:pa55word@")
    with pytest.raises(StoreError) as failed:
        ServerIndex(settings.model_copy(update={"qdrant_url": secret})).roots()
    assert url in str(failed.value) and "pa55word" not in str(failed.value)


class _StandIn(BaseHTTPRequestHandler):
    """Answers like a Qdrant server with no collection (or one refusing the key) to GET,
    and accepts writes and queries, noting each request and its JSON body."""

    seen: list[tuple[str, str, str | None]] = []
    bodies: list[dict] = []
    status = 404

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps({**body, "time": 0}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.seen.append(("GET", self.path, self.headers.get("api-key")))
        self._answer(self.status, {"status": {"error": "Not found: Collection doesn't exist!"}})

    def do_POST(self):  # noqa: N802
        self.seen.append(("POST", self.path, self.headers.get("api-key")))
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        if self.path.startswith("/collections/taimatsu/points/query"):
            result: object = {"points": []}
        elif self.path.startswith("/collections/taimatsu/points/count"):
            result = {"count": 3}
        else:
            result = [{"operation_id": 1, "status": "completed"}]
        self._answer(200, {"result": result, "status": "ok"})

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    _StandIn.seen, _StandIn.bodies = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_over_the_wire_only_the_url_is_asked(stand_in, tmp_path, monkeypatch):
    """Three reads ask for the collection and nothing else. qdrant-client checks the
    server's version from a thread of its own: every thread started meanwhile (the
    stand-in's request threads too) is waited for before the requests are counted, so
    a version check would be seen, not raced."""
    url = f"http://127.0.0.1:{stand_in.server_address[1]}"
    settings = Settings(data_dir=tmp_path / "data", qdrant_url=url, qdrant_api_key="s3cret")
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    index = ServerIndex(settings)
    assert not index.exists() and index.roots() == [] and index.manifest("/docs") == {}
    monkeypatch.undo()
    for thread in started:
        thread.join(timeout=30)
        assert not thread.is_alive(), f"{thread.name} still runs"
    assert _StandIn.seen == [("GET", "/collections/taimatsu", "s3cret")] * 3
    _StandIn.status = 401
    try:
        with pytest.raises(StoreError, match="check TAIMATSU_QDRANT_API_KEY") as refused:
            index.exists()
    finally:
        _StandIn.status = 404
    assert "\n" not in str(refused.value) and "s3cret" not in str(refused.value)


def test_over_the_wire_writes_wait_and_queries_filter(stand_in, tmp_path):
    url = f"http://127.0.0.1:{stand_in.server_address[1]}"
    index = ServerIndex(Settings(data_dir=tmp_path / "data", qdrant_url=url))
    terms = SparseTerms([7], [1.0])
    point = ChunkPoint("4b0d8f3e-3c9e-4d1b-9a57-1f0c1e2d3a4b", [0.6, 0.8], terms, {"chunk": 0})
    index.write([Upsert([point]), DeleteDocument("/docs", "a.md", keep_hash="h1")])
    assert index.search(SearchRequest([0.6, 0.8], terms, ["hr"], 3)) == []
    assert [(m, path) for m, path, _ in _StandIn.seen] == [
        ("POST", "/collections/taimatsu/points/batch?wait=true"),
        ("POST", "/collections/taimatsu/points/count"),  # the asker's chunks
        ("POST", "/collections/taimatsu/points/count"),  # ... holding term 7
        ("POST", "/collections/taimatsu/points/query"),
    ]
    write, total, term, query = _StandIn.bodies
    upsert, delete = write["operations"]
    assert upsert["upsert"]["points"][0]["vector"]["bm25"] == {"indices": [7], "values": [1.0]}
    assert delete["delete"]["filter"]["must_not"] == [{"key": "doc_hash", "match": {"value": "h1"}}]
    groups = {"must": [{"key": "groups", "match": {"any": ["hr"]}}]}
    assert [leg["filter"] for leg in query["prefetch"]] == [groups, groups]
    assert [leg["using"] for leg in query["prefetch"]] == ["dense", "bm25"]
    # the fusion ranks only the legs' (filtered) candidates: no second filter to pay for
    assert query.get("filter") is None and query["query"] == {"rrf": {"k": 60}}
    # the keyword leg's IDF is counted over the asker's chunks only, and weighs the query
    assert total["filter"] == groups and total["exact"] is True
    assert term["filter"]["must"] == [*groups["must"], {"key": "terms", "match": {"value": 7}}]
    (keyword,) = [leg["query"] for leg in query["prefetch"] if leg["using"] == "bm25"]
    assert keyword == {"indices": [7], "values": [pytest.approx(math.log(1 + 0.5 / 3.5))]}
