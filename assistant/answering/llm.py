"""Talking to Ollama through llama-index: the model, streaming with retries, health.

Errors are mapped to a reason the page can say in one sentence: "unreachable" (nothing
listens), "missing" (the model is not pulled; say which `ollama pull` to run), "broken"
(the stream died after it started). A connection reset before the first token is
retried with backoff; a refused connection is not (it means no server, and the asker
should get the passages at once).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
from llama_index.core.llms import ChatMessage
from llama_index.llms.ollama import Ollama

from assistant.errors import LLMUnavailable
from assistant.settings import Settings

log = logging.getLogger(__name__)
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before the 2nd, 3rd and 4th attempt
_RESETS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, ConnectionResetError)


def hosts(settings: Settings) -> list[str]:
    """TAIMATSU_OLLAMA_HOST may list several servers, comma-separated (replicas)."""
    return [h.strip().rstrip("/") for h in settings.ollama_host.split(",") if h.strip()]


def make_llm(settings: Settings, host: str | None = None) -> Ollama:
    return Ollama(
        model=settings.llm_model,
        base_url=host or hosts(settings)[0],
        context_window=settings.llm_context_window,  # explicit: -1 asks the server
        request_timeout=settings.llm_request_timeout,
        keep_alive=settings.llm_keep_alive,
        temperature=settings.llm_temperature,
    )


def stream_chat(llm: Ollama, messages: list[dict[str, str]]) -> Iterator[str]:
    """The model's answer as text deltas; raises LLMUnavailable with a reason."""
    chat = [ChatMessage(**m) for m in messages]
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        started = False
        try:
            for response in llm.stream_chat(chat):
                started = True
                if response.delta:
                    yield response.delta
            return
        except ollama.ResponseError as exc:
            log.warning("ollama error %s: %s", exc.status_code, exc.error)
            raise LLMUnavailable("missing" if exc.status_code == 404 else "broken") from exc
        except _RESETS as exc:
            if started or delay is None:
                log.warning("ollama stream broke at %s: %r", llm.base_url, exc)
                raise LLMUnavailable("broken" if started else "unreachable") from exc
            log.info("ollama reset the connection (attempt %d); retrying", attempt + 1)
            time.sleep(delay)
        except (ConnectionError, httpx.HTTPError, OSError) as exc:
            log.warning("ollama unavailable at %s: %r", llm.base_url, exc)
            raise LLMUnavailable("broken" if started else "unreachable") from exc


class OllamaPool:
    """The configured Ollama servers: each request starts at the next server in turn (so
    replicas share the load), and one that cannot be reached is skipped for the next."""

    def __init__(self, settings: Settings, llm: Ollama | None = None) -> None:
        self.llms = [llm] if llm else [make_llm(settings, host) for host in hosts(settings)]
        self._turn = itertools.count()

    def stream_chat(self, messages: list[dict[str, str]]) -> Iterator[str]:
        start = next(self._turn)
        for i in range(len(self.llms)):
            llm = self.llms[(start + i) % len(self.llms)]
            try:
                yield from stream_chat(llm, messages)
                return
            except LLMUnavailable as exc:
                if exc.reason != "unreachable" or i == len(self.llms) - 1:
                    raise
                log.warning("ollama at %s unreachable; trying the next server", llm.base_url)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """A whole (short) answer at once, with the same errors as stream_chat."""
        return "".join(self.stream_chat(messages))


def ollama_health(settings: Settings, timeout: float = 3.0) -> dict[str, Any]:
    """Each server's version and whether it has the model; the first reachable one
    speaks for all in the top-level fields. Never raises."""
    servers = [_server_health(host, settings.llm_model, timeout) for host in hosts(settings)]
    first = next((s for s in servers if s["reachable"]), servers[0])
    return {**first, "host": settings.ollama_host, "servers": servers}


def _server_health(host: str, wanted: str, timeout: float) -> dict[str, Any]:
    health: dict[str, Any] = {
        "host": host,
        "model": wanted,
        "reachable": False,
        "version": None,
        "model_present": False,
    }
    try:
        with httpx.Client(base_url=host, timeout=timeout, trust_env=False) as c:
            health["version"] = c.get("/api/version").raise_for_status().json().get("version")
            health["reachable"] = True
            models = c.get("/api/tags").raise_for_status().json().get("models", [])
    except (httpx.HTTPError, ValueError) as exc:
        reason = exc.__class__.__name__
        health["error"] = f"Ollama at {host} is unreachable ({reason})"
        return health
    names = {m.get("name") for m in models} | {m.get("model") for m in models}
    health["model_present"] = wanted in names or (":" not in wanted and f"{wanted}:latest" in names)
    if not health["model_present"]:
        health["error"] = f"model {wanted} is missing; run `ollama pull {wanted}`"
    return health
