"""Documents to sections of text, each with its page (PDF) or heading path.

Parsers are chosen for their licences and upkeep: pypdf (BSD), python-docx (MIT),
BeautifulSoup with lxml (MIT/BSD), markdown-it-py (MIT), charset-normalizer (MIT); and,
in their own modules, python-pptx and openpyxl (ingest.office), csv (ingest.tables),
email (ingest.mail), pypdfium2 with the tesseract program for scans (ingest.ocr).
Office files pass the zip-bomb checks of ingest.containers before a library opens them.
Every parser raises `ParseError` with a short reason a person can act on.
"""

from __future__ import annotations

import codecs
import importlib
import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from charset_normalizer import from_bytes


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None
    section: str | None = None


class ParseError(Exception):
    """A file that cannot be read, with a one-line reason."""


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
    text = _strict(data, "utf-8") or _utf16_without_bom(data)
    if text is None and b"\x00" not in data:
        japanese = [t for t in (_strict(data, "cp932"), _strict(data, "euc_jp")) if t]
        japanese = [t for t in japanese if _japanese_score(t) > 0.05]
        text = max(japanese, key=_japanese_score) if japanese else _strict(data, "cp1252")
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


def _strict(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


class _Headings:
    """The current heading path, kept by heading level."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> None:
        self.path = [(lvl, t) for lvl, t in self.path if lvl < level]
        if title:
            self.path.append((level, title))

    def __str__(self) -> str:
        return " > ".join(title for _, title in self.path)


def _sections(pairs: list[tuple[str, str]]) -> list[Section]:
    return [Section(text.strip(), None, heading or None) for heading, text in pairs if text.strip()]


def parse_text(data: bytes) -> list[Section]:
    return _sections([("", decode_text(data))])


def parse_markdown(data: bytes) -> list[Section]:
    from markdown_it import MarkdownIt

    text = decode_text(data)
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    headings = _Headings()
    pairs: list[tuple[str, str]] = []
    start = 0
    current = ""
    for i, token in enumerate(tokens):
        if token.type != "heading_open" or token.map is None:
            continue
        begin, end = token.map
        pairs.append((current, "\n".join(lines[start:begin])))
        headings.enter(int(token.tag[1:]), tokens[i + 1].content.strip())
        current = str(headings)
        start = end
    pairs.append((current, "\n".join(lines[start:])))
    return _sections(pairs)


_HTML_BLOCKS = {
    "p", "div", "li", "ul", "ol", "table", "tr", "td", "th", "pre", "blockquote", "br",
    "section", "article", "dt", "dd", "dl", "figcaption", "hr", "header", "footer", "main",
}  # fmt: skip
_HTML_DROP = ("script", "style", "noscript", "template", "head", "svg", "iframe", "object")


def parse_html(data: bytes | str) -> list[Section]:
    """HTML as sections by heading; `data` may be already-decoded text (mail bodies)."""
    from bs4 import BeautifulSoup, NavigableString, Tag

    if isinstance(data, bytes):  # valid UTF-8 is UTF-8 (bs4 took 2 kana for GB18030)
        data = _strict(data, "utf-8-sig") or data
    soup = BeautifulSoup(data, "lxml")
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    headings = _Headings()
    pairs: list[tuple[str, str]] = []
    buffer: list[str] = []
    current = ""
    skip: set[int] = set()
    for node in (soup.body or soup).descendants:
        if isinstance(node, Tag):
            if re.fullmatch(r"h[1-6]", node.name or ""):
                pairs.append((current, "".join(buffer)))
                buffer = []
                headings.enter(int(node.name[1]), " ".join(node.get_text(" ").split()))
                current = str(headings)
                skip.update(id(s) for s in node.find_all(string=True))
            elif node.name in _HTML_BLOCKS:
                buffer.append("\n")
        elif isinstance(node, NavigableString) and id(node) not in skip:
            if type(node) is NavigableString:  # not a Comment, CData, Doctype...
                buffer.append(str(node))
    pairs.append((current, "".join(buffer)))
    cleaned = [(h, re.sub(r"[ \t\r\f\v]+", " ", t)) for h, t in pairs]
    return _sections([(h, re.sub(r"\s*\n\s*", "\n", t)) for h, t in cleaned])


MIN_PAGE_CHARS = 10  # fewer non-space characters than this: a scan (maybe with a stamp)


def parse_pdf(data: bytes) -> list[Section]:
    """Text per page (page = 1-based number). Pages without a text layer are read with
    OCR when tesseract is installed (see ingest.ocr); the others are never OCR'd."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("password-protected PDF; save an unprotected copy to index it")
        texts = {n: (p.extract_text() or "").strip() for n, p in enumerate(reader.pages, 1)}
    except ParseError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ParseError(f"unreadable PDF ({exc.__class__.__name__}: {exc})"[:200]) from exc
    scanned = [n for n, text in texts.items() if len("".join(text.split())) < MIN_PAGE_CHARS]
    ocr_ready = False
    if scanned:
        from ingest import ocr

        ocr_ready = ocr.available()
        texts.update(ocr.ocr_pages(data, scanned) if ocr_ready else {})
    sections = [Section(text, n, None) for n, text in sorted(texts.items()) if text]
    if not sections and not ocr_ready:
        raise ParseError(
            "PDF has no text layer (a scanned document?); it needs OCR "
            "(install tesseract-ocr to index scanned PDFs)"
        )
    if not sections:
        raise ParseError(
            "PDF has no text layer and OCR found no text in it; "
            "check the scan (resolution, orientation) or export the PDF with text"
        )
    return sections


def parse_docx(data: bytes) -> list[Section]:
    from ingest.containers import check_office_zip

    check_office_zip(data, "DOCX")
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError) as exc:
        raise ParseError(
            f"not a valid DOCX file ({exc.__class__.__name__}); open it in Word and save it again"
        ) from exc
    headings = _Headings()
    pairs: list[tuple[str, str]] = []
    buffer: list[str] = []
    current = ""
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                buffer.append(" | ".join(dict.fromkeys(cells)))
            continue
        style = (block.style.name if block.style is not None else "") or ""
        level = re.fullmatch(r"Heading (\d)", style)
        if level or style == "Title":
            pairs.append((current, "\n".join(buffer)))
            buffer = []
            headings.enter(int(level.group(1)) if level else 0, block.text.strip())
            current = str(headings)
        else:
            buffer.append(block.text)
    pairs.append((current, "\n".join(buffer)))
    return _sections(pairs)


def _lazy(module: str, name: str) -> Callable[[bytes], list[Section]]:
    """A parser from another module, imported on first use: `supported()` and the
    registry stay cheap, and those modules may import this one."""

    def run(data: bytes) -> list[Section]:
        return getattr(importlib.import_module(module), name)(data)

    run.__name__ = run.__qualname__ = name
    return run


PARSERS: dict[str, Callable[[bytes], list[Section]]] = {
    ".txt": parse_text,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".pptx": _lazy("ingest.office", "parse_pptx"),
    ".xlsx": _lazy("ingest.office", "parse_xlsx"),
    ".csv": _lazy("ingest.tables", "parse_csv"),
    ".tsv": _lazy("ingest.tables", "parse_csv"),
    ".eml": _lazy("ingest.mail", "parse_eml"),
}


def supported(path: Path) -> bool:
    return path.suffix.lower() in PARSERS


def parse(path: Path, data: bytes) -> list[Section]:
    if not data.strip():
        raise ParseError("empty file")
    sections = PARSERS[path.suffix.lower()](data)
    if not sections:
        raise ParseError("no text found")
    return sections
