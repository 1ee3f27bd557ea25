"""Permissions never fail open (rules that were in force and are gone stop the run), and
permissions read from the file system (POSIX mode, owning group, POSIX ACLs set with the
real `setfacl`), applied on the next run without embedding again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.errors import IngestError, IngestRefused
from assistant.index import open_index
from assistant.retrieval import Searcher
from ingest.acl import ACL_FILE_NAME, Acl
from ingest.permissions import Permissions, intersect
from ingest.pipeline import Ingestor
from ingest.posix_access import parse_acl, principal_name, read_entries
from ingest.runs import recent_runs
from tests.conftest import json_lines, need_binary
from ui.cli.main import app as cli_app

REVIEW = "Annual performance review of Kenji Sato: rating EXCEEDS, raise 4 percent."
RULES = '[[rule]]\npattern = "hr/**"\ngroups = ["hr"]\n'


@pytest.fixture
def settings(settings):
    """Parsing in-process: the documents are a few lines of Markdown."""
    return settings.model_copy(update={"parse_timeout": 0})


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "hr").mkdir(parents=True)
    (root / "hr" / "review.md").write_text(f"# Review\n\n{REVIEW}\n", encoding="utf-8")
    (root / "canteen.md").write_text("# Canteen\n\nThe canteen opens at noon.\n", "utf-8")
    return root


def seen_by(settings, embedder, groups: list[str]) -> set[str]:
    hits = Searcher(settings, embedder).search("performance review rating raise", groups, 50)
    return {h.source for h in hits}


def cli(settings, *args: str) -> tuple[int, str, str]:
    """`taimatsu` in-process (the embedding model already loaded), against `settings`."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TAIMATSU_")}
    env.update(
        TAIMATSU_DATA_DIR=str(settings.data_dir),
        TAIMATSU_OLLAMA_HOST=settings.ollama_host,
        TAIMATSU_PARSE_TIMEOUT="0",
    )
    result = CliRunner().invoke(cli_app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_rules_that_were_in_force_and_are_gone_stop_the_run(settings, cached, folder, monkeypatch):
    monkeypatch.setattr("ingest.pipeline.Embedder", lambda *args, **kwargs: cached)
    (folder / ACL_FILE_NAME).write_text(RULES, encoding="utf-8")
    assert Ingestor(settings, cached).run(folder).added == 2
    assert "hr/review.md" not in seen_by(settings, cached, ["sales"])
    assert "hr/review.md" in seen_by(settings, cached, ["hr"])

    for lost in ("deleted", "empty", "comments only", "a folder now"):
        (folder / ACL_FILE_NAME).unlink(missing_ok=True)
        if lost == "empty":
            (folder / ACL_FILE_NAME).write_text("", encoding="utf-8")
        elif lost == "comments only":
            (folder / ACL_FILE_NAME).write_text("# rules moved elsewhere\n", encoding="utf-8")
        elif lost == "a folder now":
            (folder / ACL_FILE_NAME).mkdir()
        with pytest.raises(IngestRefused, match="--allow-open"):
            Ingestor(settings, cached).run(folder)
        assert "hr/review.md" not in seen_by(settings, cached, ["sales"]), lost
        assert "hr/review.md" in seen_by(settings, cached, ["hr"]), lost
        if lost == "a folder now":
            (folder / ACL_FILE_NAME).rmdir()
    assert recent_runs(settings.data_dir)[0]["refused"].startswith("the rules file")

    # the command line: one sentence, a non-zero exit, the index unchanged
    code, _, stderr = cli(settings, "ingest", str(folder))
    assert code == 1 and "Traceback" not in stderr
    assert stderr.count("\n") == 1 and stderr.startswith("taimatsu: error: the rules file")
    assert open_index(settings).manifest(str(folder.resolve()))["hr/review.md"].groups == ["hr"]
    status = json.loads(cli(settings, "status", "--json")[1])
    assert "--allow-open" in status["ingest"]["last_run"]["refused"]
    assert status["ingest"]["permissions"] == "rules"
    assert "REFUSED: the rules file" in cli(settings, "status")[1]
    (source,) = status["ingest"]["by_source"]  # each source: its counts and its last run
    assert (source["source"], source["documents"]) == (str(folder.resolve()), 2)
    assert source["chunks"] == open_index(settings).counts()["chunks"] > 0
    assert "--allow-open" in source["last_run"]["refused"]

    # the explicit flag opens them, without embedding again
    code, stdout, _ = cli(settings, "ingest", str(folder), "--allow-open", "--json")
    opened = json_lines(stdout)[0]
    assert (opened["acl_updated"], opened["chunks_embedded"]) == (1, 0)
    assert f"  {folder.resolve()}: 2 documents, " in cli(settings, "status")[1]
    (source,) = json.loads(cli(settings, "status", "--json")[1])["ingest"]["by_source"]
    assert "refused" not in source["last_run"] and source["last_run"]["unchanged"] == 2
    assert "hr/review.md" in seen_by(settings, cached, ["sales"])
    # and the next run has nothing left to refuse
    assert Ingestor(settings, cached).run(folder).unchanged == 2


def test_rules_remembered_even_when_every_indexed_document_is_open(settings, cached, folder):
    """No document is closed yet (no HR file had come), so only the memory of the last
    run knows that rules were in force when the file and a new HR file change at once."""
    shutil.rmtree(folder / "hr")
    (folder / ACL_FILE_NAME).write_text(RULES, encoding="utf-8")
    Ingestor(settings, cached).run(folder)
    (folder / ACL_FILE_NAME).unlink()
    (folder / "hr").mkdir()
    (folder / "hr" / "review.md").write_text(REVIEW, encoding="utf-8")
    with pytest.raises(IngestRefused, match="was in force"):
        Ingestor(settings, cached).run(folder)
    assert "hr/review.md" not in open_index(settings).manifest(str(folder.resolve()))
    # an explicit rule opens them as well as the flag does
    (folder / ACL_FILE_NAME).write_text('default = ["everyone"]\n', encoding="utf-8")
    assert Ingestor(settings, cached).run(folder).added == 1
    assert "hr/review.md" in seen_by(settings, cached, ["sales"])


def test_a_folder_that_never_had_rules_is_open_as_before(settings, cached, folder):
    assert Ingestor(settings, cached).run(folder).added == 2
    (folder / ACL_FILE_NAME).write_text("", encoding="utf-8")  # empty: not in force
    assert Ingestor(settings, cached).run(folder).unchanged == 2
    assert "hr/review.md" in seen_by(settings, cached, ["sales"])


# -- permissions from the file system -------------------------------------------------


def setfacl(*args: str) -> None:
    subprocess.run([need_binary("setfacl"), *args], check=True, capture_output=True)


@pytest.fixture
def acl_folder(folder: Path) -> Path:
    """The share with plain modes (files 644, folders 755), on a file system that takes
    POSIX ACLs (skipped, with the reason, where none does)."""
    need_binary("setfacl")
    probe = folder / "canteen.md"
    done = subprocess.run(["setfacl", "-m", "g:4242:r", str(probe)], capture_output=True)
    if done.returncode:
        pytest.skip(f"{folder} takes no POSIX ACLs: {done.stderr.decode().strip()}")
    setfacl("-b", str(probe))
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return folder


def file_settings(settings, tmp_path: Path, mapping: str | None = None):
    update: dict[str, object] = {"permissions": "filesystem"}
    if mapping is not None:
        (tmp_path / "groups.toml").write_text(mapping, encoding="utf-8")
        update["group_map"] = tmp_path / "groups.toml"
    return settings.model_copy(update=update)


def test_file_system_permissions_apply_on_the_next_run_without_embedding(
    settings, cached, acl_folder, tmp_path
):
    files = file_settings(settings, tmp_path)
    first = Ingestor(files, cached).run(acl_folder)
    assert first.added == 2 and first.permissions == "the file system"
    assert "hr/review.md" in seen_by(files, cached, ["sales"])  # 644 under 755: everyone

    review = acl_folder / "hr" / "review.md"
    os.chown(review, -1, 100)  # the owning group `users`
    os.chmod(review, 0o640)  # not readable by "other", readable by its group
    second = Ingestor(files, cached).run(acl_folder)
    assert (second.acl_updated, second.chunks_embedded, second.unchanged) == (1, 0, 2)
    users = principal_name(("group", 100))
    assert "hr/review.md" not in seen_by(files, cached, ["sales"])
    assert "hr/review.md" in seen_by(files, cached, [users])

    # a named-group ACL entry, and a group map from file-system names to Taimatsu groups
    setfacl("-m", "g:4242:r", str(review))
    mapped = file_settings(settings, tmp_path, f'"4242" = "hr"\n"{users}" = []\n')
    third = Ingestor(mapped, cached).run(acl_folder)
    assert (third.acl_updated, third.chunks_embedded) == (1, 0)
    assert open_index(files).manifest(str(acl_folder.resolve()))["hr/review.md"].groups == ["hr"]
    assert "hr/review.md" in seen_by(files, cached, ["hr"])
    assert "hr/review.md" not in seen_by(files, cached, ["sales", users])

    # the mask limits named entries: r masked away leaves nobody of the map
    setfacl("-m", "m::-", str(review))
    assert Ingestor(mapped, cached).run(acl_folder).acl_updated == 1
    assert open_index(files).manifest(str(acl_folder.resolve()))["hr/review.md"].groups == []
    assert "hr/review.md" not in seen_by(files, cached, ["hr"])


def test_a_folder_closed_to_others_closes_everything_below_it(
    settings, cached, acl_folder, tmp_path
):
    files = file_settings(settings, tmp_path, '"4242" = "hr"\n')
    hr = acl_folder / "hr"
    os.chmod(hr, 0o750)  # "other" cannot traverse; the owning group root has no mapping
    setfacl("-m", "g:4242:rx", str(hr))
    os.chown(hr, -1, 4242)
    summary = Ingestor(files, cached).run(acl_folder)
    assert summary.added == 2 and not summary.failed
    manifest = open_index(files).manifest(str(acl_folder.resolve()))
    assert manifest["hr/review.md"].groups == ["hr"]  # the file itself is 644
    assert manifest["canteen.md"].groups == ["everyone"]


def test_a_folders_default_acl_is_inherited_by_a_new_file(settings, cached, acl_folder, tmp_path):
    files = file_settings(settings, tmp_path, '"4243" = "legal"\n')
    legal = acl_folder / "legal"
    legal.mkdir()
    setfacl("-m", "g:4243:rx", str(legal))
    setfacl("-d", "-m", "u::rw,g::-,o::-,g:4243:r", str(legal))
    (legal / "case.md").write_text("# Case\n\nThe settlement talks resume in May.\n", "utf-8")
    entries = read_entries(legal / "case.md")  # the kernel copied the default ACL in
    assert entries.other == 0 and entries.groups == ((4243, 4),)
    summary = Ingestor(files, cached).run(acl_folder)
    assert summary.added == 3 and not summary.failed
    manifest = open_index(files).manifest(str(acl_folder.resolve()))
    assert manifest["legal/case.md"].groups == ["legal"]


def test_a_reader_the_map_does_not_know_keeps_the_previous_groups(
    settings, cached, acl_folder, tmp_path
):
    files = file_settings(settings, tmp_path, '"4242" = "hr"\n')
    review = acl_folder / "hr" / "review.md"
    os.chmod(review, 0o600)
    setfacl("-m", "g:4242:r", str(review))
    assert Ingestor(files, cached).run(acl_folder).added == 2
    setfacl("-m", "g:4299:r", str(review))  # a group nobody mapped
    os.chmod(acl_folder / "canteen.md", 0o600)  # and a file no one may read
    summary = Ingestor(files, cached).run(acl_folder)
    assert [f["source"] for f in summary.failed] == ["hr/review.md"]
    assert "'4299' is not in the group map" in summary.failed[0]["error"]
    manifest = open_index(files).manifest(str(acl_folder.resolve()))
    assert manifest["hr/review.md"].groups == ["hr"]  # kept, not opened
    assert manifest["canteen.md"].groups == []  # closed to every group


def test_acl_entries_agree_with_getfacl(acl_folder):
    review = acl_folder / "hr" / "review.md"
    os.chown(review, -1, 100)
    setfacl("-m", "g:4242:r,g:4243:rw,u:4244:r,m::r,o::-", str(review))
    entries = read_entries(review)
    listed = subprocess.run(
        [need_binary("getfacl"), "-n", "-p", "-E", str(review)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bits = {"r": 4, "w": 2, "x": 1}
    got = {}
    for line in listed.splitlines():
        if not line or line.startswith("#"):
            continue
        tag, ident, perms = line.split(":")
        got[(tag, ident)] = sum(bits[c] for c in perms if c in bits)
    assert got[("group", "")] == entries.group_obj and got[("other", "")] == entries.other
    assert got[("mask", "")] == entries.mask == 4
    assert {(int(i), p) for (t, i), p in got.items() if t == "group" and i} == set(entries.groups)
    assert {(int(i), p) for (t, i), p in got.items() if t == "user" and i} == set(entries.users)


def test_a_broken_acl_attribute_is_refused_not_guessed():
    with pytest.raises(ValueError):
        parse_acl(b"\x02\x00\x00\x00\x01", 0o644, 0)
    with pytest.raises(ValueError, match="version"):
        parse_acl(b"\x01\x00\x00\x00", 0o644, 0)


def test_both_sources_must_allow(settings, acl_folder, tmp_path):
    assert intersect(["everyone"], ["hr"]) == ["hr"]
    assert intersect(["hr", "finance"], ["everyone"]) == ["finance", "hr"]
    assert intersect(["hr", "finance"], ["hr", "legal"]) == ["hr"]
    assert intersect(["finance"], ["hr"]) == []
    (acl_folder / ACL_FILE_NAME).write_text(
        '[[rule]]\npattern = "hr/**"\ngroups = ["hr", "finance"]\n', encoding="utf-8"
    )
    review = acl_folder / "hr" / "review.md"
    os.chmod(review, 0o600)
    setfacl("-m", "g:4242:r", str(review))
    both = settings.model_copy(update={"permissions": "both"})
    permissions = Permissions(both, acl_folder, Acl.for_folder(acl_folder, None))
    assert permissions.groups_for("hr/review.md", review) == []  # 4242 is not hr or finance
    mapped = file_settings(both, tmp_path, '"4242" = "hr"\n').model_copy(
        update={"permissions": "both"}
    )
    permissions = Permissions(mapped, acl_folder, Acl.for_folder(acl_folder, None))
    assert permissions.groups_for("hr/review.md", review) == ["hr"]
    assert permissions.groups_for("canteen.md", acl_folder / "canteen.md") == ["everyone"]


def test_a_broken_group_map_stops_the_run(settings, cached, folder, tmp_path):
    broken = file_settings(settings, tmp_path, '"4242" = 7\n')
    with pytest.raises(IngestError, match="TAIMATSU_GROUP_MAP|group map"):
        Ingestor(broken, cached).run(folder)
    assert not open_index(settings).exists()


def test_a_file_readable_by_a_named_user_is_theirs_alone(settings, cached, acl_folder, tmp_path):
    """`setfacl u:NAME:r` on a file closed to others: that user, signed in by the proxy or
    a token as NAME, reads it (their identity carries `user:NAME`); nobody else does."""
    from ui.identity import header_user

    files = file_settings(settings, tmp_path).model_copy(update={"auth_mode": "header"})
    review = acl_folder / "hr" / "review.md"
    os.chmod(review, 0o600)
    setfacl("-m", "u:nobody:r", str(review))
    assert Ingestor(files, cached).run(acl_folder).added == 2
    assert open_index(files).manifest(str(acl_folder.resolve()))["hr/review.md"].groups == [
        "user:nobody"
    ]
    nobody = header_user(files, None, ["nobody"], ["staff"])
    other = header_user(files, None, ["sato"], ["staff,user:nobody"])  # claims it: dropped
    assert "hr/review.md" in seen_by(files, cached, list(nobody.groups))
    assert "hr/review.md" not in seen_by(files, cached, list(other.groups))
