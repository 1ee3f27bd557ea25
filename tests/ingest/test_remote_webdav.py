"""WebDAV stores: `taimatsu ingest webdav://host/path/` against a real WsgiDAV server the
tests start on 127.0.0.1 (a thread), sharing a folder with Basic authentication. The
requests the server answered are recorded by a WSGI layer around it (method, path,
status), which shows that an unchanged file is not fetched again."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from assistant.errors import SourceDown
from assistant.index import open_index
from assistant.retrieval import Searcher
from ingest.pipeline import Ingestor
from ingest.remote import source_for
from tests.conftest import serve_wsgi

wsgidav_app = pytest.importorskip("wsgidav.wsgidav_app", reason="pip install -e .[test]")

FILES = {
    "handbook/leave.md": "# Annual leave\n\nEvery employee has 24 days of annual leave a "
    "year; up to 5 unused days carry over to March.\n",
    "handbook/expenses.txt": "Travel expenses are claimed within 30 days with the "
    "receipts scanned into the expense tool.\n",
    "handbook/notes/minutes.html": "<html><body><main><h1>Safety committee minutes</h1>"
    "<p>The fire drill moves to the first Tuesday of October.</p></main></body></html>",
    "handbook/logo.png": "not a document",
    "handbook/.draft.md": "# Hidden draft\n\nNever listed.\n",
}


@contextmanager
def dav_server(
    folder: Path, requests: list[tuple[str, str, int]], failing: set[str] | None = None
) -> Iterator[str]:
    """WsgiDAV sharing `folder` at /dav/ for user staff (Basic auth); yields its URL.
    Requests for the paths in `failing` get a 500, as from a broken back end."""
    failing = set() if failing is None else failing
    app = wsgidav_app.WsgiDAVApp(
        {
            "host": "127.0.0.1",
            "port": 0,
            "provider_mapping": {"/dav": str(folder)},
            "http_authenticator": {
                "domain_controller": None,  # the simple one, from simple_dc
                "accept_basic": True,
                "accept_digest": False,
                "default_to_digest": False,
            },
            "simple_dc": {"user_mapping": {"*": {"staff": {"password": "open-sesame"}}}},
            "verbose": 0,
            "logging": {"enable_loggers": []},
        }
    )

    def recorded(environ: dict[str, Any], start_response: Any) -> Any:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]  # before WsgiDAV's
        if path in failing:
            requests.append((method, path, 500))
            start_response("500 Internal Server Error", [("Content-Length", "0")])
            return [b""]

        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            requests.append((method, path, int(status[:3])))
            return start_response(status, headers, exc_info)

        return app(environ, start)

    with contextmanager(serve_wsgi)(recorded) as url:
        yield url


def make_store(folder: Path) -> Path:
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def settings(settings, tmp_path):
    secrets = tmp_path / "credentials.toml"
    secrets.write_text('["webdav://127.0.0.1"]\nusername = "staff"\npassword = "open-sesame"\n')
    secrets.chmod(0o600)
    return settings.model_copy(update={"parse_timeout": 0, "source_credentials": secrets})


def ingest(settings, cached, url: str, **flags):
    remote = source_for(settings, url, allow_mass_delete=flags.get("allow_mass_delete", False))
    return Ingestor(settings, cached, **flags).run(remote.mirror.root, remote=remote)


def test_a_store_is_listed_with_propfind_and_fetched_by_etag(settings, cached, tmp_path):
    requests: list[tuple[str, str, int]] = []
    failing: set[str] = set()
    store = make_store(tmp_path / "share")
    with dav_server(store, requests, failing) as server:
        url = f"{server.replace('http', 'webdav', 1)}/dav/handbook/"
        first = ingest(settings, cached, url)
        assert first.added == 3 and not first.failed, first
        assert first.url == url
        gets = sorted(path for method, path, code in requests if method == "GET" and code == 200)
        assert gets == [
            "/dav/handbook/expenses.txt",
            "/dav/handbook/leave.md",
            "/dav/handbook/notes/minutes.html",
        ]  # neither the picture nor the hidden draft
        assert {p for m, p, _ in requests if m == "PROPFIND"} >= {"/dav/handbook/notes/"}

        hits = Searcher(settings, cached).search("How many days of annual leave?", ["x"])
        assert hits[0].url == f"{server}/dav/handbook/leave.md"
        assert hits[0].where.startswith(f"{server}/dav/handbook/leave.md")

        # again: the ETags in the listing say nothing changed, so nothing is fetched
        del requests[:]
        second = ingest(settings, cached, url)
        assert [r for r in requests if r[0] == "GET"] == []
        assert (second.unchanged, second.chunks_embedded) == (3, 0)

        # a changed file is fetched alone and re-indexed; a deleted one leaves the index
        leave = store / "handbook" / "leave.md"
        leave.write_text(FILES["handbook/leave.md"].replace("24 days", "26 days"), "utf-8")
        os.utime(leave, (time.time() + 5, time.time() + 5))
        (store / "handbook" / "expenses.txt").unlink()
        del requests[:]
        third = ingest(settings, cached, url)
        assert [p for m, p, _ in requests if m == "GET"] == ["/dav/handbook/leave.md"]
        assert (third.updated, third.deleted, third.unchanged) == (1, 1, 1)
        manifest = open_index(settings).manifest(third.root)
        assert sorted(manifest) == ["leave.md", "notes/minutes.html"]
        hits = Searcher(settings, cached).search("How many days of annual leave?", ["x"])
        assert "26 days" in hits[0].text

        # a sub-collection that cannot be listed is reported, and nothing under it (nor,
        # the listing being incomplete, anything else) leaves the copy or the index
        failing.add("/dav/handbook/notes/")
        leave.unlink()
        fourth = ingest(settings, cached, url)
        assert [f["source"] for f in fourth.failed] == [f"{server}/dav/handbook/notes/"]
        assert "cannot be listed (HTTP 500)" in fourth.failed[0]["error"]
        assert open_index(settings).manifest(third.root) == manifest
        leave.write_text(FILES["handbook/leave.md"].replace("24 days", "26 days"), "utf-8")
        failing.clear()

        # wrong credentials: the run stops, the copy and the index keep what they had
        settings.source_credentials.write_text(
            '["webdav://127.0.0.1"]\nusername = "staff"\npassword = "expired"\n'
        )
        with pytest.raises(SourceDown, match=r"refused access \(HTTP 401\).*nothing was changed"):
            ingest(settings, cached, url)
        assert open_index(settings).manifest(third.root) == manifest

    # the server is gone: the same
    with pytest.raises(SourceDown, match="cannot be reached .*nothing was changed"):
        ingest(settings, cached, url)
    assert open_index(settings).manifest(third.root) == manifest
    assert (Path(third.root) / "leave.md").is_file()
