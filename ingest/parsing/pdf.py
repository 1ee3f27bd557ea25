"""PDF text per page with pypdf (BSD); pages without a text layer go to OCR
(ingest.parsing.ocr) when tesseract is installed."""

from __future__ import annotations

import io

from assistant.errors import ParseError
from ingest.parsing.base import Section

MIN_PAGE_CHARS = 10  # fewer non-space characters than this: a scan (maybe with a stamp)


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
