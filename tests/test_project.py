"""Project-level checks: the layering, compose.yaml, and the ingest command's contract."""

from __future__ import annotations

import ast
import importlib
import inspect
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import CACHE_ENV, ROOT, SAMPLES, json_lines, need_binary, run_cli


def _compose(*files: str) -> dict:
    """The merged configuration, as docker-compose itself resolves it (offline)."""
    compose = need_binary("docker-compose")
    args = [arg for name in files for arg in ("-f", str(ROOT / name))]
    check = subprocess.run(
        [compose, *args, "config", "-q"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert check.returncode == 0, check.stderr
    merged = subprocess.run(
        [compose, *args, "config"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return yaml.safe_load(merged.stdout)


def test_compose_keeps_everything_internal_but_the_page_and_the_api():
    spec = _compose("compose.yaml")
    services = spec["services"]
    assert set(services) == {"qdrant", "ollama", "ui", "api", "ingest"}
    assert spec["networks"]["internal"]["internal"] is True
    faces = {"ui", "api"}
    assert {name for name, svc in services.items() if svc.get("ports")} == faces
    for name, svc in services.items():
        networks = set(svc["networks"])
        assert networks == ({"internal", "public"} if name in faces else {"internal"}), name
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["qdrant"]["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"
    assert any("qdrant-storage" in str(v) for v in services["qdrant"]["volumes"])
    assert any("ollama-models" in str(v) for v in services["ollama"]["volumes"])
    assert services["api"]["command"][:2] == ["taimatsu", "api"]
    assert services["api"]["ports"][0]["target"] == 8502
    assert services["api"]["environment"]["TAIMATSU_API_ADDRESS"] == "0.0.0.0"
    for app in ("ui", "api", "ingest"):
        env = services[app]["environment"]
        assert env["TAIMATSU_QDRANT_URL"] == "http://qdrant:6333"
        assert env["HF_HUB_OFFLINE"] == "1"
    assert "taimatsu ingest" in " ".join(services["ingest"]["command"])
    assert "TAIMATSU_INGEST_EVERY" in services["ingest"]["environment"]


def test_cluster_layout_splits_ingestion_and_spreads_ollama():
    services = _compose("compose.yaml", "compose.cluster.yaml")["services"]
    assert {"qdrant", "qdrant-2", "qdrant-3", "ollama", "ollama-2"} <= set(services)
    shards = sorted(
        " ".join(svc["command"]).split("--shard ")[1].split()[0]
        for name, svc in services.items()
        if name.startswith("ingest")
    )
    assert shards == ["1/3", "2/3", "3/3"]
    ui = services["ui"]["environment"]
    assert ui["TAIMATSU_OLLAMA_HOST"].count("http://") == 2
    api = services["api"]["environment"]  # the API answers from the same cluster
    assert (api["TAIMATSU_OLLAMA_HOST"], api["TAIMATSU_QDRANT_URL"]) == (
        ui["TAIMATSU_OLLAMA_HOST"],
        ui["TAIMATSU_QDRANT_URL"],
    )
    assert int(ui["TAIMATSU_QDRANT_SHARDS"]) > 1 and int(ui["TAIMATSU_QDRANT_REPLICAS"]) > 1
    assert all(
        services[n]["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        for n in ("qdrant", "qdrant-2", "qdrant-3")
    )
    assert {n for n, svc in services.items() if svc.get("ports")} == {"ui", "api"}


def test_vllm_variant_answers_through_the_openai_backend_on_a_gpu():
    spec = _compose("compose.yaml", "compose.vllm.yaml")
    services = spec["services"]
    vllm = services["vllm"]
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert vllm["networks"] == {"internal": None} or set(vllm["networks"]) == {"internal"}
    assert vllm["environment"]["VLLM_NO_USAGE_STATS"] == "1" and vllm["healthcheck"]["test"]
    served = next(a for a in vllm["command"] if a.startswith("--served-model-name="))
    assert services["ollama"]["profiles"] == ["ollama"]  # defined, not started
    assert services["api"]["command"][:2] == ["taimatsu", "api"]
    assert services["api"]["ports"][0]["target"] == 8502
    assert services["api"]["environment"]["TAIMATSU_API_ADDRESS"] == "0.0.0.0"
    for app in ("ui", "api", "ingest"):
        env = services[app]["environment"]
        assert (env["TAIMATSU_LLM_BACKEND"], env["TAIMATSU_LLM_URL"]) == (
            "openai",
            "http://vllm:8000/v1",
        )
        assert served == f"--served-model-name={env['TAIMATSU_LLM_MODEL']}"
    assert {n for n, svc in services.items() if svc.get("ports")} == {"ui", "api"}
    _compose("compose.yaml", "compose.cluster.yaml", "compose.vllm.yaml")


def test_dockerfile_is_cpu_only_offline_and_not_root():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "torch==2.13.0" in text and "whl/cpu" in text
    assert "HF_HUB_OFFLINE=1" in text and "model.safetensors" in text
    users = [ln for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] != "USER root"
    assert lines.index(users[-1]) < lines.index(next(ln for ln in lines if ln.startswith("CMD")))


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIMATSU_") or k == CACHE_ENV}
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


def test_single_user_mode_refuses_to_serve_a_network(settings):
    network = settings.model_copy(update={"ui_address": "0.0.0.0"})
    result = run_cli("ui", settings=network, extra_env={"TAIMATSU_UI_ADDRESS": "0.0.0.0"})
    assert result.returncode == 1 and "TAIMATSU_AUTH_MODE=oidc or header" in result.stderr


# -- the shape of the code (docs/architecture.md) ----------------------------------------

PACKAGES = ("assistant", "ingest", "ui", "bundle")
# Top level: who may import whom (bench and tests are outside the product).
LAYERS = {
    "assistant": set(),
    "ingest": {"assistant"},
    "ui": {"assistant", "ingest", "bundle"},
    "bundle": set(),
}
# Inside assistant: a module of the left may not import one of the right.
FORBIDDEN = {
    "assistant.errors": ("assistant.",),
    "assistant.settings": ("assistant.index", "assistant.retrieval", "assistant.answering"),
    "assistant.embedder": ("assistant.index", "assistant.retrieval", "assistant.answering"),
    "assistant.sparse": ("assistant.index", "assistant.retrieval", "assistant.answering"),
    "assistant.index": (
        "assistant.retrieval",
        "assistant.answering",
        "assistant.evaluation",
        "assistant.status",
    ),
    "assistant.retrieval": ("assistant.answering", "assistant.evaluation", "assistant.status"),
    "assistant.answering": ("assistant.evaluation", "assistant.status"),
}
EVALUATION_USERS = ("ui.", "assistant.evaluation")  # and bench/, tests/


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, name: str, known: dict[str, Path], module_level: bool) -> set[str]:
    """The modules of ours that `name` imports: at module level only (what runs when it is
    imported; not inside functions, classes or `if TYPE_CHECKING:`), or anywhere."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in known else base)
            elif isinstance(node, ast.If) and _type_checking(node):
                visit(node.orelse)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not module_level:
                    visit(node.body)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found - {name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("module_level", [True, False], ids=["module-level", "anywhere"])
def test_no_import_circles(module_level):
    """No module imports itself through others: neither when it is imported (module
    level) nor counting the imports deferred into functions."""
    known = _modules()
    graph = {name: _imports(path, name, known, module_level) for name, path in known.items()}
    assert _cycle(graph) is None


def test_sub_packages_import_only_below_themselves():
    known = _modules()
    wrong = []
    for name, path in known.items():
        imported = _imports(path, name, known, module_level=False)
        for owner, banned in FORBIDDEN.items():
            if name == owner or name.startswith(owner + "."):
                wrong += [f"{name} imports {m}" for m in imported if m.startswith(banned)]
        if not name.startswith(EVALUATION_USERS):
            wrong += [
                f"{name} imports {m}" for m in imported if m.startswith("assistant.evaluation")
            ]
    assert not wrong


def _packages() -> list[str]:
    return [name for name, path in _modules().items() if path.name == "__init__.py"]


@pytest.mark.parametrize("package", _packages())
def test_each_package_states_its_public_names(package):
    """Like httpx's tests/test_exported_members.py: `__all__` lists exactly the public
    names the package's `__init__` defines or imports (sub-modules aside), sorted."""
    module = importlib.import_module(package)
    assert hasattr(module, "__all__"), f"{package}/__init__.py has no __all__"
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name not in ("annotations", "TYPE_CHECKING")
        and not inspect.ismodule(value)
    }
    assert sorted(module.__all__) == sorted(public)
    assert list(module.__all__) == sorted(module.__all__, key=lambda n: (not n.isupper(), n))


def test_imports_point_one_way():
    wrong = []
    known = _modules()
    for name, path in known.items():
        top = name.split(".")[0]
        for imported in _imports(path, name, known, module_level=False):
            other = imported.split(".")[0]
            if other != top and other not in LAYERS[top]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong
