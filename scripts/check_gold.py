"""Check the natural-question gold sets: every gold passage is really in its document, and
no question copies its document.

    python scripts/check_gold.py tests/data/eval/natural            # every set under it
    python scripts/check_gold.py tests/data/eval/natural/ja --stats
    python scripts/check_gold.py tests/data/eval/natural/en-ja   # English about ja/corpus

A set is a folder holding `corpus/` (the documents, as ingested, or a symbolic link to
another set's: `en-ja/` asks English questions of `ja/corpus`), `gold.jsonl` (one
question a line) and optionally `conversations.jsonl`:

    {"id": "ja-001", "lang": "ja", "question": "…", "answerable": true,
     "sources": ["maint-guide-ja/ch-start.ja.html"], "passage": "…", "style": "polite"}
    {"id": "ja-u01", "lang": "ja", "question": "…", "answerable": false, "sources": []}
    {"id": "conv-ja-01", "lang": "ja", "turns": [{"question": "…", "sources": […],
     "passage": "…", "kind": "first" | "topic-change"},
     {"question": "それって取り消せる？", "standalone": "NMUをアップロードしたあとで取り消せる？",
      "sources": […], "passage": "…", "kind": "follow-up"}, …]}

A follow-up turn's `standalone` is the question rewritten as one standalone question in
the turn's language (pronouns and ellipses resolved from the earlier turns, nothing
added): the answer an Ollama-protocol test server gives the product's rewrite step.

Rules, each a failure:
- ids unique; `lang` is en or ja; an answerable question has sources that exist in the
  corpus and a `passage`, found verbatim (whitespace aside) in the text the product's own
  parser reads from one of those sources; an unanswerable one has no sources.
- A follow-up turn has a non-empty `standalone` string; a first or topic-change turn has
  none.
- A question copies its document when it shares with the gold document's text a run of
  COPY_WORDS words (English) or COPY_CHARS characters (Japanese, whitespace and
  punctuation removed, NFKC). Names of commands and options are allowed to be shared:
  runs of two or more ASCII letters, digits and `-_./` break a Japanese run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.parsing import parse  # noqa: E402 - the project root, put on sys.path above

COPY_WORDS = 6
COPY_CHARS = 12
STYLES = {"polite", "casual", "short", "long", "paraphrase"}
KINDS = {"first", "follow-up", "topic-change"}
_PUNCT = re.compile(r"[\s\W_]+", re.UNICODE)
_ASCII_RUN = re.compile(r"[A-Za-z0-9._\-/]{2,}")  # a name: two or more ASCII characters
_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")


def _squash(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


@lru_cache(maxsize=256)
def document_text(path: Path) -> str:
    return _squash("\n".join(s.text for s in parse(path, path.read_bytes())))


def _ja_key(text: str) -> str:
    pieces = _ASCII_RUN.split(unicodedata.normalize("NFKC", text))
    return "\x00".join(_PUNCT.sub("", piece) for piece in pieces)  # names may be shared


def longest_shared_run(question: str, document: str, lang: str) -> int:
    """Longest run shared by the question and the document: words for English, characters
    (no spaces or punctuation, ASCII names masked) for Japanese."""
    if lang == "en":
        q = _WORD.findall(question.lower())
        d = " " + " ".join(_WORD.findall(document.lower())) + " "
        best = 0
        for i in range(len(q)):
            for j in range(i + best + 1, len(q) + 1):
                if " " + " ".join(q[i:j]) + " " in d:
                    best = j - i
                else:
                    break
        return best
    q, d = _ja_key(question), _ja_key(document)
    best = 0
    for i in range(len(q)):
        for j in range(i + best + 1, len(q) + 1):
            piece = q[i:j]
            if "\x00" in piece or piece not in d:
                break
            best = j - i
    return best


def _check_item(item: dict, where: str, corpus: Path, lang: str, problems: list[str]) -> None:
    question = item.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append(f"{where}: no question")
        return
    sources = item.get("sources") or []
    if item.get("answerable", True) is False:
        if sources:
            problems.append(f"{where}: an unanswerable question has sources")
        return
    if not sources:
        problems.append(f"{where}: an answerable question needs its sources")
        return
    texts = []
    for source in sources:
        path = corpus / source
        if not path.is_file():
            problems.append(f"{where}: {source} is not in {corpus}")
            return
        texts.append(document_text(path))
    passage = _squash(item.get("passage") or "")
    if not passage:
        problems.append(f"{where}: no gold passage")
    elif not any(passage in text for text in texts):
        problems.append(f"{where}: the passage is not in {', '.join(sources)}: {passage[:60]!r}")
    limit = COPY_WORDS if lang == "en" else COPY_CHARS
    shared = max(longest_shared_run(question, text, lang) for text in texts)
    if shared >= limit:
        unit = "words" if lang == "en" else "characters"
        problems.append(f"{where}: copies {shared} {unit} of its document: {question!r}")


def check_set(folder: Path) -> tuple[list[str], Counter]:
    problems: list[str] = []
    stats: Counter = Counter()
    corpus = folder / "corpus"
    seen: set[str] = set()
    for name in ("gold.jsonl", "conversations.jsonl"):
        path = folder / name
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                problems.append(f"{where}: not JSON ({exc})")
                continue
            ident = str(row.get("id", ""))
            if not ident or ident in seen:
                problems.append(f"{where}: missing or repeated id {ident!r}")
            seen.add(ident)
            lang = row.get("lang")
            if lang not in ("en", "ja"):
                problems.append(f"{where}: lang must be en or ja")
                continue
            if name == "gold.jsonl":
                answerable = row.get("answerable", True) is not False
                stats["answerable" if answerable else "unanswerable"] += 1
                if answerable:
                    style = row.get("style")
                    if style not in STYLES:
                        problems.append(f"{where}: style must be one of {sorted(STYLES)}")
                    stats[f"style {style}"] += 1
                    stats["under 15 characters"] += len(row.get("question", "")) < 15
                _check_item(row, where, corpus, lang, problems)
            else:
                turns = row.get("turns") or []
                if not 3 <= len(turns) <= 4:
                    problems.append(f"{where}: a conversation has 3 or 4 turns")
                stats["conversations"] += 1
                for t, turn in enumerate(turns, 1):
                    stats["turns"] += 1
                    kind = turn.get("kind")
                    if kind not in KINDS or (t == 1) != (kind == "first"):
                        problems.append(f"{where} turn {t}: kind must be one of {sorted(KINDS)}")
                    stats[f"turn {kind}"] += 1
                    standalone = turn.get("standalone")
                    if kind == "follow-up":
                        if not isinstance(standalone, str) or not standalone.strip():
                            problems.append(f"{where} turn {t}: a follow-up needs a standalone")
                    elif "standalone" in turn:
                        problems.append(f"{where} turn {t}: only a follow-up has a standalone")
                    _check_item(turn, f"{where} turn {t}", corpus, lang, problems)
    return problems, stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--stats", action="store_true", help="print counts per set")
    args = parser.parse_args()
    sets = [
        p.parent
        for folder in args.folders
        for p in sorted([folder / "gold.jsonl", *folder.glob("*/gold.jsonl")])
        if p.is_file()
    ]
    if not sets:
        print("check_gold: no gold.jsonl under the given folders", file=sys.stderr)
        return 2
    failed = 0
    for folder in sets:
        problems, stats = check_set(folder)
        failed += len(problems)
        for problem in problems:
            print(problem)
        if args.stats or problems:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(stats.items()))
            print(f"{folder}: {counts}", file=sys.stderr)
    print(f"check_gold: {len(sets)} sets, {failed} problems", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
