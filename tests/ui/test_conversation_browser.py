"""A conversation in a real browser: unrelated questions in one chat are each answered from
their own document (none is searched with the one before glued on), and a follow-up is
answered from its topic's document. `taimatsu ui` serves the real page over the sample
index; Debian's chromium asks; answers come from the Ollama-protocol test server in
tests/ollama_server.py (no model runs: it quotes the passages, and returns the rewrite a
model would give for the follow-up) or, in the second test, from no model at all."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from assistant.answering.conversation import CONDENSE_PROMPT
from tests.conftest import closed_port_url
from tests.ollama_server import FakeOllama, echo_reply
from tests.ui.test_browser import (  # noqa: F401 - browser, open_page: fixtures
    ANSWER_MS,
    browser,
    citations,
    open_page,
    wait_for_run,
)

# (question, the document its first citation must come from)
CHAT = [
    ("How many days of paid leave do full-time employees get?", "leave-policy.md"),
    ("and for part-timers?", "leave-policy.md"),
    ("在宅勤務は週に何日まで認められていますか？", "在宅勤務規程.md"),
    ("What does error VPN-0x2F mean?", "vpn-troubleshooting.pdf"),
]
REWRITE = "How many days of paid leave do part-time employees get?"


def ask_nth(page: Page, question: str, n: int) -> Locator:
    """Send the n-th question (from 0) of the chat; its answer, once the run is over."""
    box = page.get_by_test_id("stChatInputTextArea")
    expect(box).to_be_enabled()
    box.fill(question)
    box.press("Enter")
    assistant = page.get_by_test_id("stChatMessage").filter(
        has=page.get_by_test_id("stChatMessageAvatarAssistant")
    )
    expect(assistant).to_have_count(n + 1, timeout=ANSWER_MS)
    wait_for_run(page, timeout=ANSWER_MS)
    return assistant.nth(n)


def _first_source(message: Locator, source: str) -> None:
    first = citations(message, re.compile(r"^\[1\] "))
    expect(first).to_have_count(1)
    expect(first.locator("summary")).to_contain_text(source)


def test_unrelated_questions_and_a_follow_up_with_a_model(open_page, artifacts):  # noqa: F811
    def reply(messages):
        if messages[0]["content"] == CONDENSE_PROMPT:
            return REWRITE
        return echo_reply(messages)

    with FakeOllama(reply=reply) as server:
        page = open_page(server.url)
        for n, (question, source) in enumerate(CHAT):
            _first_source(ask_nth(page, question, n), source)
        chats = [r["json"]["messages"] for r in server.requests if r["path"] == "/api/chat"]
    page.screenshot(path=artifacts / "conversation.png", full_page=True)
    rewrites = [m for m in chats if m[0]["content"] == CONDENSE_PROMPT]
    assert len(rewrites) == 1  # only the follow-up needed the conversation
    assert rewrites[0][-1]["content"].endswith("Last message: and for part-timers?")
    answered = [m[-1]["content"] for m in chats if m[0]["content"] != CONDENSE_PROMPT]
    assert [q.rsplit("Question: ", 1)[1] for q in answered] == [
        CHAT[0][0],
        REWRITE,
        CHAT[2][0],
        CHAT[3][0],
    ]  # each searched and answered as itself, the follow-up as its rewrite


def test_unrelated_questions_and_a_follow_up_without_a_model(open_page):  # noqa: F811
    page = open_page(closed_port_url())
    for n, (question, source) in enumerate(CHAT):
        message = ask_nth(page, question, n)
        expect(message.get_by_test_id("stAlertContainer")).to_have_count(1)  # no model
        _first_source(message, source)
    expect(page.get_by_test_id("stException")).to_have_count(0)
