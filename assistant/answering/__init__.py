"""Answering: retrieved passages and the conversation in, a cited answer out.

`answer` runs a question end to end (follow-up rewrite, retrieval, prompt, streaming as
typed events, citation check, the sources-only fallback) and names the answer modes,
`conversation` bounds and condenses the history, `prompt` builds the messages and checks
citations, `llm` talks to the model server (Ollama or OpenAI-compatible), `history` keeps
conversations and feedback per user."""

from __future__ import annotations

from assistant.answering.answer import (
    Answer,
    AnswerDone,
    Answerer,
    AnswerEvent,
    Mode,
    PassagesFound,
    TextDelta,
)
from assistant.answering.conversation import Turn
from assistant.answering.history import Conversation, History
from assistant.answering.llm import LLMPool, llm_health
from assistant.answering.prompt import build_messages, check_citations

__all__ = [
    "Answer",
    "AnswerDone",
    "AnswerEvent",
    "Answerer",
    "Conversation",
    "History",
    "LLMPool",
    "Mode",
    "PassagesFound",
    "TextDelta",
    "Turn",
    "build_messages",
    "check_citations",
    "llm_health",
]
