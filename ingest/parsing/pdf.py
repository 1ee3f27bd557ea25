"""PDF text per page with pypdf (BSD); pages without a text layer go to OCR
(ingest.parsing.ocr) when tesseract is installed.

Tables stay tables: on a page that draws lines or rectangles, pdfplumber (MIT) looks for
ruled tables, and each one found becomes "Header: value; ..." rows as spreadsheets do
(ingest.parsing.tables), between the page's text above and below it. Pages that draw
nothing (most text pages) are never given to pdfplumber; a page it cannot read keeps
pypdf's text.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

from assistant.errors import ParseError
from ingest.parsing.base import Section
from ingest.parsing.tables import table_lines

log = logging.getLogger(__name__)

MIN_PAGE_CHARS = 10  # fewer non-space characters than this: a scan (maybe with a stamp)
MIN_DRAWING_OPS = 4  # fewer rectangles and line segments than this: no ruled table
_DRAWING = re.compile(rb"\s(?:re|l)\s")
EDGE_LINES = 2  # lines at the top and at the bottom of a page where running heads sit
_DIGITS = re.compile(r"\d+")
COUNTER_TOKENS = 5  # "Page 3 of 12", "- 3 -", "3 / 12": a page counter is this short


def _furniture_key(line: str) -> str:
    """A line as a running head or foot repeats it: numbers (the page's, a date) as #."""
    return _DIGITS.sub("#", " ".join(line.split())).casefold()


def _running(lines: dict[int, str]) -> bool:
    """Whether the lines (page: line) that share a key are a running head or foot: the
    same words on every page (a title, a footer: three letters at least, so that no row
    of numbers counts), or a short page counter whose first number moves with the page."""
    texts = {" ".join(line.split()) for line in lines.values()}
    if len(texts) == 1:
        return sum(c.isalpha() for c in next(iter(texts))) >= 3
    offsets = set()
    for page, line in lines.items():
        number = _DIGITS.search(line)
        if number is None or len(line.split()) > COUNTER_TOKENS or len(line.strip()) > 24:
            return False
        offsets.add(page - int(number.group()))
    return len(offsets) == 1


def strip_running_lines(texts: dict[int, str]) -> dict[int, str]:
    """Pages without their running heads and feet ("Page 3 of 12", "- 3 -", the title
    or footer printed on every page): a line among the first or last `EDGE_LINES` of a
    page that stands there on at least half the pages (and two at least), `_running`.
    A page is never emptied by it; a one-page PDF keeps everything."""
    pages = {n: text.splitlines() for n, text in texts.items()}
    edges: dict[int, set[int]] = {}  # page: the indices of its edge lines
    found: dict[str, dict[int, str]] = {}
    for n, lines in pages.items():
        filled = [i for i, line in enumerate(lines) if line.strip()]
        edges[n] = set(filled[:EDGE_LINES] + filled[-EDGE_LINES:])
        for i in sorted(edges[n]):
            found.setdefault(_furniture_key(lines[i]), {}).setdefault(n, lines[i])
    needed = max(2, (len(texts) + 1) // 2)
    running = {key for key, lines in found.items() if len(lines) >= needed and _running(lines)}
    if not running:
        return texts
    out = {}
    for n, lines in pages.items():
        kept = [
            line
            for i, line in enumerate(lines)
            if i not in edges[n] or _furniture_key(line) not in running
        ]
        body = "\n".join(kept).strip()
        out[n] = body or texts[n]  # all of it at the edges: nothing to tell furniture by
    return out


def _draws(page: Any) -> bool:
    """Whether a pypdf page's content draws enough rectangles or lines for a table."""
    try:
        contents = page.get_contents()
        data = contents.get_data() if contents is not None else b""
    except Exception:  # an unreadable stream: pypdf's text is all we use
        return False
    return len(_DRAWING.findall(data, 0, 4_000_000)) >= MIN_DRAWING_OPS


def _inside(obj: dict[str, Any], boxes: list[tuple[float, float, float, float]]) -> bool:
    x0, top, x1, bottom = obj.get("x0"), obj.get("top"), obj.get("x1"), obj.get("bottom")
    if x0 is None or top is None:
        return False
    return any(
        b[0] - 1 <= x0 and x1 <= b[2] + 1 and b[1] - 1 <= top and bottom <= b[3] + 1 for b in boxes
    )


def _with_tables(page: Any) -> str | None:
    """A pdfplumber page's text with each ruled table as "Header: value" rows, in
    reading order; None when the page has no table of two rows and two columns."""
    tables = []
    for table in page.find_tables():
        rows = table.extract()
        if len(rows) >= 2 and max(len(r) for r in rows) >= 2:
            tables.append((table.bbox, rows))
    if not tables:
        return None
    tables.sort(key=lambda t: t[0][1])
    outside = page.filter(lambda obj: not _inside(obj, [bbox for bbox, _ in tables]))
    left, top, right, bottom = page.bbox
    parts, above = [], top
    for bbox, rows in tables:
        if bbox[1] > above:
            parts.append(outside.crop((left, above, right, bbox[1])).extract_text())
        parts.append("\n".join(table_lines(rows, "PDF table")))
        above = max(above, bbox[3])
    if above < bottom:
        parts.append(outside.crop((left, above, right, bottom)).extract_text())
    return "\n".join(part.strip() for part in parts if part and part.strip())


def _tables(data: bytes, pages: list[int]) -> dict[int, str]:
    """{page: text with its tables as rows} of the pages that hold a table."""
    import pdfplumber

    found: dict[int, str] = {}
    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            for n in pages:
                try:
                    text = _with_tables(pdf.pages[n - 1])
                except Exception as exc:  # pdfminer trips on this page: pypdf's text stays
                    log.warning("page %d: tables not read (%s)", n, exc.__class__.__name__)
                    continue
                if text:
                    found[n] = text
    except Exception as exc:  # pdfminer cannot open what pypdf could: keep pypdf's text
        log.warning("tables not read (%s)", exc.__class__.__name__)
    return found


def parse_pdf(data: bytes) -> list[Section]:
    """Text per page (page = 1-based number). Pages without a text layer are read with
    OCR when tesseract is installed (see ingest.parsing.ocr); the others are never OCR'd."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError("password-protected PDF; save an unprotected copy to index it")
        texts = {n: (p.extract_text() or "").strip() for n, p in enumerate(reader.pages, 1)}
        drawn = [n for n, p in enumerate(reader.pages, 1) if texts[n] and _draws(p)]
    except ParseError:
        raise
    except (  # NotImplementedError: a filter or feature pypdf does not read ("/FlateDecoq")
        PyPdfError,
        NotImplementedError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OSError,
    ) as exc:
        raise ParseError(f"unreadable PDF ({exc.__class__.__name__}: {exc})"[:200]) from exc
    if drawn:
        texts.update(_tables(data, drawn))
    texts = strip_running_lines(texts)
    scanned = [n for n, text in texts.items() if len("".join(text.split())) < MIN_PAGE_CHARS]
    ocr_ready = False
    if scanned:
        from ingest.parsing import ocr  # pypdfium2 and tesseract only for scans

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
