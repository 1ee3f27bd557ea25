"""What every parser shares: the `Section` it returns, the `ParseError` it raises with a
short reason a person can act on, text decoding (`decode_text`) and the heading path
(`Headings`). Format modules import this one; `registry` imports them all."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from charset_normalizer import from_bytes

from assistant.errors import ParseError


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None
    section: str | None = None


_HIRAGANA = re.compile(r"[\u3041-\u309f、。]")


def _japanese_score(text: str) -> float:
    """Share of hiragana and Japanese punctuation: high in real Japanese, near zero in
    bytes decoded with the wrong Japanese codec."""
    return len(_HIRAGANA.findall(text)) / max(1, len(text))


def _utf16_without_bom(data: bytes) -> str | None:
    if len(data) < 4 or len(data) % 2:
        return None
    even, odd = data[0::2].count(0), data[1::2].count(0)
    if max(even, odd) < len(data) // 8:
        return None
    try:
        return data.decode("utf-16-be" if even > odd else "utf-16-le")
    except UnicodeDecodeError:
        return None


def decode_text(data: bytes) -> str:
    """Bytes of a text file to str. In order: a BOM; strict UTF-8; UTF-16 without BOM;
    Shift_JIS (cp932) or EUC-JP, whichever reads as Japanese; CP1252; then
    charset-normalizer's guess. NUL bytes left over mean binary data."""
    for bom, encoding in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    text = strict_decode(data, "utf-8") or _utf16_without_bom(data)
    if text is None and b"\x00" not in data:
        japanese = [t for t in (strict_decode(data, "cp932"), strict_decode(data, "euc_jp")) if t]
        japanese = [t for t in japanese if _japanese_score(t) > 0.05]
        text = max(japanese, key=_japanese_score) if japanese else strict_decode(data, "cp1252")
        if text is None:
            best = from_bytes(data).best()
            text = str(best) if best is not None else None
    if text is None or "\x00" in text or _control_share(text) > 0.05:
        raise ParseError("not a text file (binary data or unknown encoding)")
    return text


def _control_share(text: str) -> float:
    sample = text[:65536]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    return controls / max(1, len(sample))


def strict_decode(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


class Headings:
    """The current heading path, kept by heading level."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> None:
        self.path = [(lvl, t) for lvl, t in self.path if lvl < level]
        if title:
            self.path.append((level, title))

    def __str__(self) -> str:
        return " > ".join(title for _, title in self.path)


def sections_from(pairs: list[tuple[str, str]]) -> list[Section]:
    return [Section(text.strip(), None, heading or None) for heading, text in pairs if text.strip()]
