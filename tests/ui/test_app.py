"""The Streamlit page through Streamlit's AppTest (the script runs for real, in-process),
with the Ollama-protocol test server standing in for Ollama over HTTP."""

from __future__ import annotations

import html
import re

import pytest
from streamlit.testing.v1 import AppTest

from assistant.answering import History
from assistant.index import open_index
from ingest.pipeline import Ingestor
from tests.conftest import closed_port_url
from tests.ollama_server import FakeOllama, styled_reply
from ui.web.chat import passage_markdown
from ui.web.i18n import STRINGS


def literal(markdown: str) -> str:
    """What escaped markdown shows on the page."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _ask(app: AppTest, question: str) -> AppTest:
    app.chat_input[0].set_value(question).run()
    assert not app.exception, app.exception
    return app


def test_answer_with_numbered_citations(page):
    with FakeOllama() as server:
        app = _ask(page(server.url), "What does error VPN-0x2F mean?")
    messages = app.chat_message
    assert [m.name for m in messages] == ["user", "assistant"]
    answer = messages[1].markdown[0].value
    assert "\\[1\\]" in answer and "VPN" in answer  # shown literally, brackets escaped
    labels = [literal(e.label) for e in messages[1].expander]
    assert labels[0].startswith("[1] en/vpn-troubleshooting.pdf, p. 2")
    assert len(labels) == 2 and not messages[1].warning


@pytest.mark.parametrize("style", ["lenticular", "none", "think", "cut"])
def test_answers_in_the_styles_models_write_show_their_sources(page, style):
    """A model citing as 【1】, citing nothing, thinking aloud first or cut at its limit
    still gets an answer with sources on the page (tests/ollama_server.py REPLY_STYLES)."""
    with FakeOllama(reply=styled_reply(style)) as server:
        app = _ask(page(server.url), "What does error VPN-0x2F mean?")
    assistant = app.chat_message[1]
    answer = literal(assistant.markdown[0].value)
    labels = [literal(e.label) for e in assistant.expander]
    assert not assistant.warning and "VPN" in answer
    assert "【" not in answer and "<think>" not in answer and "unrelated" not in answer
    uncited = STRINGS["uncited_passages"]["en"]
    captions = [c.value for c in assistant.caption]
    if style == "none":
        assert uncited in captions and "[" not in answer
        assert [label.split(" ", 1)[0] for label in labels] == [f"[{n}]" for n in range(1, 6)]
    else:
        assert uncited not in captions and "[1]" in answer
        assert len(labels) == (1 if style == "cut" else 2) and labels[0].startswith("[1] ")


def test_without_model_the_page_says_so_above_the_passages(page):
    app = _ask(page(closed_port_url()), "When are taxi fares reimbursed?")
    assistant = app.chat_message[1]
    assert "could not be reached" in assistant.warning[0].value
    assert len(assistant.expander) == 5
    assert literal(assistant.expander[0].label).startswith("[1] en/expenses.html")


def test_conversation_is_kept_listed_and_reopened(page, sample_settings):
    with FakeOllama() as server:
        app = _ask(page(server.url), "What is the minimum password length?")
        app = _ask(app, "在宅勤務は週何日までですか")
    assert [m.name for m in app.chat_message] == ["user", "assistant"] * 2
    condense = [r for r in server.requests if "standalone" in str(r["json"])]
    assert not condense  # an unrelated question is searched as itself: no rewrite asked
    assert len([r for r in server.requests if r["path"] == "/api/chat"]) == 2
    past = History(sample_settings.data_dir).conversations("local")
    assert past[0].title == "What is the minimum password length?"

    new_chat = next(b for b in app.sidebar.button if b.label == STRINGS["new_chat"]["en"])
    new_chat.click().run()
    assert not app.chat_message
    reopen = next(b for b in app.sidebar.button if b.key == f"conv-{past[0].id}")
    reopen.click().run()
    assert [m.name for m in app.chat_message] == ["user", "assistant"] * 2
    assert "minimum password length" in app.chat_message[0].markdown[0].value


def test_feedback_is_stored_with_question_answer_and_sources(page, sample_settings):
    with FakeOllama() as server:
        app = _ask(page(server.url), "When are taxi fares reimbursed?")
    app.chat_message[1].get("feedback")[0].set_value(0).run()  # thumbs down
    app.text_input(key=next(k.key for k in app.text_input)).input("Wrong policy year").run()
    next(b for b in app.button if b.label == STRINGS["feedback_send"]["en"]).click().run()
    (stored,) = [
        f
        for f in History(sample_settings.data_dir).feedback()
        if f["question"] == "When are taxi fares reimbursed?"
    ]
    assert stored["rating"] == -1 and stored["comment"] == "Wrong policy year"
    assert stored["sources"][0]["source"] == "en/expenses.html" and stored["answer"]


def test_empty_index_answers_that_nothing_was_found(page, tmp_path):
    app = _ask(page("http://127.0.0.1:9", tmp_path / "empty"), "Anything?")
    text = app.chat_message[1].markdown[0].value
    assert literal(text) == "I found nothing about this in the documents you can read."


def test_busy_index_is_one_sentence_not_a_traceback(page, sample_settings, monkeypatch):
    app = page(closed_port_url())
    monkeypatch.setenv("TAIMATSU_LOCK_TIMEOUT", "0.5")
    with open_index(sample_settings).shard(write=True):  # a writer holds the embedded index
        _ask(app, "When are taxi fares reimbursed?")
    errors = app.chat_message[1].error
    assert [e.value for e in errors] == [STRINGS["busy"]["en"]]
    assert not app.exception


def test_model_output_is_rendered_inert(page):
    hostile = "<script>alert(1)</script> [click](javascript:alert(1)) **bold** [1]"
    with FakeOllama(reply=lambda messages: hostile) as server:
        app = _ask(page(server.url), "VPN-0x2F")
    shown = app.chat_message[1].markdown[0].value
    assert "<script>" not in shown and "](javascript:" not in shown and "**" not in shown
    assert "\\<script\\>" in shown


def test_hostile_headings_and_sources_are_shown_literally(page, settings, embedder, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    heading = "Zebra **bold** [portal](http://evil.example) <b>x</b>"
    (docs / "[evil](javascript:alert(1)).md").write_text(
        f"# {heading}\n\nZebras are striped animals living in Africa.\n", encoding="utf-8"
    )
    Ingestor(settings, embedder).run(docs)
    app = _ask(page(closed_port_url(), settings.data_dir), "zebra stripes")
    label = app.chat_message[1].expander[0].label
    assert literal(label) == f"[1] [evil](javascript:alert(1)).md, § {heading}"
    assert "](" not in label.replace("\\]\\(", "") and "**" not in label


def test_japanese_interface_from_the_language_switch(page):
    app = page(closed_port_url())
    app.sidebar.radio(key="language_switch").set_value("ja").run()
    assert app.chat_input[0].placeholder == STRINGS["ask"]["ja"]
    assert any(b.label == STRINGS["new_chat"]["ja"] for b in app.sidebar.button)
    signed_in = [c.value for c in app.sidebar.caption if STRINGS["signed_in_as"]["ja"] in c.value]
    assert signed_in == [f"{STRINGS['signed_in_as']['ja']} {STRINGS['local_user']['ja']}"]


def test_every_string_has_both_languages():
    assert all(set(texts) == {"en", "ja"} and all(texts.values()) for texts in STRINGS.values())


# -- a cited passage as Markdown ---------------------------------------------------------


def _rendered(markdown: str) -> str:
    """HTML from Markdown with raw HTML off and tables on, as Streamlit renders it."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


def _cells(rendered: str) -> list[str]:
    return [html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", rendered)]


HOSTILE_TABLE = """Limits [x] apply ] now, see [1].
Second line [
| Item [x] | Limit ] |
|---|--:|
| Hotel <script>alert(1)</script> | [card](javascript:alert(1)) |
| ![p](javascript:alert(2)) | a \\| b **c** |

After the table"""


def test_a_passage_shows_brackets_and_lines_literally_and_its_tables_as_tables():
    rendered = _rendered(passage_markdown(HOSTILE_TABLE))
    assert rendered.count("<table>") == 1
    assert "<script" not in rendered and "<a " not in rendered and "<img" not in rendered
    assert "<strong>" not in rendered and "<h" not in rendered.replace("<hr", "")
    assert _cells(rendered) == [
        "Item [x]",
        "Limit ]",
        "Hotel <script>alert(1)</script>",
        "[card](javascript:alert(1))",
        "![p](javascript:alert(2))",
        "a | b **c**",
    ]
    before, after = rendered.split("<table>")
    assert html.unescape(before) == "<p>Limits [x] apply ] now, see [1].<br />\nSecond line [</p>\n"
    assert after.endswith("</table>\n<p>After the table</p>\n")


def test_a_passage_flows_its_wrapped_lines_and_keeps_its_other_line_breaks():
    text = (
        "Part-time employees receive leave\npro-rated by days.\n- one\n- two\n"
        "申請は\n金曜日までです。\n===\n\nEnd"
    )
    shown = html.unescape(_rendered(passage_markdown(text)))
    assert shown == (
        "<p>Part-time employees receive leave pro-rated by days.<br />\n- one<br />\n"
        "- two<br />\n申請は金曜日までです。<br />\n===</p>\n<p>End</p>\n"
    )  # and "===" under a line makes no heading of it

    # an HTML or Office document's lines are its blocks (list items, paragraphs), never
    # wraps: they are not run together (「対象：技術書対象外：雑誌」)
    items = "書籍を補助します。\n対象：技術書\n対象外：雑誌\nyear: April\nto March"
    for source in ("benefits.html", "規程.docx"):
        shown = html.unescape(_rendered(passage_markdown(items, source)))
        assert shown == (
            "<p>書籍を補助します。<br />\n対象：技術書<br />\n対象外：雑誌<br />\n"
            "year: April<br />\nto March</p>\n"
        )
    flowed = html.unescape(_rendered(passage_markdown(items, "benefits.md")))
    assert "対象：技術書対象外：雑誌" in flowed  # a wrapped source's lines still flow


def test_spreadsheet_rows_and_cut_tables_are_shown_as_tables():
    rows = "Item: Hotel; Limit: 18,000 yen\nItem: Taxi [x]; Note: after 22:00; <b>x</b>"
    rendered = _rendered(passage_markdown(rows, "finance/rates.xlsx"))
    assert _cells(rendered) == [
        "Item", "Limit", "Note",
        "Hotel", "18,000 yen", "",
        "Taxi [x]", "", "after 22:00; <b>x</b>",
    ]  # fmt: skip
    assert "<table>" not in _rendered(passage_markdown(rows, "notes.txt"))  # not a table file
    cut = _rendered(passage_markdown("| 3 days | 11 days |\n| 2 days | 7 days |"))
    assert _cells(cut) == ["", "", "3 days", "11 days", "2 days", "7 days"]  # header left empty


def test_a_cited_table_is_shown_as_a_table_in_the_highlighted_passage(
    page, settings, embedder, tmp_path
):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "rates.md").write_text(
        "# Hotel rates\n\nHotel rates [2024] apply\nfrom April ] on.\n\n"
        "| City | Limit [yen] |\n|---|---|\n| Osaka | 18,000 |\n",
        encoding="utf-8",
    )
    Ingestor(settings, embedder).run(docs)
    app = _ask(page(closed_port_url(), settings.data_dir), "hotel rate Osaka")
    (box, _download) = app.chat_message[1].expander[0].children.values()
    assert "-passage-" in box.proto.id  # the container PASSAGE_STYLE highlights
    (shown,) = [m.value for m in box.markdown]
    assert ":orange-background[" not in shown
    rendered = _rendered(shown)
    assert html.unescape(rendered.split("<table>")[0]) == (
        "<p>Hotel rates [2024] apply from April ] on.</p>\n"
    )
    assert _cells(rendered) == ["City", "Limit [yen]", "Osaka", "18,000"]
