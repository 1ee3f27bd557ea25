"""A WebDAV store (Nextcloud, SharePoint Server, Apache mod_dav...), copied into its
mirror (ingest/remote/mirror.py).

`webdav://host/path/` is read over http, `webdavs://host/path/` over https. Each
collection is listed with one `PROPFIND` (Depth: 1, asking for the resource type, ETag,
last modification and size), its sub-collections in turn, so no server has to allow
`Depth: infinity`. A file whose ETag is the one its copy was fetched with is not
requested again; the others are fetched with a `GET` (by their parser's extension: other
files are not listed as documents). Hidden entries (a leading dot) are skipped, as in a
folder.

A store that is down deletes nothing: the top collection unreachable, refused (401, 403)
or failing (5xx) stops the run (SourceDown) before the copy or the index change. A
sub-collection that cannot be listed, or a file that cannot be fetched, is reported and
keeps its copy; files leave the copy only after a listing that completed, and not most
of them at once without `--allow-mass-delete`.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx

from assistant.errors import IngestError
from assistant.settings import Settings
from ingest.parsing import supported
from ingest.remote.common import down, drop_missing, http_client, reason
from ingest.remote.mirror import Mirror, safe_relative

log = logging.getLogger(__name__)

SCHEMES = {"webdav": "http", "webdavs": "https"}
_DAV = "{DAV:}"
PROPFIND = b"""<?xml version="1.0" encoding="utf-8"?>
<propfind xmlns="DAV:"><prop>
<resourcetype/><getetag/><getlastmodified/><getcontentlength/>
</prop></propfind>"""


@dataclass
class Entry:
    url: str  # absolute http(s) URL
    collection: bool
    etag: str = ""
    size: int | None = None


@dataclass
class Listing:
    """What a WebDAV run did (for the run's summary and the tests)."""

    fetched: int = 0  # files downloaded
    unchanged: int = 0  # files whose ETag had not changed: not requested
    removed: int = 0
    complete: bool = True
    failed: list[dict[str, str]] = field(default_factory=list)


def parse_multistatus(body: bytes, base: str) -> list[Entry]:
    """The entries of a PROPFIND answer (207 Multi-Status), their hrefs made absolute.
    ElementTree on expat >= 2.4 refuses entity-expansion bombs and fetches no DTD."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(f"its listing is not WebDAV XML ({exc})") from None
    entries = []
    for response in root.iter(f"{_DAV}response"):
        href = response.findtext(f"{_DAV}href")
        if not href:
            continue
        props: dict[str, ElementTree.Element] = {}
        for propstat in response.iter(f"{_DAV}propstat"):
            status = propstat.findtext(f"{_DAV}status") or ""
            if " 200 " not in f"{status} ":
                continue
            for prop in propstat.iter(f"{_DAV}prop"):
                for child in prop:
                    props[child.tag] = child
        kind = props.get(f"{_DAV}resourcetype")
        collection = kind is not None and kind.find(f"{_DAV}collection") is not None
        etag = props.get(f"{_DAV}getetag")
        size = props.get(f"{_DAV}getcontentlength")
        entries.append(
            Entry(
                url=urljoin(base, href.strip()),
                collection=collection,
                etag=(etag.text or "").strip() if etag is not None else "",
                size=int(size.text) if size is not None and (size.text or "").isdigit() else None,
            )
        )
    return entries


class Store:
    """One WebDAV store's copy."""

    def __init__(self, settings: Settings, url: str, *, allow_mass_delete: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in SCHEMES or not parts.hostname:
            raise IngestError(f"{url} is not a WebDAV URL; give one like webdavs://host/path/")
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.settings = settings
        self.url = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, "", ""))
        self.base = urlunsplit((SCHEMES[parts.scheme.lower()], parts.netloc.lower(), path, "", ""))
        self.allow_mass_delete = allow_mass_delete
        self.mirror = Mirror.for_url(settings.data_dir, self.url)

    def relative(self, url: str) -> str | None:
        """Where the file at `url` lives in the copy; None when it is outside the store."""
        path, top = urlsplit(url).path, urlsplit(self.base).path
        if not path.startswith(top):
            return None
        relative = unquote(path[len(top) :])
        if any(part.startswith(".") for part in relative.split("/") if part):
            return None  # hidden, as in a folder
        return safe_relative(relative)

    def _propfind(self, client: httpx.Client, url: str) -> httpx.Response:
        return client.request(
            "PROPFIND",
            url,
            content=PROPFIND,
            headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
        )

    def refresh(self) -> Listing:
        """Bring the copy in line with the store; SourceDown (nothing changed) when its
        top collection cannot be listed, IngestRefused when most of the copy would go."""
        run = Listing()
        known = dict(self.mirror.states())
        kept: set[str] = set()
        unlisted: list[str] = []  # sub-collections whose copies are kept
        with http_client(self.settings, self.base, self.url) as client:
            queue = deque([self.base])
            seen = {self.base}
            first = True
            while queue:
                collection = queue.popleft()
                entries = self._list(client, collection, run, first=first)
                if first:
                    self.mirror.set_origin(self.url)
                    first = False
                if entries is None:
                    unlisted.append(self.relative(collection) or "")
                    continue
                for entry in entries:
                    if entry.url.rstrip("/") == collection.rstrip("/"):
                        continue  # the collection itself
                    relative = self.relative(entry.url)
                    if relative is None or not relative:
                        continue
                    if entry.collection:
                        target = entry.url if entry.url.endswith("/") else entry.url + "/"
                        if target not in seen:
                            seen.add(target)
                            queue.append(target)
                        continue
                    if not supported(Path(relative)):
                        continue
                    if run.fetched + run.unchanged >= self.settings.crawl_max_pages:
                        run.complete = False
                        if relative in known:
                            kept.add(relative)
                        continue
                    self._file(client, entry, relative, known.get(relative), run)
                    if relative in known or (self.mirror.root / relative).is_file():
                        kept.add(relative)
        if run.complete:
            held = [rel for rel in known if not any(_under(rel, top) for top in unlisted)]
            run.removed = drop_missing(self.mirror, held, kept, self.url, self.allow_mass_delete)
        return run

    def _list(
        self, client: httpx.Client, collection: str, run: Listing, *, first: bool
    ) -> list[Entry] | None:
        where = self.url if first else collection
        try:
            response = self._propfind(client, collection)
        except httpx.HTTPError as exc:
            if first:
                raise down(where, exc) from None
            problem = f"cannot be listed ({reason(exc)}); its copies are kept"
            run.failed.append({"source": collection, "error": problem})
            run.complete = False
            return None
        if response.status_code != 207:
            if first:
                raise down(where, response.status_code)
            problem = f"cannot be listed (HTTP {response.status_code}); its copies are kept"
            run.failed.append({"source": collection, "error": problem})
            run.complete = False
            return None
        try:
            return parse_multistatus(response.content, collection)
        except ValueError as exc:
            if first:
                raise IngestError(f"{where}: {exc}; nothing was changed") from None
            run.failed.append({"source": collection, "error": str(exc)})
            run.complete = False
            return None

    def _file(
        self,
        client: httpx.Client,
        entry: Entry,
        relative: str,
        state: dict | None,
        run: Listing,
    ) -> None:
        """Fetch one file unless its ETag says the copy is current."""
        if state and entry.etag and _same_etag(state.get("etag"), entry.etag):
            run.unchanged += 1
            return
        limit = int(self.settings.max_file_mb * 2**20)
        if entry.size is not None and entry.size > limit:
            run.failed.append(
                {
                    "source": entry.url,
                    "error": f"over the {self.settings.max_file_mb:g} MB limit "
                    "(TAIMATSU_MAX_FILE_MB); its copy is kept",
                }
            )
            return
        try:
            response = client.get(entry.url)
        except httpx.HTTPError as exc:
            problem = f"cannot be fetched ({reason(exc)}); its copy is kept"
            run.failed.append({"source": entry.url, "error": problem})
            run.complete = False
            return
        if response.status_code != 200:
            problem = f"HTTP {response.status_code}; its copy is kept"
            run.failed.append({"source": entry.url, "error": problem})
            run.complete = False
            return
        # cited by its http(s) URL, which a browser opens
        # the listing's ETag, which the next listing is compared with (a server may quote
        # it differently in a GET's header)
        state = {"url": entry.url, "etag": entry.etag or response.headers.get("etag", "")}
        self.mirror.write(relative, response.content, state)
        run.fetched += 1


def _same_etag(one: object, other: str) -> bool:
    def bare(tag: str) -> str:
        return tag.strip().removeprefix("W/").strip('"')

    return isinstance(one, str) and bool(one) and bare(one) == bare(other)


def _under(relative: str, folder: str) -> bool:
    return not folder or relative.startswith(folder.rstrip("/") + "/")
