"""Which retrieval legs answer a question: the `TAIMATSU_RETRIEVAL` setting, routed by the
question's language (docs/decisions.md, decision 2, holds the numbers behind it).

`by-language` (the default): a question in Japanese is answered by the keyword leg alone
(the packaged all-MiniLM-L6-v2 does not place Japanese, so its leg only adds noise); any
other question by the dense leg alone, unless it names an exact term — a code or
identifier such as `VPN-0x2F`, `ISO9001`, `max_file_mb`, `getUserName` or a quoted
phrase — which the keyword leg finds and the dense leg may not: then both legs, fused.
"""

from __future__ import annotations

import re
from typing import Literal

Legs = Literal["both", "dense", "keyword"]
Retrieval = Literal["by-language", "hybrid", "dense", "keyword"]

_JAPANESE = re.compile(r"[\u3041-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")
_EXACT_TERM = re.compile(
    r"\b(?=[\w.-]*\d)(?=[\w.-]*[A-Za-z])\w[\w.-]*\w"  # letters and digits: VPN-0x2F, E1234
    r"|\w+(?:_|::|->)\w+"  # snake_case, Foo::Bar, $obj->method
    r"|\b[a-z]+[A-Z]\w*"  # camelCase
    r"|[\"“`「『][^\"”`」』]{2,}[\"”`」』]"  # a quoted phrase
)


def language_of(text: str) -> str:
    """'ja' when the text holds kana or kanji, else 'en'."""
    return "ja" if _JAPANESE.search(text[:2000]) else "en"


def names_exact_term(question: str) -> bool:
    return bool(_EXACT_TERM.search(question))


def legs_for(question: str, retrieval: Retrieval) -> Legs:
    if retrieval == "hybrid":
        return "both"
    if retrieval in ("dense", "keyword"):
        return retrieval
    if language_of(question) == "ja":
        return "keyword"
    return "both" if names_exact_term(question) else "dense"
