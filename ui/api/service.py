"""What the API's routes and MCP tools do, once: search and answer for a user, under the
page's rules, and write each question to the audit log.

The answers come from the page's own code: one `Answerer` (retrieval, the follow-up
rewrite from earlier turns, the model, the citation check, the sources-only fallback),
asked with the user's groups, and the citations carry what the page shows of them
(source, page, section, text) plus the path of the original file, for those the user
may read now (`readable_file`, as the page's download button). A document's id in that
path is a digest of its source folder (the folder's path on the server is not shown)
and its source, base64url-encoded: it opens nothing by itself, since the file is served
only after the same check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assistant.answering import Answer, AnswerDone, Answerer, AnswerEvent, Mode, Turn
from assistant.audit import AuditLog
from assistant.embedder import TextEmbedder
from assistant.errors import QuestionTooLong, StoreBusy, StoreError, TaimatsuError
from assistant.retrieval import Passage, Searcher, language_of, readable_file
from assistant.settings import Settings
from assistant.tokens import TokenStore
from ui.api.errors import ApiError
from ui.api.identity import Authenticator
from ui.identity import User

log = logging.getLogger("taimatsu.api")
MODEL_ID = "taimatsu"
BUSY_RETRY_SECONDS = 5
ROOT_DIGEST = 16  # hex digits of sha256(root) in a document id


class LockedEmbedder:
    """An embedder used by one thread at a time: the API answers many requests at once
    from a thread pool, and a tokenizer is not safe to share between threads."""

    def __init__(self, inner: TextEmbedder) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> Any:
        with self._lock:
            return self.inner.embed(texts)

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            return self.inner.embed_query(text)

    def count_tokens(self, text: str) -> int:  # the tokenizer: an upload's chunking
        with self._lock:
            return self.inner.count_tokens(text)


def root_digest(root: str) -> str:
    return hashlib.sha256(root.encode()).hexdigest()[:ROOT_DIGEST]


def document_id(root: str, source: str) -> str:
    """`<digest of the root>.<source, base64url>`: stable, and without the server's path."""
    encoded = base64.urlsafe_b64encode(source.encode()).decode().rstrip("=")
    return f"{root_digest(root)}.{encoded}"


def parse_document_id(doc_id: str) -> tuple[str, str] | None:
    """(the root's digest, the source), or None for an id that is not one."""
    digest, dot, encoded = doc_id.partition(".")
    if not dot or len(digest) != ROOT_DIGEST or not encoded:
        return None
    try:
        source = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (digest, source) if source else None


def download_path(doc_id: str) -> str:
    return f"/api/documents/{doc_id}/original"


class Service:
    def __init__(self, settings: Settings, embedder: TextEmbedder | None = None) -> None:
        self.settings = settings
        self.searcher = Searcher(settings, embedder)  # None: the configured model, as the CLI
        if settings.embed_backend == "local":  # a served model takes concurrent requests
            self.searcher.embedder = LockedEmbedder(self.searcher.embedder)
        self.embedder = self.searcher.embedder
        self.answerer = Answerer(settings, self.searcher)
        self.tokens = TokenStore(settings)
        self.audit = AuditLog(settings)
        self.auth = Authenticator(settings, self.tokens)

    # -- questions ------------------------------------------------------------------------

    def question(self, text: str, what: str = "question") -> str:
        """The question as asked, or ApiError 400: blank, or longer than the limit."""
        text = text.strip()
        if not text:
            raise ApiError(400, f"The {what} is empty; send some text.", "empty_question")
        limit = self.settings.max_question_chars
        if len(text) > limit:
            error = QuestionTooLong(len(text), limit, language_of(text) == "ja")
            raise ApiError(400, str(error), "question_too_long")
        return text

    def _audit_error(self, channel: str, user: User, question: str, started: float) -> None:
        """A question that got no answer, as the page logs one (mode "error")."""
        body = {"question": question, "mode": str(Mode.ERROR), "citations": []}
        latency = (time.monotonic() - started) * 1000
        self.audit.record_answer(channel, user.id, user.groups, body, latency)

    def refused(self, exc: TaimatsuError) -> ApiError:
        """A question that got no answer, in one sentence (the index's own message is
        for the operator's log, as on the page)."""
        match exc:
            case QuestionTooLong():
                return ApiError(400, str(exc), "question_too_long")
            case StoreBusy():
                log.warning("index busy while answering", exc_info=exc)
                return ApiError(
                    503,
                    "The index is busy (an ingestion run is writing to it); try again shortly.",
                    "index_busy",
                    {"Retry-After": str(BUSY_RETRY_SECONDS)},
                )
            case StoreError() if not self.searcher.index.exists():
                return ApiError(
                    503,
                    "There is no index yet; an administrator must run `taimatsu ingest FOLDER`.",
                    "no_index",
                )
            case _:
                log.error("error while answering", exc_info=exc)
                return ApiError(
                    503, "The index could not be read; the server log has the details.", "error"
                )

    def search(self, user: User, query: str, k: int, channel: str) -> list[dict[str, Any]]:
        query = self.question(query, "query")
        started = time.monotonic()
        try:
            hits = self.searcher.search(query, list(user.groups), k)
        except TaimatsuError as exc:
            raise self.refused(exc) from None
        self.audit.record(
            channel=channel,
            user=user.id,
            groups=user.groups,
            question=query,
            mode="search",
            shown=[h.source for h in hits],
            cited=[],
            latency_ms=(time.monotonic() - started) * 1000,
        )
        return [self.hit_json(user, hit) for hit in hits]

    def events(
        self, user: User, question: str, history: list[Turn], channel: str
    ) -> Iterator[AnswerEvent]:
        """The Answerer's events for `user`, and the audit line once it is done. An error
        before the answer (the index) is raised as ApiError."""
        started = time.monotonic()
        try:
            question = self.question(question)
        except ApiError as exc:
            if exc.code == "question_too_long":  # asked, and refused: logged as the page does
                self._audit_error(channel, user, question.strip()[:200], started)
            raise
        stream = self.answerer.stream(question, list(user.groups), history)
        answered = False
        try:
            for event in stream:
                if isinstance(event, AnswerDone):
                    answered = True
                    self.record(channel, user, event.answer, started)
                yield event
        except TaimatsuError as exc:
            raise self.refused(exc) from None
        finally:
            if not answered:  # refused by the index, or the client left mid-stream
                self._audit_error(channel, user, question, started)

    def ask(self, user: User, question: str, history: list[Turn], channel: str) -> Answer:
        for event in self.events(user, question, history, channel):
            if isinstance(event, AnswerDone):
                return event.answer
        raise AssertionError("the Answerer always ends with an answer")

    def record(self, channel: str, user: User, answer: Answer, started: float) -> None:
        """The audit line of an answer, as the page writes it: the documents shown (its
        citations) and those the model cited."""
        latency = (time.monotonic() - started) * 1000
        self.audit.record_answer(channel, user.id, user.groups, answer.as_json(), latency)

    # -- what a client sees -----------------------------------------------------------

    def download(self, user: User, passage: Passage) -> str | None:
        path = readable_file(self.searcher, passage.root, passage.source, list(user.groups))
        return download_path(document_id(passage.root, passage.source)) if path else None

    def hit_json(self, user: User, hit: Passage) -> dict[str, Any]:
        return {**hit.as_hit_json(), "download": self.download(user, hit)}

    def citations(self, user: User, answer: Answer) -> list[dict[str, Any]]:
        """The answer's citations as `Answer.as_json` gives them, each with its download."""
        return self.answer_json(user, answer)["citations"]

    def answer_json(self, user: User, answer: Answer) -> dict[str, Any]:
        body = answer.as_json()
        for citation, (_, passage) in zip(body["citations"], answer.citations, strict=True):
            citation["download"] = self.download(user, passage)
        return body

    def original(self, user: User, doc_id: str) -> Path:
        """The file behind a document id, if `user` may read it; else the one 404 that a
        document that does not exist gets too."""
        place = parse_document_id(doc_id)
        path = None
        if place is not None:
            digest, source = place
            try:
                roots = [r for r in self.searcher.index.roots() if root_digest(r) == digest]
                if roots:
                    path = readable_file(self.searcher, roots[0], source, list(user.groups))
            except TaimatsuError as exc:
                raise self.refused(exc) from None
        if path is None:
            raise ApiError(404, "There is no document with this id that you may read.", "not_found")
        return path
