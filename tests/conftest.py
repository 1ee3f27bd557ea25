"""Shared fixtures: the real embedding model (loaded once), a real embedded index of the
bundled samples, the Ollama-protocol test server, and a way to run the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.embedder import Embedder
from assistant.settings import Settings
from ingest.pipeline import Ingestor, walk
from tests.ollama_server import FakeOllama

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
ARTIFACTS = ROOT / "test-artifacts"
# The local model's ONNX export (TAIMATSU_EMBED_RUNTIME), made once and shared by every
# test and every `taimatsu` the tests start, whatever their data folder: an export takes
# tens of seconds. The cache checks itself (source checksum, sha256), so it outlives a
# session safely; CI starts without it and exports once.
CACHE_ENV = "TAIMATSU_EMBED_CACHE_DIR"
os.environ.setdefault(CACHE_ENV, str(ARTIFACTS / "models"))


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def need_binary(name: str) -> str:
    """The path of a Debian tool the test needs; in CI its absence is a failure."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; `make test` installs it (scripts/sysdeps.sh)")
        pytest.skip(f"{name} is not installed (run scripts/sysdeps.sh as root)")
    return path


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


class CachedEmbedder:
    """The real model, each distinct text embedded once: tests that ingest or ask the same
    texts many times (reruns, the fresh ingestion a run is compared with, two worlds) pay
    for the model once. A vector is a function of its text alone, so remembering it
    changes no result, only the time; the pipeline's own counts still say what it asked
    to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.vectors: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [text for text in dict.fromkeys(texts) if text not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.inner.embed(missing), strict=True))
        if not texts:
            return self.inner.embed([])
        return np.stack([self.vectors[text] for text in texts])

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", ollama_host=closed_port_url(), lock_timeout=5)


@pytest.fixture(scope="session")
def sample_settings(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    """The bundled samples ingested once into a real index (read-only for tests)."""
    data = tmp_path_factory.mktemp("sample-index") / "data"
    settings = Settings(data_dir=data, ollama_host=closed_port_url(), lock_timeout=10)
    summary = Ingestor(settings, embedder).run(SAMPLES)
    assert summary.added == len(list(walk(SAMPLES))) and not summary.failed
    return settings


@pytest.fixture
def fake_ollama():
    with FakeOllama() as server:
        yield server


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    folder = ARTIFACTS / request.node.name.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_cli(
    *args: str,
    settings: Settings,
    stdin: str | None = None,
    timeout: float = 180,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `taimatsu` console script against `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_") or k == CACHE_ENV}
    env.update(
        TAIMATSU_DATA_DIR=str(settings.data_dir),
        TAIMATSU_OLLAMA_HOST=settings.ollama_host,
        TAIMATSU_LLM_MODEL=settings.llm_model,
        TAIMATSU_LOCK_TIMEOUT=str(settings.lock_timeout),
    )
    env.update(extra_env or {})
    exe = Path(sys.executable).with_name("taimatsu")
    return subprocess.run(
        [str(exe), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def real_model():
    """A real model (SmolLM2-135M-Instruct, run by transformers on the CPU) behind the
    Ollama- and OpenAI-protocol server in tests/real_model.py, loaded once a session."""
    from tests.real_model import RealModelServer, SmolLM, gguf_path

    try:
        gguf_path()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (`make venv` installs it)")
        pytest.skip(str(exc))
    with RealModelServer(
        SmolLM(max_new_tokens=48), aliases=(Settings.model_fields["llm_model"].default,)
    ) as server:
        yield server


def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve a WSGI app (oidc-provider-mock) on 127.0.0.1 in a thread; yields its URL."""
    import werkzeug.serving

    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
