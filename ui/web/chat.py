"""The chat page: ask, read a streamed answer with numbered sources, open the originals,
rate the answer; conversations are kept per user.

A turn is kept as a plain record (the answer's JSON plus where each source lies), so a
live answer and one reopened from the history render the same way. Document text and
model output are shown literally (markdown escaped, never HTML).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import streamlit as st

from assistant.answering import Answer, AnswerDone, Answerer, History, Mode, TextDelta, Turn
from assistant.errors import QuestionTooLong, StoreBusy, StoreError, TaimatsuError
from assistant.retrieval import Passage, readable_file
from ui.web.auth import User
from ui.web.i18n import t

log = logging.getLogger("taimatsu.ui")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain(text: str) -> str:
    """Text for st.markdown that renders literally: no links, HTML, emphasis or math."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


def record(answer: Answer) -> dict[str, Any]:
    body = answer.as_json()
    for citation, (_, passage) in zip(body["citations"], answer.citations, strict=True):
        citation["root"] = passage.root
    return body


# -- showing a turn --------------------------------------------------------------------


def show_citation(answerer: Answerer, user: User, key: str, citation: dict[str, Any]) -> None:
    where = Passage.where_of(citation["source"], citation.get("page"), citation.get("section"))
    with st.expander(plain(f"[{citation['n']}] {where}")):
        st.markdown(f":orange-background[{plain(citation['text'])}]")
        path = readable_file(
            answerer.searcher, citation.get("root", ""), citation["source"], list(user.groups)
        )
        if path is None:
            st.caption(t("file_gone"))
            return
        st.download_button(
            t("download"),
            data=path.read_bytes,
            file_name=path.name,
            key=f"download-{key}-{citation['n']}",
            on_click="ignore",
            icon="📄",
        )


def show_answer(answerer: Answerer, user: User, key: str, body: dict[str, Any]) -> None:
    if body["mode"] == Mode.SOURCES_ONLY:
        st.warning(plain(body["answer"]), icon="⚠️")
    else:
        st.markdown(plain(body["answer"]))
    if body.get("standalone_question"):
        st.caption(plain(f"🔎 {t('searched_for')}: {body['standalone_question']}"))
    for citation in body["citations"]:
        show_citation(answerer, user, key, citation)


def show_tools(user: User, history: History, key: str, body: dict[str, Any], last: bool) -> None:
    """Copy, rate (with a comment) and, for the last answer, regenerate."""
    if body["mode"] != Mode.GENERATED:
        return
    copy, rate, again = st.columns([3, 3, 2])
    with copy.popover(t("copy"), icon="📋"):
        st.code(body["answer"], language=None, wrap_lines=True)
    with rate:
        rating = st.feedback("thumbs", key=f"rating-{key}")
        if rating is not None and not st.session_state.get(f"rated-{key}"):
            comment = st.text_input(t("feedback_comment"), key=f"comment-{key}")
            if st.button(t("feedback_send"), key=f"send-{key}"):
                history.add_feedback(user.id, 1 if rating == 1 else -1, comment, body)
                st.session_state[f"rated-{key}"] = True
                st.toast(t("feedback_thanks"))
    if last and again.button(t("regenerate"), icon="🔄", key=f"again-{key}"):
        st.session_state.regenerate = True
        st.rerun()


# -- answering ---------------------------------------------------------------------------


def answer_live(answerer: Answerer, user: User, question: str, earlier: list[Turn]) -> dict:
    """Stream one answer into the page; return its record (or an error record)."""
    placeholder = st.empty()
    placeholder.caption(t("searching"))
    written = ""
    try:
        for event in answerer.stream(question, list(user.groups), earlier):
            if isinstance(event, TextDelta):
                written += event.text
                placeholder.markdown(plain(written) + " ▌")
            elif isinstance(event, AnswerDone):
                answer: Answer = event.answer
    except TaimatsuError as exc:
        return _refused(answerer, placeholder, question, exc)
    except Exception:
        log.exception("unexpected error while answering")
        return _error(placeholder, question, "other")
    placeholder.empty()
    return record(answer)


def _refused(answerer: Answerer, placeholder: Any, question: str, exc: TaimatsuError) -> dict:
    """The error record of a question that got no answer: the asker's own problem in its
    sentence; the index's in the page's words (its message is for the operator's log)."""
    match exc:
        case QuestionTooLong():
            placeholder.warning(str(exc))
            return {
                "question": question[:200],
                "answer": str(exc),
                "mode": Mode.ERROR,
                "citations": [],
            }
        case StoreBusy():
            log.warning("index busy while answering", exc_info=exc)
            return _error(placeholder, question, "busy")
        case StoreError():
            log.error("index error while answering", exc_info=exc)
            missing = not answerer.searcher.index.exists()
            return _error(placeholder, question, "no-index" if missing else "other")
        case _:
            log.error("error while answering", exc_info=exc)
            return _error(placeholder, question, "other")


def _error(placeholder: Any, question: str, key: str) -> dict:
    placeholder.error(t(key))
    return {"question": question, "answer": t(key), "mode": Mode.ERROR, "citations": []}


def render(answerer: Answerer, history: History, user: User) -> None:
    state = st.session_state
    turns: list[dict] = state.setdefault("turns", [])
    for i, turn in enumerate(turns):
        with st.chat_message("user"):
            st.markdown(plain(turn["question"]))
        with st.chat_message("assistant"):
            if turn["answer"]["mode"] == Mode.ERROR:
                st.error(turn["answer"]["answer"])
                continue
            show_answer(answerer, user, f"{state.get('conversation')}-{i}", turn["answer"])
            show_tools(
                user,
                history,
                f"{state.get('conversation')}-{i}",
                turn["answer"],
                last=i == len(turns) - 1,
            )

    question = st.chat_input(t("ask"))
    if state.pop("regenerate", False) and turns:
        question = turns.pop()["question"]
    if not (question and question.strip()):
        return
    earlier = [
        Turn(x["question"], x["answer"]["answer"])
        for x in turns
        if x["answer"]["mode"] != Mode.ERROR
    ]
    with st.chat_message("user"):
        st.markdown(plain(question))
    with st.chat_message("assistant"):
        body = answer_live(answerer, user, question, earlier)
    turns.append({"question": question, "answer": body})
    if body["mode"] != Mode.ERROR:
        state.conversation = history.add_turn(user.id, state.get("conversation"), question, body)
    st.rerun()
