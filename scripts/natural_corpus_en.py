"""Build the English corpus of the natural-question gold set from Debian documentation.

    python scripts/natural_corpus_en.py [--cache data/eval-cache] [--out tests/data/eval/natural/en]

The questions in `<out>/gold.jsonl` and `<out>/conversations.jsonl` are written by hand
(see tests/data/eval/natural/README.md); this script only makes the documents they are
asked of. It fetches four pinned Debian packages with `apt-get download` into the cache,
unpacks them with `dpkg-deb -x`, and copies the chosen pages byte for byte — original
HTML, navigation, sidebars and all, since the product must cope with them — into
`<out>/corpus/<package>/<path inside the package's HTML folder>`. It writes
`<out>/NOTICE` (each package's copyright file) and `<out>/manifest.json` (package
versions, .deb checksums and every corpus file's checksum). The same package versions
always give the same bytes; the corpus is kept to about 1,500 chunks at the default
chunk size, so pages are chosen, not taken wholesale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

# package -> (pinned version, HTML folder inside the package, pages relative to it)
PACKAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "developers-reference": (
        "12.18",
        "usr/share/developers-reference",
        (
            "best-pkging-practices.html",
            "developer-duties.html",
            "new-maintainer.html",
            "pkgs.html",
            "resources.html",
            "tools.html",
        ),
    ),
    "maint-guide": (
        "1.2.53",
        "usr/share/doc/maint-guide/html",
        (
            "advanced.en.html",
            "build.en.html",
            "checkit.en.html",
            "dother.en.html",
            "dreq.en.html",
            "first.en.html",
            "modify.en.html",
            "start.en.html",
            "update.en.html",
            "upload.en.html",
        ),
    ),
    "debian-faq": (
        "11.1",
        "usr/share/doc/debian/FAQ",
        (
            "basic-defs.en.html",
            "choosing.en.html",
            "compatibility.en.html",
            "customizing.en.html",
            "ftparchives.en.html",
            "getting-debian.en.html",
            "kernel.en.html",
            "pkg-basics.en.html",
            "pkgtools.en.html",
            "software.en.html",
            "support.en.html",
            "uptodate.en.html",
        ),
    ),
    "python3.11-doc": (
        "3.11.2-6+deb12u9",
        "usr/share/doc/python3.11/html",
        (
            "howto/sorting.html",
            "library/glob.html",
            "library/tempfile.html",
            "tutorial/errors.html",
            "tutorial/floatingpoint.html",
            "tutorial/inputoutput.html",
            "tutorial/modules.html",
            "tutorial/stdlib.html",
            "tutorial/venv.html",
        ),
    ),
}
# Where each package's copyright file is (python3.11-doc's HTML lives in python3.11's doc
# folder, its copyright file in its own).
COPYRIGHT = "usr/share/doc/{package}/copyright"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(cache: Path, name: str, version: str) -> dict[str, str]:
    """The package's .deb in `cache` (downloaded if missing), unpacked in cache/root."""
    cache.mkdir(parents=True, exist_ok=True)
    deb = cache / f"{name}_{version.replace(':', '%3a')}_all.deb"
    if not deb.is_file():
        log(f"apt-get download {name}={version}")
        got = subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=cache)
        if got.returncode != 0:
            log(f"warning: {name} {version} is gone; taking the current candidate")
            subprocess.run(["apt-get", "download", name], cwd=cache, check=True)
            deb = max(cache.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
    actual = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if actual != version:
        log(f"warning: {name} is {actual}, not {version}: gold passages may no longer match")
    root = cache / "root"
    marker = root / f".{deb.name}.done"
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        marker.touch()
    return {"version": actual, "deb": deb.name, "sha256": sha256_file(deb)}


def build(cache: Path, out: Path) -> dict[str, object]:
    corpus = out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    root = cache / "root"
    packages: dict[str, dict[str, str]] = {}
    files: dict[str, str] = {}
    notices: list[str] = []
    for name, (version, folder, pages) in PACKAGES.items():
        packages[name] = fetch(cache, name, version)
        for page in pages:
            source = root / folder / page
            target = corpus / name / page
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)  # bytes only: no timestamps, no modes
            files[f"{name}/{page}"] = sha256_file(target)
        copyright_text = (root / COPYRIGHT.format(package=name)).read_text("utf-8")
        notices.append(
            f"== corpus/{name}/ (from Debian package {name} {packages[name]['version']}, "
            f"/{folder}; its copyright file follows) ==\n\n{copyright_text.rstrip()}\n"
        )
    (out / "NOTICE").write_text("\n\n".join(notices), encoding="utf-8")
    manifest = {"packages": packages, "files": dict(sorted(files.items()))}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {len(files)} pages from {len(packages)} packages to {corpus}")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("data/eval-cache"))
    parser.add_argument("--out", type=Path, default=Path("tests/data/eval/natural/en"))
    args = parser.parse_args()
    build(args.cache, args.out)


if __name__ == "__main__":
    main()
