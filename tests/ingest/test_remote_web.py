"""Intranet sites: `taimatsu ingest http://host/path/` against a real nginx the tests start
on 127.0.0.1, serving pages of the Python tutorial (tests/data/site). What the crawler
asked for is read from nginx's own access log: the paths, and 200 against 304."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.errors import IngestRefused, SourceDown
from assistant.index import open_index
from assistant.retrieval import Searcher
from ingest.pipeline import Ingestor
from ingest.remote import source_for
from tests.conftest import CACHE_ENV, ROOT, need_binary
from ui.cli.main import app as cli_app

SITE = ROOT / "tests" / "data" / "site"
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Nginx:
    """Debian's nginx as the current user: its config, pid, logs and pages in `home`."""

    def __init__(self, home: Path, port: int | None = None, extra: str = "") -> None:
        # /usr/sbin is not on every user's PATH
        self.binary = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
        self.binary = self.binary or need_binary("nginx")
        self.home = home
        self.www = home / "www"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shutil.copytree(SITE, self.www)
        sitemap = self.www / "docs" / "tutorial" / "sitemap.xml"
        sitemap.write_text(sitemap.read_text().replace("PREFIX", self.url))
        (self.www / "robots.txt").write_text(
            "User-agent: *\nDisallow: /docs/tutorial/whatnow.html\n"
        )
        (home / "htpasswd").write_text("staff:{PLAIN}open-sesame\n")
        temp = home / "temp"
        temp.mkdir()
        (home / "nginx.conf").write_text(
            f"""
daemon off;
master_process off;
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {home}/access.log;
    types {{ text/html html; application/xml xml; text/plain txt; }}
    default_type application/octet-stream;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.www};
        {extra}
        location = /moved/ {{ return 302 /sign-in?next=/moved/; }}
        location /private/ {{
            auth_basic "staff";
            auth_basic_user_file {home}/htpasswd;
            location = /private/rota-archive.html {{ return 500; }}
        }}
    }}
}}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        conf, log = self.home / "nginx.conf", self.home / "error.log"
        self.process = subprocess.Popen(
            [self.binary, "-c", str(conf), "-p", str(self.home), "-e", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:  # ready once it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    _, err = self.process.communicate()
                    raise RuntimeError(f"nginx did not start: {err!r} {log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def mark(self) -> int:
        """A point in the access log: `requests(mark)` gives what came after it."""
        log = self.home / "access.log"
        return log.stat().st_size if log.exists() else 0

    def requests(self, since: int = 0) -> list[tuple[str, int]]:
        """(path, status) of every request since `since`, in order."""
        with open(self.home / "access.log", "rb") as log:
            log.seek(since)
            text = log.read().decode()
        return [(m["path"], int(m["status"])) for m in _LOG_LINE.finditer(text)]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory) -> Iterator[Nginx]:
    server = Nginx(tmp_path_factory.mktemp("nginx")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"parse_timeout": 0, "crawl_delay": 0})


def crawl(settings, cached, url: str, **flags):
    remote = source_for(settings, url, allow_mass_delete=flags.get("allow_mass_delete", False))
    return Ingestor(settings, cached, **flags).run(remote.mirror.root, remote=remote)


def pages(requests: list[tuple[str, int]], status: int) -> set[str]:
    return {path for path, code in requests if code == status and path.endswith(".html")}


def test_a_site_is_crawled_within_its_prefix_and_unchanged_pages_are_not_downloaded(
    nginx, settings, cached
):
    start = f"{nginx.url}/docs/tutorial/"
    mark = nginx.mark()
    first = crawl(settings, cached, start)
    asked = nginx.requests(mark)
    tutorial = {
        "/docs/tutorial/",
        "/docs/tutorial/appetite.html",
        "/docs/tutorial/interpreter.html",
        "/docs/tutorial/release-notes.html",  # only in the site map
    }
    assert {path for path, code in asked if code == 200} >= tutorial
    assert first.added == 4 and not first.failed, first
    assert first.url == start and "docs/tutorial" in first.line() and "http://" in first.line()
    # nothing outside the prefix (the Sphinx pages link ../index.html, the site map lists
    # /docs/index.html), and nothing robots.txt disallows (whatnow.html, linked by index)
    paths = {path for path, _ in asked}
    assert all(p.startswith("/docs/tutorial/") for p in paths - {"/robots.txt"}), paths
    assert "/docs/tutorial/whatnow.html" not in paths and "/docs/index.html" not in paths

    # a crawled page is searchable, and cited by its URL
    hits = Searcher(settings, cached).search("When does the badge office issue badges?", ["x"])
    assert hits and hits[0].url == f"{start}release-notes.html"
    assert hits[0].where.startswith(f"{start}release-notes.html")
    assert "everyone" in open_index(settings).manifest(first.root)["release-notes.html"].groups

    # the second run asks again with If-None-Match: every page answers 304, none is sent
    mark = nginx.mark()
    second = crawl(settings, cached, start)
    asked = nginx.requests(mark)
    assert pages(asked, 200) == set() and "/docs/tutorial/" not in pages(asked, 200)
    assert len([p for p, code in asked if code == 304]) == 4, asked
    assert (second.unchanged, second.added, second.updated, second.chunks_embedded) == (4, 0, 0, 0)

    # a changed page is downloaded and re-indexed; the others stay 304
    page = nginx.www / "docs" / "tutorial" / "appetite.html"
    html = page.read_text(encoding="utf-8")
    page.write_text(
        html.replace(
            "</h1>",
            "</h1><p>The canteen serves okonomiyaki every second Thursday of the month.</p>",
            1,
        ),
        encoding="utf-8",
    )
    os.utime(page, (time.time() + 5, time.time() + 5))  # a new Last-Modified and ETag
    mark = nginx.mark()
    third = crawl(settings, cached, start)
    asked = nginx.requests(mark)
    assert pages(asked, 200) == {"/docs/tutorial/appetite.html"}, asked
    assert (third.updated, third.unchanged) == (1, 3)
    hits = Searcher(settings, cached).search("okonomiyaki canteen Thursday", ["x"])
    assert hits[0].url == f"{start}appetite.html"

    # a page gone from the site (404, no longer linked) leaves the copy and the index
    (nginx.www / "docs" / "tutorial" / "interpreter.html").unlink()
    fourth = crawl(settings, cached, start)
    assert fourth.deleted == 1 and not fourth.failed
    assert "interpreter.html" not in open_index(settings).manifest(fourth.root)
    assert not (Path(fourth.root) / "interpreter.html").exists()
    page.write_text(html, encoding="utf-8")  # the module's other tests see the site as it was
    shutil.copy(SITE / "docs" / "tutorial" / "interpreter.html", page.parent)


def test_a_site_that_is_down_changes_nothing(settings, cached, tmp_path):
    server = Nginx(tmp_path / "down").start()
    start = f"{server.url}/docs/tutorial/"
    try:
        assert crawl(settings, cached, start).added == 4
        with pytest.raises(SourceDown, match="redirects to .*/sign-in.*nothing was changed"):
            crawl(settings, cached, f"{server.url}/moved/")  # a sign-in page
    finally:
        server.stop()
    index = open_index(settings)
    root = str(source_for(settings, start).mirror.root)
    before = index.manifest(root)
    copy = sorted(p.relative_to(root) for p in Path(root).rglob("*"))
    with pytest.raises(SourceDown, match="cannot be reached .*nothing was changed"):
        crawl(settings, cached, start)
    assert index.manifest(root) == before
    assert sorted(p.relative_to(root) for p in Path(root).rglob("*")) == copy
    # and a start page that fails (a server error) stops the run as well
    failing = "location /docs/ { return 503; }"
    server = Nginx(tmp_path / "failing", port=server.port, extra=failing).start()
    try:
        with pytest.raises(SourceDown, match=r"failed \(HTTP 503\).*nothing was changed"):
            crawl(settings, cached, start)
    finally:
        server.stop()
    assert index.manifest(root) == before


def test_credentials_come_from_a_file_and_one_bad_page_is_reported(
    nginx, settings, cached, tmp_path, monkeypatch
):
    monkeypatch.setattr("ingest.pipeline.Embedder", lambda *args, **kwargs: cached)
    start = f"{nginx.url}/private/"
    env = {k: None for k in os.environ if k.startswith("TAIMATSU_")}
    env.update(
        TAIMATSU_DATA_DIR=str(settings.data_dir),
        TAIMATSU_PARSE_TIMEOUT="0",
        TAIMATSU_CRAWL_DELAY="0",
    )
    refused = CliRunner().invoke(cli_app, ["ingest", start], env=env)
    assert refused.exit_code == 1, refused.output
    assert (
        "refused access (HTTP 401)" in refused.output
        and "TAIMATSU_SOURCE_CREDENTIALS" in refused.output
    )
    assert not open_index(settings).exists() or not open_index(settings).roots()

    secrets = tmp_path / "credentials.toml"
    secrets.write_text(f'["{nginx.url}/private/"]\nusername = "staff"\npassword = "open-sesame"\n')
    secrets.chmod(0o600)
    env["TAIMATSU_SOURCE_CREDENTIALS"] = str(secrets)
    done = CliRunner().invoke(cli_app, ["ingest", start], env=env)
    assert done.exit_code == 3, done.output  # finished, one page failed
    assert f"{start}: 2 added" in done.output
    assert f"failed: {start}rota-archive.html: HTTP 500" in done.output
    assert "open-sesame" not in done.output
    status = CliRunner().invoke(cli_app, ["status", "--json"], env=env)
    sources = __import__("json").loads(status.output)["ingest"]["sources"]
    assert [s.get("url") for s in sources.values()] == [start]


def test_a_crawl_that_finds_most_pages_gone_deletes_nothing_without_the_flag(
    nginx, settings, cached
):
    folder = nginx.www / "many"
    folder.mkdir()
    names = [f"memo-{n:02d}.html" for n in range(21)]
    for n, name in enumerate(names):
        (folder / name).write_text(
            f"<html><body><main><p>Memo {n}: room {n}.</p></main></body></html>"
        )
    links = "".join(f'<a href="{name}">{name}</a> ' for name in names)
    (folder / "index.html").write_text(
        f"<html><body><main><p>Memos: {links}</p></main></body></html>"
    )
    start = f"{nginx.url}/many/"
    assert crawl(settings, cached, start).added == 22
    root = str(source_for(settings, start).mirror.root)
    before = open_index(settings).manifest(root)
    # the site now serves a start page that links to nothing (a broken CMS template)
    (folder / "index.html").write_text(
        "<html><body><main><p>Under maintenance.</p></main></body></html>"
    )
    with pytest.raises(IngestRefused, match="21 of the 22 copied before are gone.*deleted nothing"):
        crawl(settings, cached, start)
    assert set(open_index(settings).manifest(root)) == set(before)
    assert all((Path(root) / name).is_file() for name in names)
    done = crawl(settings, cached, start, allow_mass_delete=True)
    assert (done.deleted, done.updated) == (21, 1)
    assert not any((Path(root) / name).exists() for name in names)


def test_only_a_copy_taimatsu_made_names_urls(settings, cached, tmp_path):
    """A share that holds its own `.taimatsu-mirror/` cannot put links in citations."""
    share = tmp_path / "share"
    (share / ".taimatsu-mirror" / "items").mkdir(parents=True)
    (share / "policy.md").write_text("# Policy\n\nExpense claims need a receipt.\n")
    (share / ".taimatsu-mirror" / "origin.json").write_text('{"url": "https://evil.example/"}')
    (share / ".taimatsu-mirror" / "items" / "policy.md.json").write_text(
        '{"url": "https://evil.example/login"}'
    )
    summary = Ingestor(settings, cached).run(share)
    assert summary.added == 1 and summary.url == ""
    hits = Searcher(settings, cached).search("Do expense claims need a receipt?", ["x"])
    assert hits[0].source == "policy.md" and hits[0].url == ""
    assert hits[0].where == "policy.md, § Policy"


def test_a_crawl_killed_midway_is_finished_by_the_next_run(nginx, settings, cached, tmp_path):
    """SIGKILL while the site is being copied (watched: the copy's item files appear),
    then an ordinary run: the copy holds whole pages only, and the index ends as a fresh
    crawl builds it. (A kill while the copy is ingested is the folder's, tested in
    test_crash.py.)"""
    start = f"{nginx.url}/docs/tutorial/"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_") or k == CACHE_ENV}
    env.update(
        TAIMATSU_DATA_DIR=str(settings.data_dir),
        TAIMATSU_PARSE_TIMEOUT="0",
        TAIMATSU_CRAWL_DELAY="0.3",  # a polite crawl: several requests after the kill point
    )
    # the crawl alone, in a process of its own (what a run does before it ingests the copy)
    crawler = (
        "import sys; from assistant.settings import Settings; "
        "from ingest.remote import source_for; source_for(Settings(), sys.argv[1]).refresh()"
    )
    run = subprocess.Popen([sys.executable, "-c", crawler, start], env=env)
    mirror = source_for(settings, start).mirror
    deadline = time.monotonic() + 120
    while len(list(mirror.states())) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(30) == -signal.SIGKILL, "the crawl ended before it could be killed"
    served = nginx.www / "docs" / "tutorial"
    copied = dict(mirror.states())
    assert 2 <= len(copied) < 4
    for relative in copied:  # every page in the copy is whole
        source = served / ("index.html" if relative == "index.html" else relative)
        assert mirror.read(relative) == source.read_bytes()

    finished = crawl(settings, cached, start)
    assert not finished.failed and not list(Path(finished.root).rglob(".tmp-*"))
    fresh = settings.model_copy(update={"data_dir": tmp_path / "fresh"})
    crawl(fresh, cached, start)
    built = open_index(fresh).manifest(str(source_for(fresh, start).mirror.root))
    after = open_index(settings).manifest(finished.root)
    assert {s: i.hashes for s, i in after.items()} == {s: i.hashes for s, i in built.items()}
    assert len(after) == 4
