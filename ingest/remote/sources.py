"""Which remote source a URL given to `taimatsu ingest` names (by its scheme)."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from assistant.errors import IngestError
from assistant.settings import Settings
from ingest.remote.mirror import Mirror

SCHEMES = ("http", "https", "webdav", "webdavs", "imap", "imaps")


class Remote(Protocol):
    url: str
    mirror: Mirror

    def refresh(self): ...  # -> an object with `failed`; raises SourceDown, IngestRefused


def is_url(text: str) -> bool:
    return "://" in text and urlsplit(text).scheme.isalpha()


def source_for(settings: Settings, url: str, *, allow_mass_delete: bool = False) -> Remote:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        from ingest.remote.web import Site

        return Site(settings, url, allow_mass_delete=allow_mass_delete)
    if scheme in ("webdav", "webdavs"):
        from ingest.remote.webdav import Store

        return Store(settings, url, allow_mass_delete=allow_mass_delete)
    if scheme in ("imap", "imaps"):
        from ingest.remote.mailbox import Mailbox

        return Mailbox(settings, url, allow_mass_delete=allow_mass_delete)
    raise IngestError(
        f"{url}: {scheme}:// sources are not supported; give a folder or an "
        f"{', '.join(s + '://' for s in SCHEMES)} URL"
    )
