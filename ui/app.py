"""The Streamlit page: ask in English or Japanese, read a streamed, cited answer.

Document text and model output are shown as text (markdown characters escaped, no HTML),
errors as one sentence; details go to the server log only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import streamlit as st

from assistant.answer import SOURCES_ONLY, Answer, Answerer
from assistant.conversation import Turn
from assistant.embedder import Embedder
from assistant.index import StoreBusy, StoreError
from assistant.prompt import language_of
from assistant.retrieval import Passage, Searcher
from assistant.settings import Settings

log = logging.getLogger("taimatsu.ui")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")

ERRORS = {
    "busy": "The document index is being updated; please ask again in a moment.",
    "no-index": "No documents have been indexed yet; ask your administrator to run ingestion.",
    "other": "Something went wrong while answering; please try again, and tell your "
    "administrator if it keeps happening.",
}


def plain(text: str) -> str:
    """Text for st.markdown that renders literally: no links, HTML, emphasis or math."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


@st.cache_resource(show_spinner=False)
def _embedder(model_dir: str | None, batch_size: int) -> Embedder:
    return Embedder(Path(model_dir) if model_dir else None, batch_size)


@st.cache_resource(show_spinner=False)
def _answerer(settings_json: str) -> Answerer:
    settings = Settings.model_validate_json(settings_json)
    model_dir = str(settings.embed_model_dir) if settings.embed_model_dir else None
    searcher = Searcher(settings, _embedder(model_dir, settings.embed_batch_size))
    return Answerer(settings, searcher)


def show_citations(answer: Answer) -> None:
    if answer.mode == SOURCES_ONLY:
        st.warning(plain(answer.answer), icon="⚠️")
    for n, passage in answer.citations:
        show_passage(n, passage)


def show_passage(n: int, passage: Passage) -> None:
    with st.expander(plain(f"[{n}] {passage.where}")):
        st.markdown(plain(passage.text))


def show_turn(turn: dict) -> None:
    with st.chat_message(turn["role"]):
        if turn["role"] == "user":
            st.markdown(plain(turn["content"]))
            return
        answer: Answer | None = turn.get("answer")
        if answer is None:
            st.error(turn["content"])
            return
        if answer.mode != SOURCES_ONLY:
            st.markdown(plain(answer.answer))
        show_citations(answer)


def past_turns(history: list[dict]) -> list[Turn]:
    """The conversation so far as question/answer pairs (answered turns only)."""
    turns = []
    for asked, answered in zip(history[::2], history[1::2], strict=False):
        if answered.get("answer") is not None:
            turns.append(Turn(asked["content"], answered["answer"].answer))
    return turns


def answer_question(
    answerer: Answerer, question: str, groups: list[str], history: list[Turn]
) -> dict:
    """Stream one answer into the page; return the turn to keep in the history."""
    with st.chat_message("assistant"):
        placeholder = st.empty()
        searching = "文書を検索しています…" if language_of(question) == "ja" else "Searching…"
        placeholder.caption(searching)
        written = ""
        try:
            for kind, payload in answerer.stream(question, groups, history):
                if kind == "delta":
                    written += payload
                    placeholder.markdown(plain(written) + " ▌")
                elif kind == "answer":
                    answer: Answer = payload
        except StoreBusy:
            log.warning("index busy while answering", exc_info=True)
            return _error(placeholder, "busy")
        except StoreError:
            log.exception("index error while answering")
            missing = not answerer.searcher.index.exists()
            return _error(placeholder, "no-index" if missing else "other")
        except Exception:
            log.exception("unexpected error while answering")
            return _error(placeholder, "other")
        if answer.mode == SOURCES_ONLY:
            placeholder.empty()
        else:
            placeholder.markdown(plain(answer.answer))
        if answer.standalone_question:
            st.caption(plain(f"🔎 {answer.standalone_question}"))
        show_citations(answer)
    return {"role": "assistant", "content": answer.answer, "answer": answer}


def _error(placeholder, key: str) -> dict:  # noqa: ANN001 - a Streamlit element
    placeholder.error(ERRORS[key])
    return {"role": "assistant", "content": ERRORS[key]}


def main() -> None:
    st.set_page_config(page_title="Taimatsu", page_icon="🔥", layout="centered")
    settings = Settings()
    groups = list(settings.default_groups)  # single-user mode; sign-in comes later
    st.title("Taimatsu 松明")
    st.caption(
        "Answers from your organization's documents, with sources. "
        "社内文書から出典付きで回答します。"
    )
    with st.sidebar:
        if st.button("New chat", icon="➕", use_container_width=True):
            st.session_state.history = []
    history: list[dict] = st.session_state.setdefault("history", [])
    for turn in history:
        show_turn(turn)
    question = st.chat_input("Ask a question / 質問を入力してください")
    if question and question.strip():
        earlier = past_turns(history)
        turn = {"role": "user", "content": question}
        history.append(turn)
        show_turn(turn)
        answerer = _answerer(settings.model_dump_json())
        history.append(answer_question(answerer, question, groups, earlier))


main()
