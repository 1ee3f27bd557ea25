"""The local model's runtimes (TAIMATSU_EMBED_RUNTIME): torch, onnx and onnx-int8 load
offline from the packaged weights and give torch's vectors; the ONNX export is cached,
reused, rebuilt when broken and never left half written; an index built by one runtime
takes another's vectors only where they are the same numbers.

The ONNX runtimes use the session's export cache (tests/conftest.py, CACHE_ENV): the
export runs at most once a session for each runtime."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from assistant import embed_onnx
from assistant.embedder import Embedder
from assistant.errors import ModelMismatch, SettingsError
from assistant.index import open_index
from assistant.settings import Settings
from ingest.pipeline import Ingestor
from tests.conftest import CACHE_ENV, closed_port_url, run_cli

SENTENCES = [
    "How do I rebuild the index after changing the embedding model?",
    "The maintainer uploads the package to the archive with dput.",
    "Python's glob module finds path names that match a pattern.",
    "パッケージをアップロードする前に lintian で確認してください。",
    "在宅勤務の申請は前日までに上長へ提出します。",
    "松明は夜道を照らす。",
]


@pytest.fixture(scope="module")
def runtimes() -> dict[str, Embedder]:
    return {name: Embedder(runtime=name) for name in ("torch", "onnx", "onnx-int8")}


@pytest.fixture(scope="module")
def torch_vectors(runtimes) -> np.ndarray:
    return runtimes["torch"].embed(SENTENCES)


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_each_runtime_loads_offline_and_embeds_like_torch(
    runtime, runtimes, torch_vectors, monkeypatch
):
    """Hub libraries cannot reach the network (any attempt to open a socket fails);
    the vectors of English and Japanese sentences are torch's: the same numbers for
    onnx, within int8's rounding for onnx-int8."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the embedder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    embedder = runtimes[runtime]
    vectors = embedder.embed(SENTENCES)
    assert vectors.dtype == np.float32 and vectors.shape == torch_vectors.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosines = (vectors * torch_vectors).sum(axis=1)
    if runtime == "onnx":
        assert cosines.min() >= 0.9999
    else:
        assert cosines.mean() >= 0.99 and cosines.min() >= 0.97, cosines
    assert embedder.max_tokens == runtimes["torch"].max_tokens == 256
    text = "松明は夜道を照らす。A torch lights the path."
    assert embedder.count_tokens(text) == runtimes["torch"].count_tokens(text)
    query = np.array(embedder.embed_query(SENTENCES[3]))
    assert float(query @ torch_vectors[3]) >= 0.97
    assert embedder.stamp.as_dict()["runtime"] == runtime


def _cached(embedder: Embedder) -> Path:
    embedder.load()
    return embedder.onnx.path.parent


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_counting_and_questions_from_other_threads_never_upset_a_batch(runtimes, runtime):
    """Ingestion counts tokens (chunking) while its embedding thread encodes, and a
    page's sessions embed questions from threads of their own. A fast tokenizer keeps
    padding and truncation as state: shared, a count between the two unpadded the
    model's batch ("setting an array element with a sequence", 5,000 files into a
    100,000-file run). Every batch must come out whole and equal to one made alone."""
    embedder = runtimes[runtime]
    texts = ["short", "a much longer passage about packages " * 12, *SENTENCES]
    alone = embedder.embed(texts)
    encoding = embedder.model if runtime == "torch" else embedder.onnx
    assert embedder.tokenizer is not encoding.tokenizer
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_at(work) -> None:
        n = 0
        while not stop.is_set():
            try:
                work(n)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)
                return
            n += 1

    others = [
        threading.Thread(target=keep_at, args=(lambda n: embedder.count_tokens("word " * n),)),
        threading.Thread(target=keep_at, args=(lambda n: embedder.embed_query(f"q{n} " * n),)),
    ]
    for thread in others:
        thread.start()
    try:
        batches = [embedder.embed(texts) for _ in range(15)]
    finally:
        stop.set()
        for thread in others:
            thread.join()
    assert failures == []
    for batch in batches:
        assert np.allclose(batch, alone, atol=1e-5)


def test_the_export_is_reused_and_rebuilt_when_broken(runtimes, tmp_path, monkeypatch):
    """A second start reads the cache without exporting; a cache whose model file was
    damaged is exported again, and gives the same vectors."""
    shared = _cached(runtimes["onnx"])
    cache = tmp_path / "models"
    shutil.copytree(shared.parent, cache / shared.parent.name)
    folder = cache / shared.parent.name / shared.name
    record = json.loads((folder / "export.json").read_text())

    exports = []
    real_export = embed_onnx._export
    monkeypatch.setattr(embed_onnx, "_export", lambda *a: exports.append(a) or real_export(*a))
    again = Embedder(runtime="onnx", cache_dir=cache)
    assert np.allclose(again.embed(SENTENCES[:2]), runtimes["onnx"].embed(SENTENCES[:2]))
    assert exports == []  # reused

    with (folder / "model.onnx").open("r+b") as fh:  # a damaged file of the same size
        fh.seek(record["size"] // 2)
        fh.write(b"\0" * 4096)
    rebuilt = Embedder(runtime="onnx", cache_dir=cache)
    assert np.allclose(rebuilt.embed(SENTENCES[:2]), runtimes["onnx"].embed(SENTENCES[:2]))
    assert len(exports) == 1
    assert json.loads((folder / "export.json").read_text())["sha256"] == record["sha256"]
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_an_export_that_dies_midway_leaves_no_cache(tmp_path, monkeypatch):
    """The export writes in a temporary folder and renames it into place: one killed
    after half a model file leaves nothing that a later start would take for a cache."""

    def dies(model_dir, runtime, work):
        (work / "model.onnx").write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(embed_onnx, "_export", dies)
    cache = tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        Embedder(runtime="onnx-int8", cache_dir=cache).load()
    (model_folder,) = cache.iterdir()
    assert [p for p in model_folder.iterdir() if not p.name.endswith(".lock")] == []


def test_a_runtime_change_is_refused_or_accepted_as_measured(runtimes, tmp_path):
    """torch and onnx give the same vectors, so an index built by one takes the other's;
    int8 vectors differ, so onnx-int8 refuses a torch index (and torch an int8 one), saying
    to reindex; nothing is written by the refused run."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Torches\n\n" + " ".join(SENTENCES), "utf-8")
    settings = Settings(data_dir=tmp_path / "data", ollama_host=closed_port_url())
    assert Ingestor(settings, runtimes["torch"]).run(docs).chunks_embedded > 0
    stamp = open_index(settings).read_stamp()
    assert "runtime" not in stamp["model"]  # as indexes written before runtimes existed

    (docs / "b.md").write_text("# Lanterns\n\nA lantern is not a torch.", "utf-8")
    with pytest.raises(ModelMismatch, match=r"run `taimatsu reindex`.*EMBED_RUNTIME=torch"):
        Ingestor(settings, runtimes["onnx-int8"]).run(docs)
    index = open_index(settings)
    assert [sorted(index.manifest(root)) for root in index.roots()] == [["a.md"]]
    summary = Ingestor(settings, runtimes["onnx"]).run(docs)
    assert summary.added == 1 and not summary.failed

    other = Settings(data_dir=tmp_path / "int8", ollama_host=closed_port_url())
    Ingestor(other, runtimes["onnx-int8"]).run(docs)
    assert open_index(other).read_stamp()["model"]["runtime"] == "onnx-int8"
    with pytest.raises(ModelMismatch, match="onnx-int8 .int8 vectors., not torch"):
        Ingestor(other, runtimes["torch"]).run(docs)


def test_a_bad_runtime_is_one_line(settings, tmp_path):
    result = run_cli("status", settings=settings, extra_env={"TAIMATSU_EMBED_RUNTIME": "int4"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "taimatsu: error: TAIMATSU_EMBED_RUNTIME='int4' is not valid (Input should be "
        "'torch', 'onnx' or 'onnx-int8'); fix it in the environment or taimatsu.toml"
    ]
    with pytest.raises(SettingsError, match="not one of torch, onnx, onnx-int8"):
        Embedder(runtime="int4")


def test_the_cache_folder_follows_the_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV)
    assert Embedder(runtime="onnx").cache_dir is None
    from assistant.embedder import local_options

    settings = Settings(data_dir=tmp_path / "data")
    assert local_options(settings)["cache_dir"] == tmp_path / "data" / "models"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert local_options(Settings(data_dir=tmp_path / "data"))["cache_dir"] == (
        tmp_path / "elsewhere"
    )
