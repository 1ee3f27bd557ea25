"""A remote source's local copy: one file per page, message or item under
`<data_dir>/mirrors/<slug>/`, which the folder pipeline then ingests like any folder
(incremental hashing, crash safety, the mass-delete guard, the rules and the parsers).

Beside the files, in the hidden folder `.taimatsu-mirror/` (hidden entries are never
listed as documents): `origin.json` (the source's URL) and, per item, `items/<path>.json`
(its URL and what the next run asks the server with: ETag, Last-Modified, UID...). Every
file is written whole or not at all (a temporary file, then os.replace), the item before
its state: a run killed between the two fetches the item again next time, never trusts
a state whose bytes are missing.

This module imports nothing from the rest of ingest: the pipeline reads a mirror's URLs
through it (citations name the page, not the copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

META = ".taimatsu-mirror"


def slug(url: str) -> str:
    """A folder name for a source URL: readable, and unique by a hash of the whole URL."""
    parts = urlsplit(url)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{parts.scheme}-{parts.netloc}{parts.path}")
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:10]
    return f"{readable.strip('-.')[:80]}-{digest}"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_relative(text: str) -> str:
    """A relative POSIX path that stays inside the mirror: no empty, `.` or `..`
    segments, and no segment that starts with a dot (those are hidden from the listing)."""
    segments = []
    for part in text.split("/"):
        part = part.replace("\x00", "")
        if part in ("", ".", ".."):
            continue
        if part.startswith("."):
            part = "_" + part[1:]
        segments.append(part[:200])
    return "/".join(segments)


class Mirror:
    """The local copy of one source, at `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta = self.root / META

    @classmethod
    def for_url(cls, data_dir: Path, url: str) -> Mirror:
        return cls(Path(data_dir) / "mirrors" / slug(url))

    @property
    def origin(self) -> str | None:
        """The source's URL, or None when this folder is not a mirror."""
        try:
            data = json.loads((self.meta / "origin.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        url = data.get("url") if isinstance(data, dict) else None
        return url if isinstance(url, str) else None

    def sweep(self) -> None:
        """Remove the temporary files of a run that was killed while writing (hidden, so
        never listed as documents, but they would pile up)."""
        if self.root.is_dir():
            for tmp in self.root.rglob(".tmp-*"):
                tmp.unlink(missing_ok=True)

    def set_origin(self, url: str) -> None:
        """Record the source's URL (once it answered), and sweep what a killed run left."""
        self.sweep()
        if self.origin != url:
            write_atomic(self.meta / "origin.json", json.dumps({"url": url}).encode("utf-8"))

    def _state_path(self, relative: str) -> Path:
        return self.meta / "items" / (relative + ".json")

    def state(self, relative: str) -> dict[str, Any] | None:
        """What the last run knew of the item at `relative`; None when unknown or when its
        file is missing (then it is fetched whole again)."""
        if not (self.root / relative).is_file():
            return None
        try:
            data = json.loads(self._state_path(relative).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def states(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(relative path, state) of every item the mirror holds."""
        items = self.meta / "items"
        for path in sorted(items.rglob("*.json")) if items.is_dir() else []:
            relative = path.relative_to(items).as_posix()[: -len(".json")]
            state = self.state(relative)
            if state is not None:
                yield relative, state

    def url_of(self, relative: str) -> str | None:
        state = self.state(relative)
        url = state.get("url") if state else None
        return url if isinstance(url, str) else None

    def read(self, relative: str) -> bytes:
        return (self.root / relative).read_bytes()

    def write(self, relative: str, data: bytes | None, state: dict[str, Any]) -> None:
        """Store an item (its bytes, unless None: unchanged) and then its state."""
        if data is not None:
            write_atomic(self.root / relative, data)
        text = json.dumps(state, ensure_ascii=False, sort_keys=True).encode("utf-8")
        write_atomic(self._state_path(relative), text)

    def remove(self, relative: str) -> None:
        """Drop an item that the source no longer has: its file first, then its state."""
        (self.root / relative).unlink(missing_ok=True)
        self._state_path(relative).unlink(missing_ok=True)
        for folder in (self.root / relative).parents:
            if folder == self.root or not folder.is_relative_to(self.root):
                break
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
