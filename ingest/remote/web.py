"""An intranet site, crawled into its mirror (ingest/remote/mirror.py).

`taimatsu ingest https://host/docs/` fetches the pages under that prefix only (same
scheme, host and port; the path starts with the start URL's folder), following `<a href>`
links and the site's `sitemap.xml` (the prefix's own, and those robots.txt names), within
TAIMATSU_CRAWL_MAX_DEPTH link steps and TAIMATSU_CRAWL_MAX_PAGES documents, one request
at a time, TAIMATSU_CRAWL_DELAY seconds apart (or robots.txt's Crawl-delay, when longer).
robots.txt is obeyed for TAIMATSU_CRAWL_USER_AGENT, and so are `<meta name=robots>`
noindex (not stored) and nofollow (links not followed). Pages come back conditionally
(If-None-Match, If-Modified-Since): an unchanged page costs a 304, and its links are read
from the copy. HTML, text, Markdown, PDF and Office files are stored, each under the path
its URL has below the prefix; the HTML parser removes the site's navigation later.

A site that is down deletes nothing: robots.txt or the start page unreachable, refused
(401, 403) or failing (5xx) stop the run (SourceDown) before the copy or the index
change. A page that fails later is reported and keeps its copy. Pages are dropped from
the copy (a 404, or no longer linked) only after a crawl that completed — no failure, no
page limit reached — and, like a folder's, not most of them at once without
`--allow-mass-delete`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urldefrag, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import httpx
from bs4 import BeautifulSoup

from assistant.errors import IngestError, SourceDown
from assistant.settings import Settings
from ingest.parsing import supported
from ingest.remote.common import down, drop_missing, http_client, reason
from ingest.remote.mirror import Mirror, safe_relative

log = logging.getLogger(__name__)

# What a response's Content-Type is stored as, when its URL's extension does not say.
TYPE_SUFFIX = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/csv": ".csv",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "message/rfc822": ".eml",
}
HTML = ".html"
# URL extensions worth a request though no parser is named by them: they serve HTML.
DYNAMIC = {"", ".php", ".asp", ".aspx", ".jsp", ".cgi", ".shtml", ".xhtml", ".htm", ".html"}
REDIRECTS = {301, 302, 303, 307, 308}
_LOC = re.compile(rb"<loc>\s*([^<\s]+)\s*</loc>", re.IGNORECASE)


@dataclass
class Crawl:
    """What a crawl did (for the run's summary and the tests)."""

    fetched: int = 0  # 200: stored anew
    unchanged: int = 0  # 304: the copy is current
    removed: int = 0
    complete: bool = True
    failed: list[dict[str, str]] = field(default_factory=list)


def normalize(url: str) -> str:
    """Without its fragment, scheme and host in lower case."""
    url, _ = urldefrag(url)
    parts = urlsplit(url)
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, "")
    )


class Site:
    """One site's crawl into its mirror."""

    def __init__(self, settings: Settings, url: str, *, allow_mass_delete: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise IngestError(f"{url} is not an http(s) URL; give one like https://host/docs/")
        self.settings = settings
        self.start = normalize(url)
        self.prefix = self.start[: self.start.rfind("/") + 1]
        if urlsplit(self.prefix).query:
            self.prefix = urlunsplit(urlsplit(self.prefix)._replace(query=""))
        self.url = self.start
        self.allow_mass_delete = allow_mass_delete
        self.mirror = Mirror.for_url(settings.data_dir, self.start)
        self.delay = settings.crawl_delay
        self._last_request = 0.0

    # -- scope and names --------------------------------------------------------------

    def in_scope(self, url: str) -> bool:
        return url.startswith(self.prefix)

    def relative(self, url: str, suffix: str) -> str:
        """Where the copy of `url` lives in the mirror: its path below the prefix, with
        `index.html` for a folder, the stored type's extension when the URL lacks it, and
        a hash of the query string when there is one."""
        parts = urlsplit(url)
        path = unquote(parts.path[len(urlsplit(self.prefix).path) :])
        if not path or path.endswith("/"):
            path += "index" + suffix
        if PurePosixPath(path).suffix.lower() != suffix:
            path += suffix
        if parts.query:
            tag = hashlib.sha256(parts.query.encode("utf-8")).hexdigest()[:10]
            path = f"{path[: -len(suffix)]}-q{tag}{suffix}"
        return safe_relative(path)

    @staticmethod
    def worth_fetching(url: str) -> bool:
        suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()
        return suffix in DYNAMIC or supported(Path(f"x{suffix}"))

    # -- HTTP ---------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        return http_client(self.settings, self.start)

    def _get(self, client: httpx.Client, url: str, headers: dict[str, str] | None = None):
        wait = self._last_request + self.delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # politeness towards the site, not a test's timing
        try:
            with client.stream("GET", url, headers=headers or {}) as response:
                limit = int(self.settings.max_file_mb * 2**20)
                body = bytearray()
                if response.status_code == 200:
                    for piece in response.iter_bytes():
                        body += piece
                        if len(body) > limit:
                            raise IngestError(
                                f"over the {self.settings.max_file_mb:g} MB limit "
                                "(TAIMATSU_MAX_FILE_MB)"
                            )
                return response, bytes(body)
        finally:
            self._last_request = time.monotonic()

    def _robots(self, client: httpx.Client) -> RobotFileParser:
        parts = urlsplit(self.start)
        robots_url = urlunsplit((parts.scheme, parts.netloc, "/robots.txt", "", ""))
        robots = RobotFileParser(robots_url)
        try:
            response, body = self._get(client, robots_url)
        except httpx.HTTPError as exc:
            raise down(self.start, exc) from None
        if response.status_code in (401, 403) or response.status_code >= 500:
            raise down(robots_url, response.status_code)
        if response.status_code == 200:
            robots.parse(body.decode("utf-8", "replace").splitlines())
        else:  # no robots.txt (404...): everything is allowed
            robots.parse([])
        return robots

    def _sitemap_urls(
        self, client: httpx.Client, robots: RobotFileParser, crawl: Crawl
    ) -> list[str]:
        maps = [self.prefix + "sitemap.xml"]
        maps += [normalize(m) for m in robots.site_maps() or [] if normalize(m) not in maps]
        found: list[str] = []
        seen_maps: set[str] = set()
        while maps and len(seen_maps) < 50:
            sitemap = maps.pop(0)
            if sitemap in seen_maps:
                continue
            seen_maps.add(sitemap)
            try:
                response, body = self._get(client, sitemap)
            except (httpx.HTTPError, IngestError) as exc:
                why = reason(exc) if isinstance(exc, httpx.HTTPError) else str(exc)
                crawl.failed.append({"source": sitemap, "error": f"cannot be read ({why})"})
                crawl.complete = False
                continue
            if response.status_code != 200:
                if response.status_code >= 500:
                    crawl.complete = False
                continue
            for loc in _LOC.findall(body):
                url = normalize(loc.decode("utf-8", "replace").replace("&amp;", "&"))
                if b"<sitemapindex" in body[:2000]:
                    maps.append(url)
                elif self.in_scope(url):
                    found.append(url)
        return found

    # -- the crawl ------------------------------------------------------------------------

    def refresh(self) -> Crawl:
        """Bring the mirror in line with the site; raises SourceDown (nothing changed)
        when the site cannot be crawled at all, IngestRefused when it would drop most of
        the copy."""
        crawl = Crawl()
        known = {state["url"]: (rel, state) for rel, state in self.mirror.states()}
        with self.client() as client:
            robots = self._robots(client)
            agent = self.settings.crawl_user_agent
            self.delay = max(self.settings.crawl_delay, float(robots.crawl_delay(agent) or 0))
            if not robots.can_fetch(agent, self.start):
                raise IngestError(
                    f"the site's robots.txt does not let {agent!r} fetch {self.start}; "
                    "nothing was changed; ask its administrators to allow it "
                    "(or set TAIMATSU_CRAWL_USER_AGENT to the name they allow)"
                )
            queue: deque[tuple[str, int]] = deque([(self.start, 0)])
            queued = {self.start}
            kept: set[str] = set()  # mirror paths still on the site
            first = True
            while queue:
                if crawl.fetched + crawl.unchanged >= self.settings.crawl_max_pages:
                    crawl.complete = False  # the rest is kept, not dropped
                    log.info("page limit %d reached", self.settings.crawl_max_pages)
                    break
                url, depth = queue.popleft()
                links = self._visit(client, url, known, kept, crawl, first=first)
                if first:
                    self.mirror.set_origin(self.start)
                    first = False
                    for extra in self._sitemap_urls(client, robots, crawl):
                        links.append(extra)
                for link in links:
                    if link in queued or not self.in_scope(link):
                        continue
                    if depth + 1 > self.settings.crawl_max_depth:
                        continue
                    if not self.worth_fetching(link) or not robots.can_fetch(agent, link):
                        continue
                    queued.add(link)
                    queue.append((link, depth + 1))
        if crawl.complete:
            held = [rel for rel, _ in known.values()]
            allow = self.allow_mass_delete
            crawl.removed = drop_missing(self.mirror, held, kept, self.start, allow)
        return crawl

    def _visit(
        self,
        client: httpx.Client,
        url: str,
        known: dict[str, tuple[str, dict]],
        kept: set[str],
        crawl: Crawl,
        *,
        first: bool,
    ) -> list[str]:
        """Fetch one URL (conditionally when its copy is known); store it; its links. A
        URL whose copy this crawl already stored (`docs/` and `docs/index.html`) is the
        same page: it is not fetched again."""
        suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()
        if url.endswith("/") or suffix in (".html", ".htm"):
            if self.relative(url, HTML) in kept:
                return []
        previous = known.get(url)
        headers = {}
        if previous:
            if previous[1].get("etag"):
                headers["If-None-Match"] = previous[1]["etag"]
            if previous[1].get("last_modified"):
                headers["If-Modified-Since"] = previous[1]["last_modified"]
        try:
            response, body = self._get(client, url, headers)
        except httpx.HTTPError as exc:
            if first:
                raise down(url, exc) from None
            crawl.failed.append({"source": url, "error": f"cannot be fetched ({reason(exc)})"})
            crawl.complete = False
            if previous:
                kept.add(previous[0])
            return []
        except IngestError as exc:  # too large
            crawl.failed.append({"source": url, "error": str(exc)})
            if previous:
                kept.add(previous[0])
            return []
        status = response.status_code
        if status in REDIRECTS:
            target = response.headers.get("location")
            target = normalize(urljoin(url, target)) if target else ""
            if first and not self.in_scope(target):  # a sign-in page, a moved site
                raise SourceDown(
                    f"{url} redirects to {target or 'nowhere'}, outside {self.prefix}; "
                    "nothing was changed; give the URL it moved to, or credentials "
                    "(TAIMATSU_SOURCE_CREDENTIALS) if that is a sign-in page"
                )
            return [target] if target else []
        if status == 304 and previous:
            rel = previous[0]
            kept.add(rel)
            crawl.unchanged += 1
            if rel.endswith(HTML):
                return self._links(url, self.mirror.read(rel))
            return []
        if status != 200:
            if first:
                raise down(url, status)
            if status in (404, 410):
                return []  # gone: dropped once the crawl completes
            crawl.failed.append({"source": url, "error": f"HTTP {status}; its copy is kept"})
            crawl.complete = False
            if previous:
                kept.add(previous[0])
            return []
        suffix = self._suffix(url, response.headers.get("content-type", ""))
        if suffix is None:
            return []  # not a document (an image, a stylesheet...)
        links: list[str] = []
        store = True
        if suffix == HTML:
            soup = BeautifulSoup(body, "html.parser")
            meta = soup.find("meta", attrs={"name": re.compile("^robots$", re.I)})
            directives = str(meta.get("content", "")).lower() if meta else ""
            store = "noindex" not in directives
            if "nofollow" not in directives:
                links = self._links(url, body, soup)
        if not store:
            return links
        rel = self.relative(url, suffix)
        if previous and previous[0] != rel:
            self.mirror.remove(previous[0])
        state = {"url": url, "type": suffix}
        for header, key in (("etag", "etag"), ("last-modified", "last_modified")):
            if response.headers.get(header):
                state[key] = response.headers[header]
        self.mirror.write(rel, body, state)
        kept.add(rel)
        crawl.fetched += 1
        return links

    @staticmethod
    def _suffix(url: str, content_type: str) -> str | None:
        mime = content_type.split(";", 1)[0].strip().lower()
        from_url = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()
        if mime in ("text/html", "application/xhtml+xml"):
            return HTML
        if from_url and supported(Path(f"x{from_url}")):
            return from_url
        return TYPE_SUFFIX.get(mime)

    def _links(self, url: str, body: bytes, soup: BeautifulSoup | None = None) -> list[str]:
        soup = soup or BeautifulSoup(body, "html.parser")
        base = url
        tag = soup.find("base", href=True)
        if tag is not None:
            base = urljoin(url, str(tag["href"]))
        links = []
        for anchor in soup.find_all(["a", "area"], href=True):
            if "nofollow" in (anchor.get("rel") or []):
                continue
            href = str(anchor["href"]).strip()
            target = normalize(urljoin(base, href))
            if target.startswith(("http://", "https://")):
                links.append(target)
        return links
