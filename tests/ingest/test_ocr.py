"""OCR of scanned PDFs: image-only pages built here (Pillow renders the words, fpdf2 makes
the PDF), read by the real tesseract. Without tesseract these skip, and fail under CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from assistant.errors import ParseError
from ingest.parsing import ocr, parse
from tests.conftest import need_binary


def _scan_png(text: str, font: ImageFont.FreeTypeFont | None = None) -> Image.Image:
    """Text as pixels only, the way a scanner delivers it."""
    font = font or ImageFont.load_default(size=56)
    image = Image.new("L", (1700, 360), 255)
    ImageDraw.Draw(image).text((60, 130), text, fill=0, font=font)
    return image


def _image_pdf(*pages: Image.Image | str | None) -> bytes:
    """A PDF whose pages are a picture, a line of real text, or a bare drawing (None)."""
    pdf = FPDF()
    for page in pages:
        pdf.add_page()
        if isinstance(page, Image.Image):
            pdf.image(page, x=10, y=20, w=190)
        elif isinstance(page, str):
            pdf.set_font("Helvetica", size=12)
            pdf.multi_cell(0, 10, page)
        else:
            pdf.rect(20, 20, 50, 50)
    return bytes(pdf.output())


def _one_line_error(path: str, data: bytes) -> str:
    with pytest.raises(ParseError) as info:
        parse(Path(path), data)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_scanned_pdf_without_tesseract_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ocr, "tesseract_path", lambda: None)
    scan = _image_pdf(_scan_png("Quarterly reconciliation deadline"))
    message = _one_line_error("scan.pdf", scan)
    assert "no text layer" in message and "install tesseract-ocr" in message
    status = ocr.ocr_status()
    assert status["available"] is False and "tesseract-ocr" in str(status["hint"])


def test_ocr_status_reports_version_and_languages():
    need_binary("tesseract")
    status = ocr.ocr_status()
    assert status["available"] is True
    assert str(status["version"])[0].isdigit() and "eng" in status["languages"]


def test_scanned_pdf_is_read_with_ocr():
    need_binary("tesseract")
    sections = parse(Path("scan.pdf"), _image_pdf(_scan_png("Quarterly reconciliation deadline")))
    assert [s.page for s in sections] == [1]
    assert "reconciliation" in sections[0].text.lower()


def test_mixed_pdf_ocrs_only_pages_without_text(monkeypatch: pytest.MonkeyPatch):
    need_binary("tesseract")
    read: list[list[int]] = []
    real = ocr.ocr_pages
    monkeypatch.setattr(
        ocr, "ocr_pages", lambda data, pages: read.append(pages) or real(data, pages)
    )
    pdf = _image_pdf("Typed page about expense claims.", _scan_png("Invoice archive"), None)
    sections = parse(Path("mixed.pdf"), pdf)
    assert read == [[2, 3]]  # page 3 (a drawing) is offered but has no image to read
    assert [s.page for s in sections] == [1, 2]
    assert "expense claims" in sections[0].text and "invoice" in sections[1].text.lower()


def test_ocr_that_runs_out_of_time_skips_the_page(monkeypatch: pytest.MonkeyPatch):
    need_binary("tesseract")
    monkeypatch.setattr(ocr, "PAGE_TIMEOUT", 0.001)
    message = _one_line_error("slow.pdf", _image_pdf(_scan_png("Nothing is read in time")))
    assert "OCR found no text" in message and "check the scan" in message


def test_japanese_scan_is_read_when_jpn_data_is_installed():
    need_binary("tesseract")
    font_file = Path("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf")
    if "jpn" not in ocr.ocr_status()["languages"] or not font_file.exists():
        missing = "tesseract-ocr-jpn and fonts-ipafont-gothic are not both installed"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; `make test` installs them (scripts/sysdeps.sh)")
        pytest.skip(f"{missing} (run scripts/sysdeps.sh as root)")
    font = ImageFont.truetype(str(font_file), 72)
    sections = parse(Path("jp.pdf"), _image_pdf(_scan_png("在宅勤務の申請", font)))
    assert "在宅勤務" in sections[0].text and sections[0].page == 1
