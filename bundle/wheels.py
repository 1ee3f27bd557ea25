"""The wheels of an offline bundle: Taimatsu's own, built from a clean copy of the
sources, and every dependency's for the target platform and Python, downloaded by pip
(binary wheels only, so nothing needs compiling on the air-gapped machine)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from bundle.install import BundleError

CUDA_WHEELS = re.compile(r"^(nvidia_|triton-)", re.IGNORECASE)


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args]
    if subprocess.run(command, check=False).returncode != 0:
        raise BundleError(f"`pip {args[0]}` failed (its message is above); nothing was written")


def wheel_name_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return name, version


def project_wheel(project: Path, dest: Path, work: Path, sources: list[str]) -> Path:
    """Build Taimatsu's wheel from a clean copy of the sources (no stale build/ folder)."""
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    src = work / "src"
    src.mkdir()
    keep = ["pyproject.toml", meta["project"].get("readme", "README.md")]
    keep += [p.name for p in project.glob("LICEN[CS]E*")]
    for name in keep:
        if (project / name).is_file():
            shutil.copy2(project / name, src / name)
    found = meta["tool"]["setuptools"]["packages"]["find"]["include"]  # "assistant*", ...
    for package in sorted({pattern.rstrip("*.") for pattern in found}):
        shutil.copytree(
            project / package, src / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip("wheel", "--no-deps", "--wheel-dir", str(dest), *sources, str(src))
    found = sorted(dest.glob(f"{meta['project']['name']}-*.whl"))
    if len(found) != 1:
        raise BundleError(f"building the project wheel gave {len(found)} wheels, not one")
    return found[0]


def pip_platforms(platforms: list[str]) -> list[str]:
    """The tags pip must accept for the given target platforms. pip takes a --platform
    literally, so manylinux_2_28_x86_64 would refuse the many wheels tagged for an older
    glibc (manylinux_2_17, manylinux2014...) that run on it: list them all."""
    tags: list[str] = []
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for tag in platforms:
        tags.append(tag)
        if match := re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag):
            newest, arch = int(match[1]), match[2]
            for minor in range(newest - 1, 4, -1):
                tags.append(f"manylinux_2_{minor}_{arch}")
            tags += [f"{name}_{arch}" for minor, name in legacy.items() if minor <= newest]
        elif match := re.fullmatch(r"musllinux_1_(\d+)_(\w+)", tag):
            tags += [
                f"musllinux_1_{minor}_{match[2]}" for minor in range(int(match[1]) - 1, -1, -1)
            ]
    return list(dict.fromkeys(tags))


def check_cpu_torch(wheels: Path, platforms: list[str]) -> Path | None:
    """The torch wheel, after making sure it is the CPU build."""
    torch = sorted(wheels.glob("torch-*.whl"))
    if not torch:
        return None
    version = wheel_name_version(torch[0])[1]
    cuda = sorted(p.name for p in wheels.glob("*.whl") if CUDA_WHEELS.match(p.name))
    linux = any("linux" in p for p in platforms) or (
        not platforms and sys.platform.startswith("linux")
    )
    if cuda or (linux and "+cpu" not in version):
        pulled = f" and {len(cuda)} CUDA wheels such as {cuda[0]}" if cuda else ""
        raise BundleError(
            f"pip chose the CUDA build of torch ({torch[0].name}{pulled}); the bundle carries "
            "the CPU build: give pip the CPU wheel with --find-links DIR (a folder holding "
            "torch-VERSION+cpu-...whl) or --extra-index-url https://download.pytorch.org/whl/cpu"
        )
    return torch[0]
