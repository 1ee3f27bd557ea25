"""Credentials of remote sources, from the file TAIMATSU_SOURCE_CREDENTIALS points at
(never from the settings themselves, so no secret lands in an environment dump or a
compose file):

    ["https://intranet.example.com/docs/"]
    username = "svc-taimatsu"
    password = "..."

    ["imaps://alice@mail.example.com/"]
    password = "..."

    ["https://wiki.example.com/"]
    token = "..."          # sent as `Authorization: Bearer ...`

The table whose URL is the longest prefix of the source's URL applies.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import IngestError


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret in a log or a traceback
        secret = "set" if self.password or self.token else "none"
        return f"Credentials(username={self.username!r}, secret={secret})"


def credentials_for(path: Path | None, url: str) -> Credentials:
    """The credentials for `url` (empty when no file is set or no prefix matches)."""
    if path is None:
        return Credentials()
    try:
        tables = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise IngestError(
            f"the credentials file {path} (TAIMATSU_SOURCE_CREDENTIALS) cannot be read "
            f"({reason}); nothing was changed; fix it and rerun"
        ) from None
    matches = [prefix for prefix in tables if url.startswith(prefix)]
    if not matches:
        return Credentials()
    prefix = max(matches, key=len)
    table = tables[prefix] if isinstance(tables[prefix], dict) else {"username": 0}
    fields = {key: table.get(key) for key in ("username", "password", "token")}
    if not all(value is None or isinstance(value, str) for value in fields.values()):
        raise IngestError(
            f"the credentials file {path}: [{prefix!r}] must hold text values username, "
            "password or token; fix it and rerun"
        )
    return Credentials(**fields)
