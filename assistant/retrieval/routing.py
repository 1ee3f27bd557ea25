"""Which retrieval legs answer a question: the `TAIMATSU_RETRIEVAL` setting, routed by the
question's language (docs/decisions.md, decision 2, holds the numbers behind it).

`by-language` (the default): a question in Japanese is answered by the keyword leg alone
(the packaged all-MiniLM-L6-v2 does not place Japanese, so its leg only adds noise); any
other question by the dense leg alone, unless it names an exact term — a code or
identifier such as `VPN-0x2F`, `ISO9001`, `max_file_mb`, `getUserName` or a quoted
phrase — which the keyword leg finds and the dense leg may not: then both legs, fused.
With a multilingual embedding model (a served bge-m3 or multilingual-e5; the model stamp
says `multilingual`), a Japanese question is answered by MULTILINGUAL_JAPANESE instead.
"""

from __future__ import annotations

import re
from typing import Literal

from assistant.index import Legs

Retrieval = Literal["by-language", "hybrid", "dense", "keyword"]

_JAPANESE = re.compile(r"[\u3041-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
_TOKEN = re.compile(r"[\w.:>-]+")  # a word with the joiners of codes and identifiers
_DIGIT = re.compile(r"\d")
_LATIN = re.compile(r"[A-Za-z]")
_CAMEL = re.compile(r"(?:^|[.:>-])[a-z]+[A-Z]")  # camelCase, not PascalCase
_QUOTED = re.compile(r"[\"“`「『][^\"”`」』]{2,}[\"”`」』]")


def language_of(text: str) -> str:
    """'ja' when the text holds kana or kanji, else 'en'."""
    return "ja" if _JAPANESE.search(text[:2000]) else "en"


def names_exact_term(question: str) -> bool:
    """A code or identifier in the question: a word mixing letters and digits (VPN-0x2F,
    E1234), a snake_case, Foo::Bar or $obj->method name, a camelCase word, or a quoted
    phrase. Linear in the question's length (it is asked of every question)."""
    if _QUOTED.search(question):
        return True
    for token in _TOKEN.findall(question):
        word = token.strip(".:>-")
        if _DIGIT.search(word) and _LATIN.search(word):
            return True
        if "_" in word.strip("_") or "::" in word or "->" in word or _CAMEL.search(word):
            return True
    return False


MULTILINGUAL_JAPANESE: Legs = "both"  # docs/decisions.md, 11: measured with multilingual-e5


def legs_for(question: str, retrieval: Retrieval, multilingual: bool = False) -> Legs:
    """The legs for `question`; `multilingual`: the index's embedding model places
    Japanese (its stamp says so), and a Japanese question uses the dense leg too."""
    if retrieval == "hybrid":
        return "both"
    if retrieval in ("dense", "keyword"):
        return retrieval
    if language_of(question) == "ja":
        return MULTILINGUAL_JAPANESE if multilingual else "keyword"
    return "both" if names_exact_term(question) else "dense"
