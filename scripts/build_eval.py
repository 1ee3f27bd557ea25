"""Build the evaluation corpora and gold files from Debian documentation packages.

    python scripts/build_eval.py [--out data/eval] [--cache data/eval/cache]
    python scripts/build_eval.py --slice tests/data/eval      # the small committed slice

Two sets, each a folder `<out>/<set>/` holding `corpus/` (what gets indexed) and
`gold.jsonl` (one question a line: id, question, sources relative to `corpus/`, lang and,
for the Perl FAQ, the answer's first paragraph):

- `perl` (English): the Perl FAQ (perlfaq1-9 from Debian's `perl-doc`). Each FAQ entry
  becomes one document holding its answer only: the question heading is removed, so the
  question does not give its answer away; the entry's question is the query and its
  document the gold. The rest of the user-facing Perl documentation (perlfunc, perlop,
  perlre, perlsyn, ...; no deltas, ports, internals or tables of contents)
  stands beside them as distractors (64 pages). POD is converted to Markdown.
- `ja` (Japanese): man pages of `manpages-ja`, sections 1 and 8. A page's one-line
  description (NAME, 名前) is the query and the page the gold; the NAME section is
  removed from the indexed text. roff is converted to Markdown by a small stripper
  (deterministic, no groff needed). Pages are picked by a hash of their name, so the same
  package version always gives the same set.

The packages are fetched with `apt-get download` into the cache (pinned versions first,
the current candidate if those are gone, with a warning) and unpacked with `dpkg-deb -x`;
`<out>/manifest.json` records the package versions and checksums and the gold files'
checksums. Nothing is hand-written and nothing needs committing: run the script again.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_convert import (  # noqa: E402 - a sibling module, found through sys.path above
    ManPage,
    blocks_markdown,
    faq_entries,
    parse_man,
    pod_blocks,
    pod_copyright,
)

PACKAGES = {"perl-doc": "5.36.0-7+deb12u4", "manpages-ja": "0.5.0.0.20221215+dfsg-1"}
# Distractors: the Perl documentation a user reads. Left out: perltoc, perlfaq.pod and
# perl.pod's lists (they hold the FAQ questions), release notes (perl*delta), port
# READMEs, interpreter internals, licences and history, big generated tables.
PERL_EXCLUDE = re.compile(
    r"delta|^perlfaq|^perltoc$|^perlapi$|^perlintern$|^perluniprops$|^perl(aix|amiga|android"
    r"|bs2000|cygwin|freebsd|haiku|hpux|hurd|irix|linux|macosx|openbsd|os2|os390|os400|plan9"
    r"|qnx|riscos|solaris|synology|tru64|vms|vos|win32|cn|jp|ko|tw)$|^perl(guts|hack\w*"
    r"|interp|reguts|reapi|xs\w*|clib|debguts|mroapi|iol|embed|call|source|git|repository"
    r"|ebcdic|podspec|dtrace|artistic|gpl|hist|glossary|gov|policy|secpolicy|deprecation"
    r"|experiment|todo)$"
)
JA_SECTIONS = ("man1", "man8")
JA_PAGES = 240  # gold pages in the full Japanese set (each page answers its own query)
JA_MAX_CHARS = 12_000  # longer pages (bash, gcc, ...) are left out: they dominate embedding
SLICE = {"perl_gold": 20, "perl_extra": 20, "ja_gold": 15, "ja_extra": 5, "ja_max": 4000}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stable_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- fetching ------------------------------------------------------------------------------


def fetch(cache: Path) -> dict[str, dict[str, str]]:
    """The packages' .deb files in `cache` (downloaded if missing), unpacked in cache/root."""
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / "root"
    found: dict[str, dict[str, str]] = {}
    for name, version in PACKAGES.items():
        debs = sorted(cache.glob(f"{name}_*.deb"))
        if not debs:
            log(f"apt-get download {name}={version}")
            got = subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=cache)
            if got.returncode != 0:
                log(f"warning: {name} {version} is gone; taking the current candidate")
                subprocess.run(["apt-get", "download", name], cwd=cache, check=True)
            debs = sorted(cache.glob(f"{name}_*.deb"))
        deb = debs[-1]
        actual = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if actual != version:
            log(f"warning: {name} is {actual}, not {version}: scores may differ from docs")
        marker = root / f".{deb.name}.done"
        if not marker.exists():
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            marker.touch()
        found[name] = {"version": actual, "deb": deb.name, "sha256": sha256_file(deb)}
    return found


def build_perl(pod_dir: Path, out: Path, slice_sizes: dict[str, int] | None = None) -> int:
    entries = faq_entries(pod_dir)
    if slice_sizes:
        ordered = sorted(entries, key=lambda e: stable_key(e.id))
        gold = ordered[: slice_sizes["perl_gold"]]
        extra = ordered[len(gold) : len(gold) + slice_sizes["perl_extra"]]
        pods: list[Path] = []
    else:
        gold, extra = entries, []
        pods = sorted(p for p in pod_dir.glob("*.pod") if not PERL_EXCLUDE.search(p.stem))
    corpus = out / "corpus"
    for entry in sorted([*gold, *extra], key=lambda e: e.id):
        path = corpus / "faq" / f"{entry.id}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(entry.markdown, encoding="utf-8")
    for pod in pods:
        path = corpus / "pod" / f"{pod.stem}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(blocks_markdown(pod_blocks(pod.read_text("utf-8"))), encoding="utf-8")
    used = sorted({e.id.split("-")[0] for e in [*gold, *extra]})
    notices = [
        f"== faq/{name}-*.md (from {name}.pod) ==\n{pod_copyright(pod_dir / f'{name}.pod')}\n"
        for name in used
    ]
    (out / "NOTICE").write_text("\n".join(notices), encoding="utf-8")
    rows = [
        {
            "id": e.id,
            "question": e.question,
            "sources": [f"faq/{e.id}.md"],
            "answer": e.first_paragraph,
            "lang": "en",
        }
        for e in sorted(gold, key=lambda e: e.id)
    ]
    write_gold(out / "gold.jsonl", rows)
    log(f"perl: {len(rows)} questions, {len(gold) + len(extra)} FAQ answers, {len(pods)} pods")
    return len(rows)


_JA_CHAR = re.compile(r"[\u3041-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")


def good_query(description: str) -> bool:
    """A description that reads as a Japanese question of its own."""
    return len(_JA_CHAR.findall(description)) >= 6 and "マニュアルページ" not in description


def man_pages(man_dir: Path, max_chars: int) -> list[ManPage]:
    pages: list[ManPage] = []
    for section in JA_SECTIONS:
        for path in sorted((man_dir / section).glob("*.gz")):
            if path.is_symlink():
                continue
            name = path.name.removesuffix(".gz").rsplit(".", 1)[0]
            text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
            page = parse_man(text, name, section)
            if page and good_query(page.description) and len(page.markdown) <= max_chars:
                pages.append(page)
    counts: dict[str, int] = {}
    for page in pages:
        counts[page.description] = counts.get(page.description, 0) + 1
    return [p for p in pages if counts[p.description] == 1]  # one gold per query


def build_ja(man_dir: Path, out: Path, slice_sizes: dict[str, int] | None = None) -> int:
    limit = slice_sizes["ja_max"] if slice_sizes else JA_MAX_CHARS
    pages = sorted(man_pages(man_dir, limit), key=lambda p: stable_key(p.section + p.name))
    n_gold = slice_sizes["ja_gold"] if slice_sizes else JA_PAGES
    gold = pages[:n_gold]
    extra = pages[n_gold : n_gold + slice_sizes["ja_extra"]] if slice_sizes else []
    for page in [*gold, *extra]:
        path = out / "corpus" / page.section / f"{page.name}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page.markdown, encoding="utf-8")
    notices = [
        f"== {p.section}/{p.name}.md (from usr/share/man/ja/{p.section}/{p.name}."
        f"{p.section[3:]}.gz) ==\n{p.notice or '(no notice in the page source)'}\n"
        for p in sorted([*gold, *extra], key=lambda p: (p.section, p.name))
    ]
    (out / "NOTICE").write_text("\n".join(notices), encoding="utf-8")
    rows = [
        {
            "id": f"{p.section}-{p.name}",
            "question": p.description,
            "sources": [f"{p.section}/{p.name}.md"],
            "lang": "ja",
        }
        for p in sorted(gold, key=lambda p: (p.section, p.name))
    ]
    write_gold(out / "gold.jsonl", rows)
    log(f"ja: {len(rows)} questions over {len(gold) + len(extra)} man pages")
    return len(rows)


def write_gold(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/eval"))
    parser.add_argument("--cache", type=Path, default=None, help="default: <out>/cache")
    parser.add_argument(
        "--slice", type=Path, default=None, help="write the small test slice to this folder"
    )
    args = parser.parse_args()
    out = args.slice or args.out
    cache = args.cache or (args.out / "cache")
    packages = fetch(cache)
    pod_dir = next((cache / "root/usr/share/perl").glob("5.*/pod"))
    man_dir = cache / "root/usr/share/man/ja"
    sizes = SLICE if args.slice else None
    for name in ("perl", "ja"):
        shutil.rmtree(out / name, ignore_errors=True)
    counts = {
        "perl": build_perl(pod_dir, out / "perl", sizes),
        "ja": build_ja(man_dir, out / "ja", sizes),
    }
    manifest = {
        "packages": packages,
        "questions": counts,
        "gold_sha256": {n: sha256_file(out / n / "gold.jsonl") for n in counts},
        "slice": bool(args.slice),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {out}/perl and {out}/ja (manifest.json records the package versions)")


if __name__ == "__main__":
    main()
