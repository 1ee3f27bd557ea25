"""The chat page: ask, read a streamed answer with numbered sources, open the originals,
rate the answer; conversations are kept per user.

A turn is kept as a plain record (the answer's JSON plus where each source lies), so a
live answer and one reopened from the history render the same way. Document text and
model output are shown literally (markdown escaped, never HTML); a cited passage's
tables alone are rebuilt as Markdown tables, from cells that are escaped in turn, and
the passage is highlighted by its container's style, not by a Markdown directive that
its own brackets and line breaks would end.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from typing import Any

import streamlit as st

from assistant.answering import Answer, AnswerDone, Answerer, History, Mode, TextDelta, Turn
from assistant.audit import AuditLog
from assistant.errors import QuestionTooLong, StoreBusy, StoreError, TaimatsuError
from assistant.retrieval import Passage, readable_file
from ingest.chunker import line_ends_sentence
from ui.web.auth import User
from ui.web.i18n import t

log = logging.getLogger("taimatsu.ui")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain(text: str) -> str:
    """Text for st.markdown that renders literally: no links, HTML, emphasis or math."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


# -- a cited passage as Markdown -------------------------------------------------------

# files whose rows were ingested as "Header: value; ..." lines (ingest.parsing.tables)
TABLE_SOURCES = (".csv", ".tsv", ".xlsx")
# files whose text breaks a line only between blocks (paragraphs, list items, cells)
BLOCK_LINE_SOURCES = (".html", ".htm", ".docx", ".pptx")
_PIPE_ROW = re.compile(r"\|.*\|")  # a Markdown table row, stripped: "| a | b |"
_PIPE = re.compile(r"(?<!\\)\|")  # a cell border: a "|" not escaped as "\|"
_DELIMITER_CELL = re.compile(r":?-+:?")
_WIDE = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]")  # CJK: no space between lines
PASSAGE_STYLE = """<style>
[class*="st-key-passage-"] {
  background-color: rgba(255, 164, 33, 0.12);
  border-left: 3px solid rgba(255, 164, 33, 0.85);
  border-radius: 0.5rem;
  padding: 0.5rem 0.75rem;
  overflow-x: auto;
}
[class*="st-key-passage-"] thead:not(:has(th:not(:empty))) {
  display: none;  /* the empty header of a table cut below its own */
}
</style>"""


def _literal_line(line: str) -> str:
    """One line shown as itself: escaped, and no "===" under it that makes it a heading."""
    escaped = plain(line)
    return "\\" + escaped if escaped.startswith("=") else escaped


def _prose(lines: list[str], wrapped: bool = True) -> str:
    """Lines shown as they are, but for line breaks that only wrap a sentence at a fixed
    width (PDF lines, plain text and Markdown sources: `wrapped`), which flow as
    Markdown's own do."""
    paragraphs: list[list[str]] = [[]]
    previous = ""
    for line in lines:
        if not line:
            if paragraphs[-1]:
                paragraphs.append([])
        elif wrapped and paragraphs[-1] and not line_ends_sentence(previous, line):
            wide = _WIDE.match(line) and _WIDE.match(previous[-1])
            paragraphs[-1][-1] += ("" if wide else " ") + line
        else:
            paragraphs[-1].append(line)
        previous = line
    return "\n\n".join("  \n".join(map(_literal_line, p)) for p in paragraphs if p)


def _table(header: list[str], rows: list[list[str]], aligns: list[str] | None = None) -> str:
    """A Markdown table whose cells show their text literally (no links, images, HTML)."""
    width = max(len(row) for row in [header, *rows])
    aligns = (aligns or []) + ["---"] * (width - len(aligns or []))

    def line(cells: list[str]) -> str:
        cells = cells + [""] * (width - len(cells))
        return "| " + " | ".join(_literal_line(" ".join(c.split())) for c in cells) + " |"

    return "\n".join([line(header), "| " + " | ".join(aligns) + " |", *map(line, rows)])


def _pipe_table(lines: list[str]) -> str:
    """Markdown table rows (the whole table, or the part of it a chunk holds) as a table:
    a chunk that starts below the header gets an empty header, not a row promoted to it."""
    rows = [[c.strip().replace("\\|", "|") for c in _PIPE.split(line[1:-1])] for line in lines]
    aligns = None
    if len(rows) > 1 and all(_DELIMITER_CELL.fullmatch(c) for c in rows[1]):
        header, aligns, body = rows[0], rows[1], rows[2:]
    elif all(_DELIMITER_CELL.fullmatch(c) for c in rows[0]):  # the header was cut off
        header, aligns, body = [], rows[0], rows[1:]
    else:
        header, body = [], rows
    return _table(header, body, aligns) if body or header else _prose(lines)


def _labelled_rows(lines: list[str]) -> str | None:
    """Spreadsheet rows ingested as "Header: value; Header: value" lines as a table, or
    None when a line is not such a row."""
    columns: dict[str, None] = {}
    rows: list[dict[str, str]] = []
    for line in filter(None, lines):
        row: dict[str, str] = {}
        label = ""
        for piece in line.split("; "):
            name, colon, value = piece.partition(": ")
            if colon and name and name not in row:
                label, row[name] = name, value
            elif label:  # a value with "; " in it
                row[label] += "; " + piece
            else:
                return None
        columns.update(dict.fromkeys(row))
        rows.append(row)
    if not rows:
        return None
    return _table(list(columns), [[row.get(c, "") for c in columns] for row in rows])


def passage_markdown(text: str, source: str = "") -> str:
    """A cited passage as Markdown that shows its text literally, with its line breaks
    (but those that wrap a sentence, in a file whose lines may: not HTML or Office, whose
    parsers break lines only between blocks, such as list items), except that its tables
    render as tables: Markdown tables, and the rows of a spreadsheet or CSV file
    (`source`). Every cell is escaped like the rest: no HTML, link or image comes from
    the text."""
    lines = [line.strip() for line in text.splitlines()]
    kind = source.lower()
    if kind.endswith(TABLE_SOURCES) and (table := _labelled_rows(lines)):
        return table
    wrapped = not kind.endswith(BLOCK_LINE_SOURCES)
    blocks = [
        _pipe_table(list(run)) if is_table else _prose(list(run), wrapped)
        for is_table, run in itertools.groupby(lines, lambda line: bool(_PIPE_ROW.fullmatch(line)))
    ]
    return "\n\n".join(b for b in blocks if b)


def record(answer: Answer) -> dict[str, Any]:
    body = answer.as_json()
    for citation, (_, passage) in zip(body["citations"], answer.citations, strict=True):
        citation["root"] = passage.root
    return body


# -- showing a turn --------------------------------------------------------------------


def show_citation(answerer: Answerer, user: User, key: str, citation: dict[str, Any]) -> None:
    where = Passage.where_of(
        citation.get("url") or citation["source"], citation.get("page"), citation.get("section")
    )
    with st.expander(plain(f"[{citation['n']}] {where}")):
        with st.container(key=f"passage-{key}-{citation['n']}"):  # styled: PASSAGE_STYLE
            st.markdown(passage_markdown(citation["text"], citation["source"]))
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
    if body["mode"] == Mode.GENERATED and not body.get("citations_marked", True):
        st.caption(t("uncited_passages"))  # the model marked none: these are what it read
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
    """Stream one answer into the page and write it to the audit log; return its record
    (or an error record)."""
    started = time.perf_counter()
    body = _answer_live(answerer, user, question, earlier)
    latency = (time.perf_counter() - started) * 1000
    AuditLog(answerer.settings).record_answer("page", user.id, user.groups, body, latency)
    return body


def _answer_live(answerer: Answerer, user: User, question: str, earlier: list[Turn]) -> dict:
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
    st.html(PASSAGE_STYLE)  # a constant: no text from a document or a model in it
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
