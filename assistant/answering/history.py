"""Conversations and feedback, per user, in SQLite under the data folder.

A conversation belongs to one user id and is only ever listed or read for that id.
Feedback keeps the question, the answer and the sources shown with it, for the
operators; it never feeds back into what other users see.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.sqlite import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, title TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS conversations_user ON conversations (user_id, updated);
CREATE TABLE IF NOT EXISTS turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    position INTEGER NOT NULL, question TEXT NOT NULL, answer TEXT NOT NULL,
    PRIMARY KEY (conversation_id, position));
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created REAL NOT NULL,
    rating INTEGER NOT NULL, comment TEXT NOT NULL, question TEXT NOT NULL,
    answer TEXT NOT NULL, mode TEXT NOT NULL, sources TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    updated: float


class History:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "app.sqlite3"
        self._lock = threading.Lock()
        with self._db() as db:
            db.executescript(SCHEMA)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path, self._lock, foreign_keys=True)

    def conversations(self, user_id: str, limit: int = 50) -> list[Conversation]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, title, updated FROM conversations WHERE user_id = ? "
                "ORDER BY updated DESC LIMIT ?",
                (user_id, limit),
            ).fetchall()
        return [Conversation(*row) for row in rows]

    def turns(self, user_id: str, conversation_id: str) -> list[dict[str, Any]]:
        """The turns of one of this user's conversations (none for anybody else's)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT t.question, t.answer FROM turns t JOIN conversations c "
                "ON c.id = t.conversation_id WHERE c.id = ? AND c.user_id = ? "
                "ORDER BY t.position",
                (conversation_id, user_id),
            ).fetchall()
        return [{"question": q, "answer": json.loads(a)} for q, a in rows]

    def add_turn(
        self, user_id: str, conversation_id: str | None, question: str, answer: dict[str, Any]
    ) -> str:
        """Append a turn; a new conversation (titled by its first question) if none."""
        now = time.time()
        with self._db() as db:
            owned = (
                conversation_id
                and db.execute(
                    "SELECT 1 FROM conversations WHERE id = ? AND user_id = ?",
                    (conversation_id, user_id),
                ).fetchone()
            )
            if not owned:
                conversation_id = uuid.uuid4().hex
                title = " ".join(question.split())[:80]
                db.execute(
                    "INSERT INTO conversations VALUES (?, ?, ?, ?, ?)",
                    (conversation_id, user_id, title, now, now),
                )
            position = db.execute(
                "SELECT COUNT(*) FROM turns WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO turns VALUES (?, ?, ?, ?)",
                (conversation_id, position, question, json.dumps(answer, ensure_ascii=False)),
            )
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
        return str(conversation_id)

    def add_feedback(self, user_id: str, rating: int, comment: str, answer: dict[str, Any]) -> str:
        """rating: 1 up, -1 down; `answer` as Answer.as_json() (question, sources...)."""
        feedback_id = uuid.uuid4().hex
        sources = json.dumps(answer.get("citations", []), ensure_ascii=False)
        with self._db() as db:
            db.execute(
                "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    feedback_id,
                    user_id,
                    time.time(),
                    rating,
                    comment.strip()[:2000],
                    answer.get("question", ""),
                    answer.get("answer", ""),
                    answer.get("mode", ""),
                    sources,
                ),
            )
        return feedback_id

    def feedback(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest feedback, for operators."""
        with self._db() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM feedback ORDER BY created DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{**dict(row), "sources": json.loads(row["sources"])} for row in rows]
