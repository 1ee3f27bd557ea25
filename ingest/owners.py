"""Whose a personal upload folder is (ingest/personal.py): each signed-in user's files live
in `<data_dir>/.personal/<digest of the user id>/`, with a hidden owner file naming the user.
Every ingestion run over such a folder takes its readers from that file alone — `user:<id>`
— whatever TAIMATSU_PERMISSIONS or TAIMATSU_ACL_FILE say; a personal folder whose owner
cannot be told stops the run (its documents are never opened to anyone else).

Imports nothing of ingest's but the rules' record, so that the pipeline can ask it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from assistant.errors import IngestError
from assistant.settings import Settings
from ingest.acl import Acl

PERSONAL_FOLDER = ".personal"  # hidden: a folder source holding the data folder skips it
OWNER_FILE = ".taimatsu-owner.json"
USER_PREFIX = "user:"
DIGEST = 32  # hex digits of sha256(user id) in a folder's name


def base_folder(settings: Settings) -> Path:
    return Path(settings.data_dir) / PERSONAL_FOLDER


def folder_of(settings: Settings, user_id: str) -> Path:
    """The user's folder (not created): named by a digest, never by the id itself."""
    return base_folder(settings) / hashlib.sha256(user_id.encode()).hexdigest()[:DIGEST]


def is_personal(settings: Settings, root: str | Path) -> bool:
    """Whether a source root is a user's personal folder."""
    try:
        return Path(root).resolve().parent == base_folder(settings).resolve()
    except OSError:
        return False


def owner_rules(settings: Settings, root: Path) -> Acl | None:
    """The rules of a personal folder — every document readable by `user:<owner>` alone —
    or None for any other folder. IngestError when the owner cannot be told."""
    if not is_personal(settings, root):
        return None
    try:
        owner = json.loads((root / OWNER_FILE).read_text(encoding="utf-8"))["user"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IngestError(
            f"{root} is a personal upload folder without a readable {OWNER_FILE}, so whose "
            "documents they are cannot be told; nothing was changed; restore the file or "
            "remove the folder"
        ) from exc
    if not isinstance(owner, str) or not owner or folder_of(settings, owner).name != root.name:
        raise IngestError(
            f"{root / OWNER_FILE} does not name the user this folder belongs to; nothing "
            "was changed; restore the file or remove the folder"
        )
    group = f"{USER_PREFIX}{owner}"
    return Acl(default=(group,), origin=f"its owner's file {OWNER_FILE}", in_force=True)
