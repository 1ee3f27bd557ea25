"""Answering: retrieve, prompt, stream from Ollama through llama-index, check citations.

When Ollama is unreachable, the model is missing or the stream breaks, the asker still
gets the best passages and one plain sentence saying no model wrote the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama
from llama_index.core.llms import ChatMessage
from llama_index.llms.ollama import Ollama

from assistant.prompt import build_messages, check_citations, language_of
from assistant.retrieval import Passage, Searcher
from assistant.settings import Settings

log = logging.getLogger(__name__)

GENERATED = "generated"
SOURCES_ONLY = "sources-only"
NOT_FOUND = "not-found"

_MESSAGES = {
    "unreachable": {
        "en": "No language model is available because the Ollama server at {host} "
        "could not be reached, so here are the most relevant passages from your documents.",
        "ja": "{host} の Ollama サーバーに接続できず言語モデルを利用できないため、"
        "文書の中から関連性の高い箇所を示します。",
    },
    "missing": {
        "en": "No language model is available because the model {model} is not installed "
        "on the Ollama server (run `ollama pull {model}` there), so here are the most "
        "relevant passages from your documents.",
        "ja": "Ollama サーバーにモデル {model} がインストールされていないため"
        "（サーバーで `ollama pull {model}` を実行してください）、"
        "文書の中から関連性の高い箇所を示します。",
    },
    "broken": {
        "en": "The language model stopped before finishing its answer, so here are the "
        "most relevant passages from your documents.",
        "ja": "言語モデルが回答の途中で停止したため、文書の中から関連性の高い箇所を示します。",
    },
    "not-found": {
        "en": "I found nothing about this in the documents you can read.",
        "ja": "閲覧できる文書の中に、この質問に関する情報は見つかりませんでした。",
    },
}


@dataclass
class Answer:
    question: str
    answer: str
    mode: str
    model: str
    passages: list[Passage]
    cited: list[int] = field(default_factory=list)
    dropped_citations: int = 0

    @property
    def citations(self) -> list[tuple[int, Passage]]:
        return [(n, self.passages[n - 1]) for n in self.cited]

    def as_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "mode": self.mode,
            "model": self.model,
            "citations": [
                {
                    "n": n,
                    "source": p.source,
                    "page": p.page,
                    "section": p.section,
                    "text": p.text,
                }
                for n, p in self.citations
            ],
            "dropped_citations": self.dropped_citations,
        }


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


class Answerer:
    def __init__(self, settings: Settings, searcher: Searcher, llm: Ollama | None = None) -> None:
        self.settings = settings
        self.searcher = searcher
        self.llm = llm or make_llm(settings)

    def _message(self, reason: str, question: str) -> str:
        template = _MESSAGES[reason][language_of(question)]
        return template.format(host=self.settings.ollama_host, model=self.settings.llm_model)

    def answerable(self, question: str, passages: list[Passage]) -> bool:
        """Whether any passage is relevant enough to let the model answer: by meaning
        (dense similarity; not for Japanese, which the packaged model places poorly) or
        by the question's own terms (keyword coverage)."""
        settings = self.settings
        by_terms = any(p.coverage >= settings.min_keyword_coverage for p in passages)
        by_meaning = language_of(question) != "ja" and any(
            p.similarity >= settings.min_similarity for p in passages
        )
        return by_terms or by_meaning

    def stream(self, question: str, groups: list[str]) -> Iterator[tuple[str, Any]]:
        """Events: ("passages", list[Passage]), then ("delta", str)* while the model
        writes, then ("answer", Answer) once, with the checked text."""
        passages = self.searcher.search(question, groups)
        yield "passages", passages
        model = self.settings.llm_model
        if not self.answerable(question, passages):
            answer = Answer(question, self._message(NOT_FOUND, question), NOT_FOUND, model, [])
            yield "answer", answer
            return
        parts: list[str] = []
        try:
            for delta in self._generate(question, passages):
                parts.append(delta)
                yield "delta", delta
        except LLMUnavailable as exc:
            numbers = list(range(1, len(passages) + 1))
            yield (
                "answer",
                Answer(
                    question,
                    self._message(exc.reason, question),
                    SOURCES_ONLY,
                    model,
                    passages,
                    numbers,
                ),
            )
            return
        checked = check_citations("".join(parts), len(passages))
        yield (
            "answer",
            Answer(
                question, checked.text, GENERATED, model, passages, checked.cited, checked.dropped
            ),
        )

    def ask(self, question: str, groups: list[str]) -> Answer:
        for kind, payload in self.stream(question, groups):
            if kind == "answer":
                return payload
        raise AssertionError("stream() always ends with an answer")

    def _generate(self, question: str, passages: list[Passage]) -> Iterator[str]:
        messages = [ChatMessage(**m) for m in build_messages(question, passages)]
        started = False
        try:
            for response in self.llm.stream_chat(messages):
                started = True
                if response.delta:
                    yield response.delta
        except ollama.ResponseError as exc:
            log.warning("ollama error %s: %s", exc.status_code, exc.error)
            raise LLMUnavailable("missing" if exc.status_code == 404 else "broken") from exc
        except (ConnectionError, httpx.HTTPError, OSError) as exc:
            log.warning("ollama unavailable at %s: %r", self.settings.ollama_host, exc)
            raise LLMUnavailable("broken" if started else "unreachable") from exc


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
