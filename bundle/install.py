"""Install Taimatsu from an offline bundle: no index, no network, only the bundle's files.

Standard library only, on purpose: `taimatsu bundle build` copies this file into every
bundle as `install_offline.py`, where it runs on an air-gapped machine that has nothing
but Python 3.11 yet (`sh taimatsu-bundle/install-offline.sh --venv DIR`). An installed
Taimatsu runs the same code for upgrades (`taimatsu bundle install ARCHIVE --venv DIR`).

Before anything is installed, every file of the bundle is checked against the sha256 in
its manifest, and a file the manifest does not list (a wheel slipped into `wheels/`) is
refused too. Pip then runs with its configuration files and PIP_* variables ignored, so
the target machine's own pip settings cannot add an index or another wheel folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

FORMAT = 1
ROOT_NAME = "taimatsu-bundle"  # the one folder at the top of every archive
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"  # the manifest's digests in `sha256sum -c` form
UNLISTED = frozenset({MANIFEST, SUMS})  # the two files the manifest cannot list
PROG = "install-offline"
NEEDED = (  # the manifest entries the installer reads
    "project.name",
    "project.version",
    "target.python",
    "pip_wheel",
    "pip_version",
    "wheels",
    "embedding.folders",
)
AGAIN = (
    "the bundle is damaged or was altered: copy the archive again and check it with "
    "`sha256sum -c` against the .sha256 file written beside it"
)


class BundleError(Exception):
    """A problem the operator can act on; the message is one line."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _is_safe(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts and "\\" not in name


def load_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{bundle} has no {MANIFEST}, so it is not a Taimatsu bundle; extract the archive "
            f"and run the install-offline.sh inside its {ROOT_NAME} folder"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BundleError(f"{MANIFEST} cannot be read as JSON; {AGAIN}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != FORMAT:
        raise BundleError(
            f"{MANIFEST} is not a format-{FORMAT} Taimatsu bundle manifest; build the bundle "
            "again with this version of `taimatsu bundle build`"
        )
    for key in NEEDED:
        value = manifest
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            raise BundleError(f"{MANIFEST} has no {key}; {AGAIN}")
    bad = [name for name in files if not _is_safe(name) or name in UNLISTED]
    # what the installer runs or copies must be among the checked files
    bad += [manifest["pip_wheel"]] if manifest["pip_wheel"] not in files else []
    for folder in manifest["embedding"]["folders"]:
        name, path = (
            (folder.get("name"), folder.get("path")) if isinstance(folder, dict) else ("", "")
        )
        simple = isinstance(name, str) and _is_safe(name) and "/" not in name
        if not simple or not any(listed.startswith(f"{path}/") for listed in files):
            bad.append(f"{path or name}")
    if bad:
        raise BundleError(f"{MANIFEST} lists the path {bad[0]!r}; {AGAIN}")
    return manifest


def verify_folder(bundle: Path, manifest: dict, echo: Callable[[str], None] = print) -> None:
    """Every listed file present with its size and sha256, and nothing else."""
    listed: dict[str, dict] = manifest["files"]
    echo(f"checking {len(listed)} files against {MANIFEST} ...")
    problems: list[str] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(bundle):
        for name in sorted(dirs + names):
            path = Path(folder) / name
            rel = path.relative_to(bundle).as_posix()
            if path.is_symlink():
                problems.append(f"{rel} is a symbolic link")
            elif path.is_dir():
                continue
            elif rel in UNLISTED:
                continue
            elif rel not in listed:
                problems.append(f"{rel} is not in {MANIFEST}")
            else:
                seen.add(rel)
                want = listed[rel]
                if path.stat().st_size != want.get("size") or sha256_file(path) != want.get(
                    "sha256"
                ):
                    problems.append(f"{rel} does not match its sha256 in {MANIFEST}")
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
    problems += [f"{rel} is missing" for rel in sorted(set(listed) - seen)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BundleError(f"{problems[0]}{more}; {AGAIN}")


def extract(archive: Path, parent: Path) -> Path:
    """Unpack a bundle archive into `parent` and return the new `taimatsu-bundle` folder.
    Only plain files and folders under that one folder are taken."""
    folder = parent / ROOT_NAME
    if folder.exists():
        raise BundleError(f"{folder} already exists; remove it or unpack somewhere else")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                inside = member.name == ROOT_NAME or member.name.startswith(ROOT_NAME + "/")
                if not (inside and _is_safe(member.name) and (member.isreg() or member.isdir())):
                    raise BundleError(f"{archive} holds {member.name!r}; {AGAIN}")
            parent.mkdir(parents=True, exist_ok=True)
            tar.extractall(parent, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise BundleError(f"{archive} cannot be unpacked ({exc}); {AGAIN}") from None
    return folder


def _clean_env() -> dict[str, str]:
    """This process's environment without pip's settings and without PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIP_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then reads no configuration file at all
    return env


def _make_venv(venv: Path, echo: Callable[[str], None]) -> Path:
    python = venv / "bin" / "python"
    if (venv / "pyvenv.cfg").is_file() and python.exists():
        echo(f"using the virtual environment {venv}")
        return python
    if venv.exists() and (not venv.is_dir() or any(venv.iterdir())):
        raise BundleError(f"{venv} exists and is not a virtual environment; pick a new folder")
    echo(f"creating the virtual environment {venv} ...")
    # --without-pip: no ensurepip needed (Debian ships it apart, as python3.11-venv);
    # the bundle's own pip wheel installs pip below.
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        check=False,
    )
    if made.returncode != 0:
        reason = (made.stderr.strip().splitlines() or ["no message"])[-1]
        raise BundleError(f"could not create the virtual environment {venv}: {reason}")
    return python


def install(bundle: Path, venv: Path, echo: Callable[[str], None] = print) -> dict:
    """Check the bundle, then install it into `venv` (made if missing) with pip --no-index.
    Returns what was installed, for the summary."""
    bundle, venv = bundle.resolve(), venv.absolute()
    manifest = load_manifest(bundle)
    verify_folder(bundle, manifest, echo)
    want = str(manifest["target"]["python"])
    have = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if have != want:
        raise BundleError(
            f"this bundle holds wheels for Python {want} and this is Python {have}; run it "
            f"with python{want} (PYTHON=/path/to/python{want} sh install-offline.sh ...)"
        )
    python = _make_venv(venv, echo)
    project = manifest["project"]
    project_only = bool(manifest.get("project_only"))
    echo(
        f"installing {project['name']} {project['version']} from "
        f"{len(manifest['wheels'])} wheels (no index, no network) ..."
    )
    command = [
        str(python),
        str(bundle / manifest["pip_wheel"] / "pip"),
        "install",
        "--isolated",
        "--no-index",
        "--find-links",
        str(bundle / "wheels"),
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--quiet",
        "--upgrade",
        *(["--no-deps", "--force-reinstall"] if project_only else []),
        f"pip=={manifest['pip_version']}",
        f"{project['name']}=={project['version']}",
    ]
    if subprocess.run(command, env=_clean_env(), check=False).returncode != 0:
        raise BundleError("pip could not install from the bundle (its message is above)")
    script = venv / "bin" / "taimatsu"
    if not script.exists():
        raise BundleError(f"pip finished but {script} is missing; {AGAIN}")
    if not project_only:
        started = subprocess.run(
            [str(script), "--help"], capture_output=True, text=True, env=_clean_env(), check=False
        )
        if started.returncode != 0:
            reason = (started.stderr.strip().splitlines() or ["no message"])[-1]
            raise BundleError(f"the installed taimatsu does not start: {reason}")
    models = []
    for model in manifest.get("embedding", {}).get("folders", []):
        target = venv / "share" / "taimatsu" / "models" / model["name"]
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(bundle / model["path"], target)
        models.append({"name": model["name"], "path": str(target)})
    return {
        "venv": str(venv),
        "project": project,
        "project_only": project_only,
        "wheels": len(manifest["wheels"]),
        "embedding_models": models,
        "ollama": manifest.get("ollama"),
        "bundle": str(bundle),
    }


def next_steps(result: dict) -> list[str]:
    venv = result["venv"]
    lines = [
        f"installed {result['project']['name']} {result['project']['version']} into {venv} "
        f"({result['wheels']} wheels, no network used)",
    ]
    if result["project_only"]:
        lines.append(f"  Taimatsu only, without its dependencies: {venv} must have them already")
    else:
        lines.append(f"  try it:          {venv}/bin/taimatsu status")
    for model in result["embedding_models"]:
        lines.append(f"  embedding model: TAIMATSU_EMBED_MODEL_DIR={model['path']}")
    if result["ollama"]:
        modelfile = Path(result["bundle"]) / result["ollama"]["modelfile"]
        lines.append(f"  Ollama model:    ollama create {result['ollama']['name']} -f {modelfile}")
        lines.append(f"  (after that, the folder {result['bundle']} can be deleted)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Install Taimatsu from this offline bundle, with no network."
    )
    parser.add_argument("--venv", required=True, type=Path, help="virtual environment folder")
    parser.add_argument(
        "bundle",
        nargs="?",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="the extracted bundle folder (default: the folder of this script)",
    )
    args = parser.parse_args(argv)
    try:
        result = install(args.bundle, args.venv)
    except BundleError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(next_steps(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
