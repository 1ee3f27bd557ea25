"""The page streams a real model's answer in a real browser: `taimatsu ui` serves the page
over the sample index, Debian's chromium asks, and SmolLM2-135M-Instruct (transformers on
the CPU, behind the Ollama-protocol server in tests/real_model.py: the Ollama server cannot
run here) writes the answer token by token."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.ui.test_browser import (  # noqa: F401 - browser, open_page: fixtures
    ANSWER_MS,
    browser,
    open_page,
    wait_for_run,
)

CURSOR = "▌"
UNCITED = "Passages given to the model (the answer does not cite them)"
# the text of the last assistant message while it is still being written
GROWN = """([before, cursor]) => {
    const messages = [...document.querySelectorAll('[data-testid="stChatMessage"]')]
        .filter(m => m.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
    const last = messages[messages.length - 1];
    const text = last ? last.innerText : "";
    return text.includes(cursor) && text.length > before.length && text !== before;
}"""


def test_the_page_streams_a_real_models_answer(open_page, real_model, artifacts):  # noqa: F811
    page = open_page(real_model.url)  # the page asks for its default model: an alias
    asked = len(real_model.chats())
    box = page.get_by_test_id("stChatInputTextArea")
    expect(box).to_be_enabled()
    box.fill("What does error VPN-0x2F mean?")
    box.press("Enter")
    assistant = page.get_by_test_id("stChatMessage").filter(
        has=page.get_by_test_id("stChatMessageAvatarAssistant")
    )
    writing = assistant.filter(has_text=CURSOR)
    expect(writing).to_be_visible(timeout=ANSWER_MS)  # the first words, more to come
    first = writing.inner_text()
    # a later state of the same answer, still being written, holds more of it
    page.wait_for_function(GROWN, arg=[first, CURSOR], timeout=ANSWER_MS)
    second = writing.inner_text()
    page.screenshot(path=artifacts / "real-model-streaming.png", full_page=True)
    wait_for_run(page, timeout=ANSWER_MS)

    message = assistant.last
    answer = message.get_by_test_id("stChatMessageContent").get_by_test_id("stMarkdown").first
    expect(message).not_to_contain_text(CURSOR)
    final = answer.inner_text()
    print(f"\nstreamed: {first!r} -> {second!r} -> {final!r}")
    assert final.strip() and len(second) > len(first)
    expect(message.get_by_test_id("stAlert")).to_have_count(0)  # a model wrote it
    expect(page.get_by_test_id("stException")).to_have_count(0)
    # the sources shown are exactly the passages the checked answer cites; when the model
    # marked none, the passages it was given, under a caption saying they are not cited
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", final)}
    sources = message.get_by_test_id("stExpander")
    uncited = message.get_by_text(UNCITED)
    if cited:
        expect(sources).to_have_count(len(cited))
        expect(uncited).to_have_count(0)
    else:
        expect(uncited).to_have_count(1)
        expect(sources.first).to_be_visible()
    labels = sources.locator("summary").all_inner_texts()
    numbers = {int(re.match(r"\D*\[(\d+)\]", label).group(1)) for label in labels}
    assert numbers == (cited or set(range(1, len(labels) + 1)))
    page.screenshot(path=artifacts / "real-model-answer.png", full_page=True)
    chats = real_model.chats()[asked:]
    assert len(chats) == 1 and "VPN-0x2F" in chats[0]["messages"][-1]["content"]
    assert real_model.replies[-1].strip()
