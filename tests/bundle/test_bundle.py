"""The offline bundle: built here from the project's own wheel (a full dependency set is
gigabytes), checked file by file, and installed into fresh virtual environments inside a
network namespace with no network at all, the way an air-gapped machine would."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from bundle import install as bundle_install
from bundle.install import BundleError
from bundle.ollama import OllamaSourceError, find_model
from bundle.wheels import check_cpu_torch
from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
WHEEL = f"wheels/{PROJECT['name']}-{PROJECT['version']}-py3-none-any.whl"
GGUF = b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 4


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _offline(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command in a new network namespace: loopback only, and down. The environment
    keeps this machine's PIP_* settings, which the installer must ignore."""
    unshare = shutil.which("unshare")
    reason = None
    if unshare is None:
        reason = "unshare (util-linux) is not installed"
    elif os.geteuid() != 0:
        reason = "a network namespace needs root"
    elif subprocess.run([unshare, "-n", "true"], capture_output=True).returncode != 0:
        reason = "unshare -n is not permitted here"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"cannot deny the network to the installer: {reason}")
        pytest.skip(f"cannot deny the network to the installer: {reason}")
    return subprocess.run(
        [unshare, "-n", *map(str, command)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def _bundle_cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "bundle.cli", *map(str, args)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project-only bundle with an extra embedding model and a (tiny, fake) GGUF model."""
    base = tmp_path_factory.mktemp("bundle")
    model = base / "tiny-model"
    (model / ".cache").mkdir(parents=True)
    (model / "modules.json").write_text("[]")
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    (model / ".cache" / "download.lock").write_text("hub leftovers, never bundled")
    gguf = base / "gguf"
    gguf.mkdir()
    (gguf / "qwen2.5-7b-instruct-q4_k_m.gguf").write_bytes(GGUF)
    out = base / "taimatsu-offline.tar"
    result = subprocess.run(
        _bundle_cli(
            "build",
            out,
            "--project-only",
            "--project-dir",
            ROOT,
            "--embed-model-dir",
            model,
            "--ollama-model-dir",
            gguf,
        ),
        capture_output=True,
        text=True,
        cwd=base,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"wrote {out}" in result.stdout and "install-offline.sh --venv" in result.stdout
    return out


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name.removeprefix("taimatsu-bundle/"): tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile()
        }


def test_archive_holds_wheels_models_ollama_installer_and_manifest(built):
    files = _members(built)
    manifest = json.loads(files.pop("manifest.json"))
    sums = files.pop("SHA256SUMS").decode()
    pip_wheel = manifest["pip_wheel"]
    assert set(files) == {
        "install-offline.sh",
        "install_offline.py",
        "README.txt",
        WHEEL,
        pip_wheel,
        "models/embed/tiny-model/modules.json",
        "models/embed/tiny-model/config.json",
        "models/embed/tiny-model/model.safetensors",
        "ollama/model.gguf",
        "ollama/Modelfile",
    }
    assert manifest["files"] == {n: {"sha256": _sha(d), "size": len(d)} for n, d in files.items()}
    assert sums.splitlines() == [f"{_sha(d)}  {n}" for n, d in files.items()]
    project = manifest["project"]
    assert (project["name"], project["version"]) == (PROJECT["name"], PROJECT["version"])
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", project["commit"])
    assert manifest["project_only"] is True and manifest["target"]["python"] == "3.11"
    assert {w["file"] for w in manifest["wheels"]} == {WHEEL, pip_wheel}
    assert manifest["embedding"]["folders"] == [
        {"name": "tiny-model", "path": "models/embed/tiny-model"}
    ]
    assert manifest["ollama"]["name"] == "qwen2.5:7b"
    assert files["ollama/model.gguf"] == GGUF
    modelfile = files["ollama/Modelfile"].decode()
    assert "\nFROM ./model.gguf\n" in modelfile and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "ollama create qwen2.5:7b" in modelfile
    assert files["install_offline.py"] == (ROOT / "bundle" / "install.py").read_bytes()
    sidecar = built.with_name(built.name + ".sha256").read_text()
    assert sidecar == f"{_sha(built.read_bytes())}  {built.name}\n"
    with tarfile.open(built) as tar:
        assert all(m.name.split("/")[0] == "taimatsu-bundle" for m in tar.getmembers())
        assert tar.getmember("taimatsu-bundle/install-offline.sh").mode == 0o755


def test_installs_into_a_fresh_venv_with_the_network_denied(built, tmp_path):
    subprocess.run(["tar", "-xf", built, "-C", tmp_path], check=True)
    interfaces = _offline("cat", "/proc/net/dev").stdout.splitlines()[2:]
    assert [line.split(":")[0].strip() for line in interfaces] == ["lo"]

    venv = tmp_path / "venv"
    result = _offline("sh", "taimatsu-bundle/install-offline.sh", "--venv", venv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (venv / "bin" / "taimatsu").is_file() and (venv / "bin" / "pip").is_file()
    where = subprocess.run(
        [
            venv / "bin" / "python",
            "-I",
            "-c",
            "import importlib.util as u; print(*(u.find_spec(n).origin for n in "
            "('assistant', 'ingest', 'ui', 'bundle')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    site = venv / "lib" / "python3.11" / "site-packages"
    assert where == [
        str(site / name / "__init__.py") for name in ("assistant", "ingest", "ui", "bundle")
    ]
    assert (site / "bundle" / "install.py").is_file()
    assert (site / "ingest" / "parsing" / "registry.py").is_file()
    copied = venv / "share" / "taimatsu" / "models" / "tiny-model"
    assert (copied / "model.safetensors").read_bytes() == b"weights"
    assert f"TAIMATSU_EMBED_MODEL_DIR={copied}" in result.stdout
    modelfile = tmp_path / "taimatsu-bundle" / "ollama" / "Modelfile"
    assert f"ollama create qwen2.5:7b -f {modelfile}" in result.stdout


def test_taimatsu_bundle_install_unpacks_checks_and_installs_offline(built, tmp_path):
    venv, unpack = tmp_path / "venv", tmp_path / "unpack"
    args = ("install", built, "--venv", venv, "--extract-to", unpack)
    result = _offline(*_bundle_cli(*args), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (venv / "bin" / "taimatsu").is_file()
    assert (unpack / "taimatsu-bundle" / "ollama" / "model.gguf").read_bytes() == GGUF
    assert "installed taimatsu" in result.stdout

    # again from the unpacked folder, into the same environment: an upgrade in place
    again = _offline(*_bundle_cli("install", unpack / "taimatsu-bundle", "--venv", venv))
    assert again.returncode == 0, again.stderr
    assert f"using the virtual environment {venv}" in again.stdout


def _tamper(archive: Path, dest: Path) -> Path:
    """A copy of the archive with one byte of the Taimatsu wheel changed."""
    shutil.copy(archive, dest)
    with tarfile.open(dest) as tar:
        member = tar.getmember(f"taimatsu-bundle/{WHEEL}")
    with dest.open("r+b") as fh:
        fh.seek(member.offset_data + member.size // 2)
        byte = fh.read(1)
        fh.seek(-1, io.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return dest


def test_a_tampered_archive_is_refused_in_one_line(built, tmp_path):
    tampered = _tamper(built, tmp_path / "taimatsu-offline.tar")
    venv = tmp_path / "venv"
    by_cli = subprocess.run(
        _bundle_cli("install", tampered, "--venv", venv, "--extract-to", tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert by_cli.returncode == 1
    assert by_cli.stderr.count("\n") == 1
    assert by_cli.stderr.startswith(f"taimatsu: error: {WHEEL} does not match its sha256")
    assert not venv.exists() and not (tmp_path / "taimatsu-bundle").exists()

    subprocess.run(["tar", "-xf", tampered, "-C", tmp_path], check=True)
    by_script = subprocess.run(
        ["sh", tmp_path / "taimatsu-bundle" / "install-offline.sh", "--venv", venv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert by_script.returncode == 1 and by_script.stderr.count("\n") == 1
    assert by_script.stderr.startswith(f"install-offline: error: {WHEEL} does not match")
    assert "copy the archive again" in by_script.stderr and not venv.exists()

    # with the archive's .sha256 beside it, the whole archive is checked first
    shutil.copy(built.with_name(built.name + ".sha256"), tmp_path)
    shutil.rmtree(tmp_path / "taimatsu-bundle")
    by_sidecar = subprocess.run(
        _bundle_cli("install", tampered, "--venv", venv, "--extract-to", tmp_path),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert by_sidecar.returncode == 1 and by_sidecar.stderr.count("\n") == 1
    assert "does not match taimatsu-offline.tar.sha256" in by_sidecar.stderr


def test_a_wheel_slipped_into_the_bundle_or_a_wrong_python_is_refused(built, tmp_path):
    bundle = bundle_install.extract(built, tmp_path)
    manifest = bundle_install.load_manifest(bundle)
    (bundle / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    with pytest.raises(BundleError, match=r"^wheels/evil-1.0-py3-none-any.whl is not in manifest"):
        bundle_install.verify_folder(bundle, manifest, echo=lambda _: None)
    (bundle / "wheels" / "evil-1.0-py3-none-any.whl").unlink()
    manifest["target"]["python"] = "3.10"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="wheels for Python 3.10 and this is Python 3.11"):
        bundle_install.install(bundle, tmp_path / "venv", echo=lambda _: None)
    assert not (tmp_path / "venv").exists()


def test_an_archive_reaching_outside_its_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("taimatsu-bundle/manifest.json", "taimatsu-bundle/../../evil.sh"):
            item = tarfile.TarInfo(name)
            item.size = 2
            tar.addfile(item, io.BytesIO(b"{}"))
    with pytest.raises(BundleError, match="evil.sh"):
        bundle_install.extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.sh").exists() and not (tmp_path / "out").exists()


def test_the_cuda_build_of_torch_is_refused(tmp_path):
    linux = ["manylinux_2_28_x86_64"]
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert check_cpu_torch(tmp_path, linux).name.startswith("torch-2.13.0+cpu")
    for wheel in tmp_path.iterdir():
        wheel.unlink()
    (tmp_path / "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (tmp_path / "nvidia_cublas_cu12-12.8.4.1-py3-none-manylinux_2_27_x86_64.whl").write_bytes(b"")
    with pytest.raises(BundleError, match="CUDA build of torch.*--find-links"):
        check_cpu_torch(tmp_path, linux)


def test_an_ollama_store_model_keeps_its_template_and_parameters(tmp_path):
    store = tmp_path / "models"
    blobs = store / "blobs"
    blobs.mkdir(parents=True)
    layers = []
    for kind, data in (
        ("model", GGUF),
        ("template", b"{{ .Prompt }}"),
        ("system", b"Be brief."),
        ("params", json.dumps({"stop": ["<|im_end|>"], "temperature": 0.7}).encode()),
        ("license", b"Apache 2.0"),
    ):
        (blobs / f"sha256-{_sha(data)}").write_bytes(data)
        layers.append(
            {
                "mediaType": f"application/vnd.ollama.image.{kind}",
                "digest": f"sha256:{_sha(data)}",
                "size": len(data),
            }
        )
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "qwen2.5" / "7b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))

    model = find_model(store, "qwen2.5:7b")
    assert model.gguf == blobs / f"sha256-{_sha(GGUF)}"
    assert model.modelfile.splitlines()[2:] == [
        "FROM ./model.gguf",
        'TEMPLATE """{{ .Prompt }}"""',
        'SYSTEM """Be brief."""',
        'PARAMETER stop "<|im_end|>"',
        "PARAMETER temperature 0.7",
        'LICENSE """Apache 2.0"""',
    ]
    with pytest.raises(OllamaSourceError, match="ollama pull qwen2.5:3b"):
        find_model(store, "qwen2.5:3b")


def test_a_model_folder_needs_exactly_one_gguf_file(tmp_path):
    with pytest.raises(OllamaSourceError, match="holds no .gguf file"):
        find_model(tmp_path, "qwen2.5:7b")
    (tmp_path / "m-00001-of-00002.gguf").write_bytes(GGUF)
    (tmp_path / "m-00002-of-00002.gguf").write_bytes(b"more")
    with pytest.raises(OllamaSourceError, match="2 GGUF files .* merge split files"):
        find_model(tmp_path, "qwen2.5:7b")
    for path in tmp_path.iterdir():
        path.unlink()
    (tmp_path / "model.gguf").write_bytes(b"<html>not found</html>")
    with pytest.raises(OllamaSourceError, match="is not a GGUF file"):
        find_model(tmp_path, "qwen2.5:7b")
