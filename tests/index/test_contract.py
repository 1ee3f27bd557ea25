"""The index's shape (../shared/DESIGN.md, "Shape"): the contract imports nothing above
it, and nothing outside assistant/index reaches a backend module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import assistant.index
from tests.conftest import ROOT

BACKENDS = {"assistant.index.edge", "assistant.index.server", "assistant.index.edge_lock"}
# tests that inject faults into the embedded and server backends' internals
FAULT_INJECTION = {"tests/test_faults.py", "tests/ingest/test_crash.py"}


def imported(path: Path) -> set[str]:
    """Every module (and imported name) a file imports, inside functions too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_contract_imports_only_the_error_tree_and_the_model_stamp():
    modules = imported(ROOT / "assistant" / "index" / "base.py")
    below = {*sys.stdlib_module_names, "numpy"}  # numpy: the hits' cosines, no engine
    ours = {m for m in modules if m.split(".")[0] not in below}
    assert ours == {
        "assistant.embedder",
        "assistant.embedder.ModelStamp",
        "assistant.errors",
        "assistant.errors.DiskFull",
    }


def test_nothing_outside_the_index_package_imports_a_backend():
    wrong = []
    for folder in ("assistant", "ingest", "ui", "bundle", "bench", "scripts", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(("assistant/index/", "tests/index/")):
                continue
            if relative in FAULT_INJECTION:
                continue
            if imported(path) & BACKENDS:
                wrong.append(relative)
    assert not wrong


def test_the_public_names_exist():
    assert all(hasattr(assistant.index, name) for name in assistant.index.__all__)
