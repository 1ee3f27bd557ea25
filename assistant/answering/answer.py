"""Answering: retrieve, prompt, stream from the model server through llama-index, check
citations.

`Answerer.stream` yields typed events (`AnswerEvent`): `PassagesFound` once, `TextDelta`
while the model writes, `AnswerDone` last. An `Answer`'s `mode` (a `Mode`) says how it
came about. When the model server is unreachable, lacks the model, refuses the key or the
stream breaks, the asker still gets the best passages and one plain sentence saying no
model wrote the answer. A model that marks no citation still answers; its passages are
shown as the ones it was given (`citations_marked` false), and its reasoning
(`<think>` blocks) is neither streamed nor kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from assistant.answering.conversation import (
    Turn,
    bounded,
    clean_question,
    condense_messages,
    fallback_question,
    needs_context,
    search_text,
)
from assistant.answering.llm import LLMPool, urls
from assistant.answering.prompt import build_messages, check_citations, declined, visible_so_far
from assistant.errors import LLMUnavailable
from assistant.retrieval import Passage, Searcher, language_of
from assistant.settings import Settings


class Mode(StrEnum):
    """How an answer came about. A StrEnum: JSON and the stored conversations hold the
    value ("generated"...), and a value read back from them compares equal to the member."""

    GENERATED = "generated"  # the model wrote it; its citations were checked
    SOURCES_ONLY = "sources-only"  # no model: the best passages and one sentence saying why
    NOT_FOUND = "not-found"  # nothing the asker may read is relevant enough
    ERROR = "error"  # the page's own: no answer, an error sentence (never from Answerer)


_SERVER = {  # the model server, as the sentences name it
    "ollama": {"en": "the Ollama server", "ja": " Ollama サーバー"},
    "openai": {"en": "the model server", "ja": "モデルサーバー"},
}
_MESSAGES = {
    "unreachable": {
        "en": "No language model is available because {server} at {host} "
        "could not be reached, so here are the most relevant passages from your documents.",
        "ja": "{host} の{server}に接続できず言語モデルを利用できないため、"
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
    "missing-openai": {
        "en": "No language model is available because the model server at {host} does not "
        "serve the model {model} (load it there, or set TAIMATSU_LLM_MODEL to a model it "
        "serves), so here are the most relevant passages from your documents.",
        "ja": "{host} のモデルサーバーがモデル {model} を提供していないため"
        "（サーバーでそのモデルを読み込むか、TAIMATSU_LLM_MODEL を提供中のモデルにしてください）、"
        "文書の中から関連性の高い箇所を示します。",
    },
    "unauthorized": {
        "en": "No language model is available because {server} at {host} refused the API "
        "key (set TAIMATSU_LLM_API_KEY or TAIMATSU_LLM_API_KEY_FILE to the key it expects), "
        "so here are the most relevant passages from your documents.",
        "ja": "{host} の{server}が API キーを拒否したため（TAIMATSU_LLM_API_KEY または "
        "TAIMATSU_LLM_API_KEY_FILE に正しいキーを設定してください）、"
        "文書の中から関連性の高い箇所を示します。",
    },
    "endpoint": {
        "en": "No language model is available because {host} serves no OpenAI API (the URL "
        "must end in /v1), so here are the most relevant passages from your documents.",
        "ja": "{host} で OpenAI API が提供されていないため（URL は /v1 で終わる必要があります）、"
        "文書の中から関連性の高い箇所を示します。",
    },
    "key-file": {
        "en": "No language model is available because the API key file {key_file} cannot be "
        "read (set TAIMATSU_LLM_API_KEY_FILE to a readable file), so here are the most "
        "relevant passages from your documents.",
        "ja": "API キーのファイル {key_file} を読み込めないため"
        "（TAIMATSU_LLM_API_KEY_FILE に読み込めるファイルを指定してください）、"
        "文書の中から関連性の高い箇所を示します。",
    },
    "slow": {
        "en": "No language model answered because {server} at {host} took longer than "
        "{timeout:g} seconds (raise TAIMATSU_LLM_REQUEST_TIMEOUT on slow machines), so here "
        "are the most relevant passages from your documents.",
        "ja": "{host} の{server}が {timeout:g} 秒以内に応答しなかったため"
        "（遅いマシンでは TAIMATSU_LLM_REQUEST_TIMEOUT を大きくしてください）、"
        "文書の中から関連性の高い箇所を示します。",
    },
    "broken": {
        "en": "The language model stopped before finishing its answer, so here are the "
        "most relevant passages from your documents.",
        "ja": "言語モデルが回答の途中で停止したため、文書の中から関連性の高い箇所を示します。",
    },
    Mode.NOT_FOUND: {
        "en": "I found nothing about this in the documents you can read.",
        "ja": "閲覧できる文書の中に、この質問に関する情報は見つかりませんでした。",
    },
}


@dataclass
class Answer:
    question: str
    answer: str
    mode: Mode
    model: str
    passages: list[Passage]
    cited: list[int] = field(default_factory=list)
    dropped_citations: int = 0
    standalone_question: str | None = None  # what was searched, when history rewrote it
    citations_marked: bool = True  # False: the passages given, the text cites none of them

    @property
    def citations(self) -> list[tuple[int, Passage]]:
        return [(n, self.passages[n - 1]) for n in self.cited]

    def as_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "mode": str(self.mode),
            "model": self.model,
            "citations": [
                {
                    "n": n,
                    "source": p.source,
                    "page": p.page,
                    "section": p.section,
                    "text": p.text,
                    **({"url": p.url} if p.url else {}),
                }
                for n, p in self.citations
            ],
            "dropped_citations": self.dropped_citations,
            "standalone_question": self.standalone_question,
            "citations_marked": self.citations_marked,
        }


@dataclass(frozen=True)
class PassagesFound:
    """The passages retrieved for the question, before the model writes."""

    passages: list[Passage]


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer as the model writes it (not yet citation-checked)."""

    text: str


@dataclass(frozen=True)
class AnswerDone:
    """The finished answer, with the checked text; always the last event."""

    answer: Answer


AnswerEvent = PassagesFound | TextDelta | AnswerDone


class Answerer:
    def __init__(self, settings: Settings, searcher: Searcher, llm: LLMPool | None = None) -> None:
        self.settings = settings
        self.searcher = searcher
        self.llm = llm or LLMPool(settings)

    def _message(self, reason: str, question: str) -> str:
        language = language_of(question)
        backend = self.settings.llm_backend
        if reason == "missing" and backend == "openai":
            reason = "missing-openai"
        return _MESSAGES[reason][language].format(
            server=_SERVER[backend][language],
            host=", ".join(urls(self.settings)),
            model=self.settings.llm_model,
            timeout=self.settings.llm_request_timeout,
            key_file=self.settings.llm_api_key_file,
        )

    def answerable(self, question: str, passages: list[Passage]) -> bool:
        """Whether any passage is relevant enough to let the model answer: by meaning
        (dense similarity; for Japanese only with a multilingual model — the packaged one
        places Japanese poorly) or by the question's own terms (keyword coverage).
        `question` is the one asked, whose language decides, not a rewrite that may carry
        an earlier question's words."""
        settings = self.settings
        by_terms = any(p.coverage >= settings.min_keyword_coverage for p in passages)
        placed = language_of(question) != "ja" or self.searcher.embedder.stamp.multilingual
        by_meaning = placed and any(p.similarity >= settings.min_similarity for p in passages)
        return by_terms or by_meaning

    def standalone(self, question: str, history: list[Turn]) -> str:
        """The question rewritten to stand alone, given the (bounded) earlier turns. A
        question that needs no context (`needs_context`) is searched as itself, and the
        model is not asked to rewrite it."""
        history = bounded(history, self.settings.llm_context_window)
        if not history or not needs_context(question):
            return search_text(question)
        try:
            text = self.llm.complete(condense_messages(history, question))
        except LLMUnavailable:
            return fallback_question(history, question)
        return clean_question(text, question) or fallback_question(history, question)

    def stream(
        self, question: str, groups: list[str], history: list[Turn] | None = None
    ) -> Iterator[AnswerEvent]:
        """PassagesFound once, then TextDelta* while the model writes, then AnswerDone
        once, with the checked text."""
        search_for = self.standalone(question, history or [])
        passages = self.searcher.search(search_for, groups)
        yield PassagesFound(passages)
        model = self.settings.llm_model

        def answer(
            text: str, mode: Mode, cited: list[int], dropped: int = 0, marked: bool = False
        ) -> AnswerDone:
            shown = passages if cited else []
            rewritten = search_for if search_for != question else None
            return AnswerDone(
                Answer(question, text, mode, model, shown, cited, dropped, rewritten, marked)
            )

        if not self.answerable(question, passages):
            yield answer(self._message(Mode.NOT_FOUND, question), Mode.NOT_FOUND, [])
            return
        raw, shown = "", ""
        every = list(range(1, len(passages) + 1))
        try:
            messages = build_messages(search_for, passages, original=question)
            for delta in self.llm.stream_chat(messages):
                raw += delta
                visible = visible_so_far(raw)  # no <think> reasoning on the page
                if len(visible) > len(shown) and visible.startswith(shown):
                    yield TextDelta(visible[len(shown) :])
                    shown = visible
        except LLMUnavailable as exc:
            yield answer(self._message(exc.reason, question), Mode.SOURCES_ONLY, every)
            return
        checked = check_citations(raw, len(passages))
        if declined(checked):  # the model read the passages and found no answer in them
            yield answer(self._message(Mode.NOT_FOUND, question), Mode.NOT_FOUND, [])
        elif checked.marked:
            yield answer(checked.text, Mode.GENERATED, checked.cited, checked.dropped, True)
        else:  # no usable marker: the passages it was given, said to be uncited
            yield answer(checked.text, Mode.GENERATED, every, checked.dropped)

    def ask(self, question: str, groups: list[str], history: list[Turn] | None = None) -> Answer:
        for event in self.stream(question, groups, history):
            if isinstance(event, AnswerDone):
                return event.answer
        raise AssertionError("stream() always ends with an answer")
