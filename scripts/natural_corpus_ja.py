"""Build the corpus of the Japanese natural-question set (tests/data/eval/natural/ja).

    python scripts/natural_corpus_ja.py [--cache data/eval-cache] [--out tests/data/eval/natural/ja]

Debian's Japanese documentation, as an organisation's own documents would be indexed:

- `maint-guide-ja` (Debian New Maintainers' Guide): every chapter, the original
  `*.ja.html` files (the table of contents, index.ja.html, is left out).
- `developers-reference-ja` (Debian Developer's Reference): the chapters on becoming a
  maintainer, a developer's duties, handling packages and work beyond packaging, the
  original HTML files (the one-page edition, the index, search page and the other
  chapters are left out to keep the index small).
- `manpages-ja` (JM Project): a few administration man pages, roff converted to
  Markdown by scripts/doc_convert.py (the same converter scripts/build_eval.py uses); the
  page's one-line description is kept under its title, as a reader sees it.

Not debian-reference-ja: acceptance runs use it. The three packages are fetched at pinned
versions with `apt-get download` into the cache (not committed) and unpacked with
`dpkg-deb -x`. Files keep their paths relative to the package's documentation folder,
under a folder named after the package (`corpus/maint-guide-ja/start.ja.html`,
`corpus/manpages-ja/man1/crontab.md`). `manifest.json` records the package versions and
checksums and each corpus file's checksum; `NOTICE` the copyright and licences. The same
package versions always give the same bytes. The gold questions (gold.jsonl,
conversations.jsonl) are hand-written against these files and are not touched here.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_convert import parse_man  # noqa: E402 - a sibling module, found through sys.path above

PACKAGES = {
    "maint-guide-ja": "1.2.53",
    "developers-reference-ja": "12.18",
    "manpages-ja": "0.5.0.0.20221215+dfsg-1",
}
# package -> (its HTML folder in the unpacked package, the chapters taken)
HTML = {
    "maint-guide-ja": (
        "usr/share/doc/maint-guide-ja/html",
        [
            "start.ja.html",
            "first.ja.html",
            "modify.ja.html",
            "dreq.ja.html",
            "dother.ja.html",
            "build.ja.html",
            "checkit.ja.html",
            "upload.ja.html",
            "update.ja.html",
            "advanced.ja.html",
        ],
    ),
    "developers-reference-ja": (
        "usr/share/developers-reference/ja",
        ["new-maintainer.html", "developer-duties.html", "pkgs.html", "beyond-pkging.html"],
    ),
}
MAN_DIR = "usr/share/man/ja"
# Administration pages an employee might ask about (section, name); short pages only, the
# long ones (find, tar, sudoers, mount ...) would dominate the index.
MAN_PAGES = [
    ("1", "at"),
    ("1", "chmod"),
    ("1", "chown"),
    ("1", "crontab"),
    ("1", "df"),
    ("1", "du"),
    ("1", "flock"),
    ("1", "free"),
    ("1", "kill"),
    ("1", "ln"),
    ("1", "nohup"),
    ("1", "setfacl"),
    ("1", "sha256sum"),
    ("1", "tail"),
    ("1", "timeout"),
    ("5", "crontab"),
    ("5", "fstab"),
    ("5", "hosts"),
    ("8", "mkswap"),
    ("8", "shutdown"),
    ("8", "swapon"),
    ("8", "visudo"),
]
MAN_FOLDER = "manpages-ja"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(cache: Path, any_version: bool) -> dict[str, dict[str, str]]:
    """The pinned packages' .deb files in `cache` (downloaded if missing), unpacked in
    cache/root."""
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / "root"
    found: dict[str, dict[str, str]] = {}
    for name, version in PACKAGES.items():
        debs = sorted(cache.glob(f"{name}_*.deb"))
        if not debs:
            log(f"apt-get download {name}={version}")
            got = subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=cache)
            if got.returncode != 0:
                if not any_version:
                    sys.exit(
                        f"{name} {version} cannot be downloaded; run `apt-get update`, or pass "
                        "--any-version to take the current one (then run check_gold.py)"
                    )
                log(f"warning: {name} {version} is gone; taking the current candidate")
                subprocess.run(["apt-get", "download", name], cwd=cache, check=True)
            debs = sorted(cache.glob(f"{name}_*.deb"))
        deb = debs[-1]
        actual = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if actual != version:
            if not any_version:
                sys.exit(f"{deb} is {name} {actual}, not {version}; remove it or --any-version")
            log(f"warning: {name} is {actual}, not {version}: gold passages may not match")
        marker = root / f".{deb.name}.done"
        if not marker.exists():
            root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            marker.touch()
        found[name] = {
            "version": actual,
            "deb": deb.name,
            "sha256": sha256_bytes(deb.read_bytes()),
        }
    return found


def man_markdown(root: Path, section: str, name: str) -> tuple[str, str, str]:
    """(Markdown, the roff file's path in the package, its copyright comment)."""
    source = f"{MAN_DIR}/man{section}/{name}.{section}.gz"
    text = gzip.decompress((root / source).read_bytes()).decode("utf-8", "replace")
    page = parse_man(text, name, f"man{section}")
    if page is None:
        raise SystemExit(f"{source} is not a man(7) page with a description")
    title, _, body = page.markdown.partition("\n\n")
    markdown = f"{title}\n\n{name} - {page.description}\n\n{body}"
    return markdown, source, page.notice


def build(root: Path, out: Path) -> dict[str, dict[str, str]]:
    """Write corpus/ and NOTICE; return {corpus path: {from, sha256}}."""
    corpus = out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    files: dict[str, dict[str, str]] = {}

    def write(relative: str, data: bytes, origin: str) -> None:
        path = corpus / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[relative] = {"from": origin, "sha256": sha256_bytes(data)}

    for package, (folder, names) in HTML.items():
        for name in names:
            write(f"{package}/{name}", (root / folder / name).read_bytes(), f"{folder}/{name}")
    man_notices = []
    for section, name in MAN_PAGES:
        markdown, source, notice = man_markdown(root, section, name)
        relative = f"{MAN_FOLDER}/man{section}/{name}.md"
        write(relative, markdown.encode("utf-8"), source)
        man_notices.append(
            f"== {relative} (from {source}) ==\n{notice or '(no notice in the page source)'}\n"
        )
    doc = root / "usr/share/doc"
    parts = [
        "Documents in corpus/, from Debian packages (versions in manifest.json). Each\n"
        "package's copyright file follows, then each man page's own copyright and licence\n"
        "comment from its roff source.\n",
        *(
            f"==== {package}: corpus/{package}/ (usr/share/doc/{package}/copyright) ====\n"
            + (doc / package / "copyright").read_text(encoding="utf-8")
            for package in (*HTML, MAN_FOLDER)
        ),
        *man_notices,
    ]
    (out / "NOTICE").write_text("\n".join(parts), encoding="utf-8")
    return dict(sorted(files.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("data/eval-cache"))
    parser.add_argument("--out", type=Path, default=Path("tests/data/eval/natural/ja"))
    parser.add_argument(
        "--any-version",
        action="store_true",
        help="take the current package when a pinned version is gone (gold may not match)",
    )
    args = parser.parse_args()
    packages = fetch(args.cache, args.any_version)
    args.out.mkdir(parents=True, exist_ok=True)
    files = build(args.cache / "root", args.out)
    manifest = {"packages": packages, "files": files}
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (args.out / "manifest.json").write_text(text, encoding="utf-8")
    log(f"wrote {len(files)} documents to {args.out / 'corpus'} (manifest.json, NOTICE)")


if __name__ == "__main__":
    main()
