"""Project-level checks: the layering, compose.yaml, and the ingest command's contract."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT, SAMPLES, json_lines, need_binary, run_cli

LAYERS = {"assistant": set(), "ingest": {"assistant"}, "ui": {"assistant", "ingest"}}


def _imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_point_one_way():
    wrong = []
    for package, allowed in LAYERS.items():
        for path in (ROOT / package).rglob("*.py"):
            for name in _imported_packages(path) & set(LAYERS):
                if name != package and name not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong


def test_compose_file_is_valid_and_keeps_services_internal():
    compose = need_binary("docker-compose")
    result = subprocess.run(
        [compose, "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert set(spec["services"]) >= {"qdrant", "ollama", "ui", "ingest"}
    assert spec["networks"]["internal"]["internal"] is True
    published = [name for name, svc in spec["services"].items() if svc.get("ports")]
    assert published == ["ui"]
    assert spec["services"]["qdrant"]["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"


def test_ingest_command_reports_failures_with_its_own_exit_code(settings, tmp_path):
    corpus = tmp_path / "docs"
    shutil.copytree(SAMPLES, corpus)
    (corpus / "truncated.pdf").write_bytes(b"%PDF-1.4\n1 0 obj")
    result = run_cli("ingest", str(corpus), "--json", settings=settings)
    assert result.returncode == 3, result.stderr
    (summary,) = json_lines(result.stdout)
    assert {"added", "updated", "unchanged", "deleted", "failed", "chunks_embedded"} <= set(summary)
    assert summary["added"] == 8 and [f["source"] for f in summary["failed"]] == ["truncated.pdf"]
    assert "failed: truncated.pdf: " in result.stderr

    (corpus / "truncated.pdf").unlink()
    quiet = run_cli("ingest", str(corpus), "--quiet", settings=settings)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_ingest_of_a_missing_folder_fails_in_one_line(settings, tmp_path):
    result = run_cli("ingest", str(tmp_path / "missing"), settings=settings)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is not a folder" in result.stderr


def test_readme_documents_every_setting_and_the_two_commands():
    from assistant.settings import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f"TAIMATSU_{name.upper()}" for name in Settings.model_fields]
    missing = [var for var in missing if f"`{var}`" not in readme]
    assert not missing
    first_screen = "\n".join(readme.splitlines()[:12])
    assert "make run" in first_screen and "make test" in first_screen
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


def test_ingest_draws_a_progress_bar_on_a_terminal_only(settings, tmp_path):
    """On a terminal: files done/total, rate and ETA; in a log (no terminal): none."""
    import os
    import pty
    import sys

    corpus = tmp_path / "docs"
    shutil.copytree(SAMPLES, corpus)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_")}
    env["TAIMATSU_DATA_DIR"] = str(settings.data_dir)
    exe = str(Path(sys.executable).with_name("taimatsu"))
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [exe, "ingest", str(corpus)], stdout=subprocess.PIPE, stderr=follower, env=env
    ) as process:
        os.close(follower)
        drawn = b""
        while True:
            try:
                block = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not block:
                break
            drawn += block
        stdout = process.stdout.read().decode()
    os.close(leader)
    assert process.returncode == 0
    screen = drawn.decode(errors="replace")
    assert "8/8" in screen and "file/s" in screen and "chunks=" in screen
    assert "8 added" in stdout and "\r" not in stdout  # the log line stays clean
