"""Personal and service API tokens: who is asking, for the API and MCP (ui/api).

A token reads `tmt_<id>_<secret>`. Only the SHA-256 of the secret is kept (in
`tokens.sqlite3` in the data folder, created 0600), looked up by the id and compared in
constant time, so a copy of the database lets nobody ask as anyone. The token itself is
shown once, when it is made. A token carries its user and groups: the asker's groups come
from it, never from a request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from assistant.settings import Settings
from assistant.sqlite import transaction

PREFIX = "tmt_"
_TOKEN = re.compile(r"tmt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DUMMY = hashlib.sha256(b"no such token").hexdigest()  # compared when the id is unknown
_DURATION = re.compile(r"(\d+)\s*([dhmw]?)")
_UNIT = {"": 86400, "d": 86400, "h": 3600, "m": 60, "w": 7 * 86400}

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, groups TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL, created REAL NOT NULL, expires REAL,
    revoked REAL, service INTEGER NOT NULL, name TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_id);
"""


class TokenError(Exception):
    """A token that lets nobody in; its text is one sentence for the 401 body."""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user: str
    groups: tuple[str, ...]
    created: float
    expires: float | None
    revoked: bool
    service: bool
    name: str = ""

    def as_json(self) -> dict[str, object]:
        def when(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()

        return {
            "id": self.id,
            "user": self.user,
            "groups": list(self.groups),
            "name": self.name,
            "created": when(self.created),
            "expires": when(self.expires),
            "revoked": self.revoked,
            "service": self.service,
        }


def parse_duration(text: str) -> float:
    """Seconds in "90d", "12h", "30m", "2w" or a bare number of days; ValueError else."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"'{text}' is not a duration: write it like 90d, 12h or 2w")
    return int(match.group(1)) * _UNIT[match.group(2)]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, settings: Settings) -> None:
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "tokens.sqlite3"
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.Lock()
        with self._db() as db:
            db.executescript(SCHEMA)

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path, self._lock)

    def create(
        self,
        user: str,
        groups: Sequence[str],
        expires_in: float | None = None,
        service: bool = False,
        name: str = "",
    ) -> tuple[str, TokenInfo]:
        """A new token for `user` in `groups`; the raw token is returned only here."""
        user = user.strip()
        if not user:
            raise ValueError("a token needs a user: pass --user NAME")
        clean = tuple(sorted({g.strip() for g in groups if g.strip()}))
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = time.time()
        expires = now + expires_in if expires_in else None
        name = name.strip()[:80]
        info = TokenInfo(token_id, user, clean, now, expires, False, service, name)
        with self._db() as db:
            db.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (token_id, user, ",".join(clean), _digest(secret), now, expires, service, name),
            )
        return f"{PREFIX}{token_id}_{secret}", info

    def verify(self, raw: str) -> TokenInfo:
        """The token's holder, or TokenError: malformed, unknown, revoked or expired."""
        match = _TOKEN.fullmatch(raw.strip())
        token_id, secret = match.groups() if match else ("", "")
        with self._db() as db:
            row = db.execute(
                "SELECT id, user_id, groups, created, expires, revoked, service, name, "
                "secret_sha256 FROM tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
        stored = row[8] if row else _DUMMY
        if not (hmac.compare_digest(_digest(secret), stored) and row and match):
            raise TokenError(
                "This API token is not valid: create one in the page or with "
                "`taimatsu token create`."
            )
        info = self._info(row)
        if info.revoked:
            raise TokenError("This API token was revoked: create a new one.")
        if info.expires is not None and info.expires <= time.time():
            raise TokenError("This API token has expired: create a new one.")
        return info

    def list(self, user: str | None = None) -> list[TokenInfo]:
        query = "SELECT id, user_id, groups, created, expires, revoked, service, name FROM tokens"
        with self._db() as db:
            if user is None:
                rows = db.execute(query + " ORDER BY created").fetchall()
            else:
                rows = db.execute(query + " WHERE user_id = ? ORDER BY created", (user,)).fetchall()
        return [self._info(row) for row in rows]

    def revoke(self, token_id: str, user: str | None = None) -> bool:
        """Revoke one token (only one of `user`'s when a user is given); False if none."""
        query = "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL"
        args: tuple = (time.time(), token_id.strip())
        if user is not None:
            query, args = query + " AND user_id = ?", (*args, user)
        with self._db() as db:
            return db.execute(query, args).rowcount == 1

    @staticmethod
    def _info(row: Sequence) -> TokenInfo:
        groups = tuple(g for g in row[2].split(",") if g)
        return TokenInfo(
            row[0], row[1], groups, row[3], row[4], row[5] is not None, bool(row[6]), row[7]
        )
