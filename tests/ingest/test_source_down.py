"""A source that is down deletes nothing: a vanished folder, an empty mount point, a
half-listed share or an unreadable folder stop the run (or keep what they hide), and a
mass deletion takes `--allow-mass-delete`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.errors import IngestError, IngestRefused
from assistant.index import open_index
from ingest.listing import MASS_DELETE_MIN, Listing
from ingest.pipeline import Ingestor
from tests.conftest import ROOT, need_binary
from ui.cli.main import app as cli_app


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"parse_timeout": 0})


def make_share(root: Path, count: int) -> Path:
    for n in range(count):
        folder = root / ("team" if n % 2 else "all")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"note-{n:02d}.md").write_text(f"# Note {n}\n\nMemo number {n}.\n", "utf-8")
    return root


def documents(settings, root: Path) -> set[str]:
    return set(open_index(settings).manifest(str(root.resolve())))


def test_an_empty_mount_point_deletes_nothing_without_the_flag(
    settings, cached, tmp_path, monkeypatch
):
    share = make_share(tmp_path / "share", 4)
    assert Ingestor(settings, cached).run(share).added == 4
    before = documents(settings, share)
    hidden = tmp_path / "elsewhere"
    shutil.move(share, hidden)  # unmounted: the mount point is an empty folder
    share.mkdir()
    with pytest.raises(IngestRefused, match="lists 0 documents and none of the 4 indexed"):
        Ingestor(settings, cached).run(share)
    assert documents(settings, share) == before
    # nor does a rebuild, which fills a new index and compares it with the one it replaces
    monkeypatch.setattr("ingest.pipeline.Embedder", lambda *args, **kwargs: cached)
    env = {k: None for k in os.environ if k.startswith("TAIMATSU_")}
    env.update(TAIMATSU_DATA_DIR=str(settings.data_dir), TAIMATSU_PARSE_TIMEOUT="0")
    rebuilt = CliRunner().invoke(cli_app, ["reindex"], env=env)
    assert rebuilt.exit_code == 1 and "lists 0 documents" in rebuilt.stderr
    assert documents(settings, share) == before
    shutil.rmtree(share)
    with pytest.raises(IngestError, match="holds 4 documents from it"):
        Ingestor(settings, cached).run(share)  # the mount point itself is gone
    assert documents(settings, share) == before
    share.mkdir()
    summary = Ingestor(settings, cached, allow_mass_delete=True).run(share)
    assert summary.deleted == 4 and documents(settings, share) == set()


def test_a_half_listed_share_stops_past_half(settings, cached, tmp_path):
    share = make_share(tmp_path / "share", MASS_DELETE_MIN)
    Ingestor(settings, cached).run(share)
    away = tmp_path / "away"
    away.mkdir()
    for path in sorted(share.rglob("*.md"))[: MASS_DELETE_MIN // 2 + 1]:
        shutil.move(path, away / path.name)
    with pytest.raises(IngestRefused, match=f"11 of the {MASS_DELETE_MIN} indexed"):
        Ingestor(settings, cached).run(share)
    assert len(documents(settings, share)) == MASS_DELETE_MIN
    back = sorted(away.iterdir())[0]
    shutil.move(back, share / "all" / back.name)  # half gone is still an ordinary run
    summary = Ingestor(settings, cached).run(share)
    assert summary.deleted == MASS_DELETE_MIN // 2 and not summary.failed


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder another user can reach (pytest's own is closed to others)."""
    folder = Path(tempfile.mkdtemp(prefix="taimatsu-down-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def listing_as_nobody(root: Path) -> subprocess.CompletedProcess[str]:
    """ingest.listing.list_folder run by `nobody` (root reads every folder)."""
    code = (
        "import json, sys; from pathlib import Path; from ingest.listing import list_folder\n"
        "try:\n"
        "    got = list_folder(Path(sys.argv[1]))\n"
        "except Exception as exc:\n"
        "    print(json.dumps({'error': str(exc)})); raise SystemExit(0)\n"
        "print(json.dumps({'files': [str(p) for p in got.files],"
        " 'unlisted': [str(p) for p in got.unlisted]}))\n"
    )
    command = [need_binary("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run(
        [*command, sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd="/",
    )


def test_an_unreadable_folder_keeps_its_documents(settings, cached, open_tmp, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("making a folder unreadable to the run needs root (setpriv to nobody)")
    share = make_share(open_tmp / "share", 4)
    for path in [share, *share.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    Ingestor(settings, cached).run(share)
    (share / "team").chmod(0o700)  # nobody cannot list it
    seen = json.loads(listing_as_nobody(share).stdout)
    assert seen["unlisted"] == [str(share / "team")]
    assert len(seen["files"]) == 2
    listing = Listing([Path(p) for p in seen["files"]], [Path(p) for p in seen["unlisted"]])
    monkeypatch.setattr("ingest.pipeline.list_folder", lambda root: listing)
    summary = Ingestor(settings, cached).run(share)
    assert (summary.deleted, summary.unchanged) == (0, 2)
    assert [f["source"] for f in summary.failed] == ["team/"]
    assert len(documents(settings, share)) == 4

    share.chmod(0o700)  # the whole share: the run stops before anything
    assert "cannot be listed" in json.loads(listing_as_nobody(share).stdout)["error"]
