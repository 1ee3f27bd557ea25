"""Talking to the model server through llama-index: the model, streaming with retries,
replicas, health.

Two protocols (`TAIMATSU_LLM_BACKEND`): Ollama's own API through llama-index's `Ollama`,
or the OpenAI chat-completions API that vLLM, llama.cpp's llama-server, LM Studio,
LocalAI, LiteLLM and TGI serve, through llama-index's `OpenAILike` (which talks only to
the URL it is given: no tokenizer download, no other host).

Errors are mapped to a reason the page can say in one sentence: "unreachable" (nothing
listens), "missing" (the server lacks the model; say how to get it there), "unauthorized"
(the server refused the API key), "endpoint" (an OpenAI URL without the API under it,
usually a missing /v1), "key-file" (TAIMATSU_LLM_API_KEY_FILE cannot be read), "slow"
(no answer within TAIMATSU_LLM_REQUEST_TIMEOUT), "broken" (the stream died after it
started, or the server failed). A connection reset before the first token is retried
with backoff; a refused connection is not (it means no server, and the asker should get
the passages at once) — the next replica is tried instead.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import ollama
import openai
from llama_index.core.llms import ChatMessage
from llama_index.core.llms.llm import LLM

from assistant.errors import LLMUnavailable, SettingsError
from assistant.settings import Settings

log = logging.getLogger(__name__)
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before the 2nd, 3rd and 4th attempt
_RESETS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, ConnectionResetError)
DEFAULT_OPENAI_URL = "http://127.0.0.1:8000/v1"  # vLLM's default port
NO_KEY = "none"  # OpenAI clients need some key; servers without one ignore it


def urls(settings: Settings) -> list[str]:
    """The model servers (replicas): TAIMATSU_LLM_URL, comma-separated; when it is empty,
    TAIMATSU_OLLAMA_HOST for the ollama backend and vLLM's local default for openai."""
    fallback = settings.ollama_host if settings.llm_backend == "ollama" else DEFAULT_OPENAI_URL
    listed = settings.llm_url.strip() or fallback
    return [u.strip().rstrip("/") for u in listed.split(",") if u.strip()]


def api_key(settings: Settings) -> str | None:
    """The API key: the file's content (read now, stripped) or TAIMATSU_LLM_API_KEY."""
    if settings.llm_api_key_file is not None:
        try:
            key = settings.llm_api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as exc:
            raise SettingsError(
                f"TAIMATSU_LLM_API_KEY_FILE {settings.llm_api_key_file} cannot be read "
                f"({exc.__class__.__name__}); give a readable file holding the key."
            ) from None
        return key or None
    return settings.llm_api_key or None


def make_llm(settings: Settings, url: str | None = None) -> LLM:
    url = url or urls(settings)[0]
    if settings.llm_backend == "openai":
        from llama_index.llms.openai_like import OpenAILike

        return OpenAILike(
            model=settings.llm_model,
            api_base=url,
            api_key=api_key(settings) or NO_KEY,
            is_chat_model=True,
            context_window=settings.llm_context_window,
            timeout=settings.llm_request_timeout,
            max_retries=0,  # we retry resets ourselves and fail over to the next replica
            temperature=settings.llm_temperature,
            reuse_client=True,
        )
    from llama_index.llms.ollama import Ollama

    return Ollama(
        model=settings.llm_model,
        base_url=url,
        context_window=settings.llm_context_window,  # explicit: -1 asks the server
        request_timeout=settings.llm_request_timeout,
        keep_alive=settings.llm_keep_alive,
        temperature=settings.llm_temperature,
    )


def _reason(exc: BaseException, started: bool) -> str | None:
    """Why no (whole) answer came, or None for a reset worth retrying."""
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code in (401, 403):
            return "unauthorized"
        return "missing" if exc.status_code == 404 else "broken"
    if isinstance(exc, openai.NotFoundError):
        return "missing" if "model" in str(exc).lower() else "endpoint"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "unauthorized"
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return "slow"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if isinstance(cause, _RESETS) and not started:
            return None
        return "broken" if started else "unreachable"
    if isinstance(exc, openai.APIError):  # other status codes, an error event mid-stream
        return "broken"
    if isinstance(exc, _RESETS) and not started:
        return None
    return "broken" if started else "unreachable"


_ERRORS = (ollama.ResponseError, openai.APIError, ConnectionError, httpx.HTTPError, OSError)


def _texts(llm: LLM, chat: list[ChatMessage], stream: bool) -> Iterator[str]:
    if stream:
        for response in llm.stream_chat(chat):
            yield response.delta or ""
    else:
        yield llm.chat(chat).message.content or ""


def stream_chat(
    llm: LLM, messages: list[dict[str, str]], url: str = "", stream: bool = True
) -> Iterator[str]:
    """The model's answer as text deltas (one whole text when not `stream`); raises
    LLMUnavailable with a reason."""
    chat = [ChatMessage(**m) for m in messages]
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        started = False
        try:
            for text in _texts(llm, chat, stream):
                started = True
                if text:
                    yield text
            return
        except _ERRORS as exc:
            reason = _reason(exc, started)
            if reason is None and delay is not None:
                log.info("%s reset the connection (attempt %d); retrying", url, attempt + 1)
                time.sleep(delay)
                continue
            log.warning(
                "model server at %s: %s (%s)", url, reason or "unreachable", type(exc).__name__
            )
            raise LLMUnavailable(reason or "unreachable") from exc


@dataclass(frozen=True)
class Replica:
    url: str
    llm: LLM


class LLMPool:
    """The configured model servers, of one backend: each request starts at the next
    server in turn (so replicas share the load), and one that cannot be reached is
    skipped for the next."""

    def __init__(self, settings: Settings) -> None:
        self.backend = settings.llm_backend
        self.replicas: list[Replica] = []
        self._turn = itertools.count()
        self._unusable: str | None = None if urls(settings) else "unreachable"
        try:
            self.replicas = [Replica(url, make_llm(settings, url)) for url in urls(settings)]
        except SettingsError as exc:  # an unreadable key file: each answer says so
            log.error("%s", exc)
            self._unusable = "key-file"

    def stream_chat(self, messages: list[dict[str, str]], stream: bool = True) -> Iterator[str]:
        if self._unusable:
            raise LLMUnavailable(self._unusable)
        start = next(self._turn)
        count = len(self.replicas)
        for i in range(count):
            replica = self.replicas[(start + i) % count]
            try:
                yield from stream_chat(replica.llm, messages, replica.url, stream)
                return
            except LLMUnavailable as exc:
                if exc.reason != "unreachable" or i == count - 1:
                    raise
                log.warning("model server at %s unreachable; trying the next", replica.url)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """A whole (short) answer in one response (not streamed), with the same errors,
        retries and failover as stream_chat."""
        return "".join(self.stream_chat(messages, stream=False))


# -- health ------------------------------------------------------------------------------


def llm_health(settings: Settings, timeout: float = 3.0) -> dict[str, Any]:
    """Each server's reachability and whether it has the model; the first reachable one
    speaks for all in the top-level fields. Never raises; never shows the API key."""
    try:
        key = api_key(settings) if settings.llm_backend == "openai" else None
    except SettingsError as exc:
        key, key_error = None, str(exc)
    else:
        key_error = None
    check = _openai_health if settings.llm_backend == "openai" else _ollama_health
    servers = [check(url, settings.llm_model, timeout, key) for url in urls(settings)]
    none = {**_blank("", settings.llm_model), "error": "no model server URL is set"}
    first = next((s for s in servers if s["reachable"]), servers[0] if servers else none)
    report = {**first, "backend": settings.llm_backend, "url": ",".join(urls(settings))}
    if key_error:
        report["error"] = key_error
    return {**report, "servers": servers}


def _blank(url: str, wanted: str) -> dict[str, Any]:
    return {
        "url": url,
        "model": wanted,
        "reachable": False,
        "version": None,
        "model_present": False,
    }


def _ollama_health(url: str, wanted: str, timeout: float, key: str | None) -> dict[str, Any]:
    health = _blank(url, wanted)
    try:
        with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as c:
            health["version"] = c.get("/api/version").raise_for_status().json().get("version")
            health["reachable"] = True
            models = c.get("/api/tags").raise_for_status().json().get("models", [])
    except (httpx.HTTPError, ValueError) as exc:
        health["error"] = f"Ollama at {url} is unreachable ({exc.__class__.__name__})"
        return health
    names = {m.get("name") for m in models} | {m.get("model") for m in models}
    health["model_present"] = wanted in names or (":" not in wanted and f"{wanted}:latest" in names)
    if not health["model_present"]:
        health["error"] = f"model {wanted} is missing; run `ollama pull {wanted}`"
    return health


def _openai_health(url: str, wanted: str, timeout: float, key: str | None) -> dict[str, Any]:
    """`GET {url}/models` (url is the base with /v1, as OpenAI clients expect)."""
    health = _blank(url, wanted)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as c:
            response = c.get(f"{url}/models", headers=headers)
    except httpx.HTTPError as exc:
        health["error"] = f"the model server at {url} is unreachable ({exc.__class__.__name__})"
        return health
    health["reachable"] = True
    if response.status_code in (401, 403):
        health["key_refused"] = True
        health["error"] = (
            f"the model server at {url} refused the API key; set TAIMATSU_LLM_API_KEY "
            "or TAIMATSU_LLM_API_KEY_FILE"
        )
        return health
    try:
        models = response.raise_for_status().json().get("data", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        health["error"] = f"{url}/models is not an OpenAI model list; the URL must end in /v1"
        return health
    health["model_present"] = wanted in {m.get("id") for m in models if isinstance(m, dict)}
    if not health["model_present"]:
        served = ", ".join(str(m.get("id")) for m in models if isinstance(m, dict)) or "none"
        health["error"] = (
            f"model {wanted} is not served at {url} (it serves: {served}); load it there "
            "or set TAIMATSU_LLM_MODEL to a served model"
        )
    return health
