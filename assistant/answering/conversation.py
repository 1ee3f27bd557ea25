"""Follow-up questions: "and for part-timers?" means nothing to a search engine.

Before retrieval, a question asked after earlier turns is rewritten by the model into a
standalone question, using as much recent history as fits a share of the model's
context window. Without a model, the previous question is prepended instead, which
keeps its topic words in the search.
"""

from __future__ import annotations

from dataclasses import dataclass

CONDENSE_PROMPT = """\
You rewrite the user's last message in a conversation as one standalone question that \
can be understood without the conversation. Keep the language of the last message. \
Replace pronouns and ellipses with what they refer to. Output only the question."""

HISTORY_SHARE = 4  # the history gets at most 1/4 of the context window
CHARS_PER_TOKEN = 1  # a conservative bound: one Japanese character can be one token


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str


def bounded(history: list[Turn], context_window: int) -> list[Turn]:
    """The most recent turns whose text fits the history's share of the window."""
    budget = context_window * CHARS_PER_TOKEN // HISTORY_SHARE
    kept: list[Turn] = []
    for turn in reversed(history):
        size = len(turn.question) + len(turn.answer)
        if size > budget:
            break
        budget -= size
        kept.append(turn)
    return kept[::-1]


def condense_messages(history: list[Turn], question: str) -> list[dict[str, str]]:
    lines = []
    for turn in history:
        lines += [f"User: {turn.question}", f"Assistant: {turn.answer}"]
    user = "Conversation:\n" + "\n".join(lines) + f"\n\nLast message: {question.strip()}"
    return [{"role": "system", "content": CONDENSE_PROMPT}, {"role": "user", "content": user}]


def fallback_question(history: list[Turn], question: str) -> str:
    """Without a model: the previous question's words help retrieval find the topic."""
    return f"{history[-1].question} {question}" if history else question


def clean_question(text: str, original: str) -> str:
    """The model's rewrite, or the original if it gave nothing usable."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = line.removeprefix("Question:").strip().strip('"「」')
    return line if 0 < len(line) <= 4 * len(original) + 400 else original
