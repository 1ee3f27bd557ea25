"""Talking to Ollama through llama-index: the model, streaming with retries, health.

Errors are mapped to a reason the page can say in one sentence: "unreachable" (nothing
listens), "missing" (the model is not pulled; say which `ollama pull` to run), "broken"
(the stream died after it started). A connection reset before the first token is
retried with backoff; a refused connection is not (it means no server, and the asker
should get the passages at once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
from llama_index.core.llms import ChatMessage
from llama_index.llms.ollama import Ollama

from assistant.settings import Settings

log = logging.getLogger(__name__)
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before the 2nd, 3rd and 4th attempt
_RESETS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, ConnectionResetError)


class LLMUnavailable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # a key of _MESSAGES


def make_llm(settings: Settings) -> Ollama:
    return Ollama(
        model=settings.llm_model,
        base_url=settings.ollama_host,
        context_window=settings.llm_context_window,  # explicit: -1 asks the server
        request_timeout=settings.llm_request_timeout,
        keep_alive=settings.llm_keep_alive,
        temperature=settings.llm_temperature,
    )


def stream_chat(llm: Ollama, settings: Settings, messages: list[dict[str, str]]) -> Iterator[str]:
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
                log.warning("ollama stream broke at %s: %r", settings.ollama_host, exc)
                raise LLMUnavailable("broken" if started else "unreachable") from exc
            log.info("ollama reset the connection (attempt %d); retrying", attempt + 1)
            time.sleep(delay)
        except (ConnectionError, httpx.HTTPError, OSError) as exc:
            log.warning("ollama unavailable at %s: %r", settings.ollama_host, exc)
            raise LLMUnavailable("broken" if started else "unreachable") from exc


def complete(llm: Ollama, settings: Settings, messages: list[dict[str, str]]) -> str:
    """A whole (short) answer at once, with the same errors as stream_chat."""
    return "".join(stream_chat(llm, settings, messages))


def ollama_health(settings: Settings, timeout: float = 3.0) -> dict[str, Any]:
    """Server version and whether the configured model is present, without raising."""
    health: dict[str, Any] = {
        "host": settings.ollama_host,
        "model": settings.llm_model,
        "reachable": False,
        "version": None,
        "model_present": False,
    }
    try:
        with httpx.Client(base_url=settings.ollama_host, timeout=timeout, trust_env=False) as c:
            health["version"] = c.get("/api/version").raise_for_status().json().get("version")
            health["reachable"] = True
            models = c.get("/api/tags").raise_for_status().json().get("models", [])
    except (httpx.HTTPError, ValueError) as exc:
        reason = exc.__class__.__name__
        health["error"] = f"Ollama at {settings.ollama_host} is unreachable ({reason})"
        return health
    names = {m.get("name") for m in models} | {m.get("model") for m in models}
    wanted = settings.llm_model
    health["model_present"] = wanted in names or (":" not in wanted and f"{wanted}:latest" in names)
    if not health["model_present"]:
        health["error"] = f"model {wanted} is missing; run `ollama pull {wanted}`"
    return health
