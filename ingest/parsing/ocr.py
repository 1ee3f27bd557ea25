"""OCR for PDF pages without a text layer (scans): pypdfium2 (Apache-2.0/BSD) renders a
page, the `tesseract` program (Debian: tesseract-ocr, tesseract-ocr-jpn) reads it.

Optional: it runs only when `tesseract` is on PATH, one process per page over
stdin/stdout with a time limit, so a stuck page cannot stall an ingestion run. Only
pages that carry an image are read (a blank page or a drawing has nothing to find).
Japanese is read too when its language data is installed.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import math
import re
import shutil
import subprocess

log = logging.getLogger(__name__)

DPI = 300  # what tesseract is trained for
MAX_PIXELS = 40_000_000  # a poster-sized page is rendered smaller instead (40 MB grey)
PAGE_TIMEOUT = 120.0  # seconds for one page on a slow CPU
_PROBE_TIMEOUT = 10.0
_CJK = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
# tesseract puts spaces between Japanese characters; Japanese has none
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])[ \t]+(?=[{_CJK}])")


def tesseract_path() -> str | None:
    return shutil.which("tesseract")


@functools.cache
def _probe(path: str) -> tuple[str | None, tuple[str, ...]]:
    """(version, installed languages) of the tesseract at `path`."""

    def run(*args: str) -> str:
        try:
            done = subprocess.run(
                [path, *args], capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout + "\n" + done.stderr

    match = re.search(r"tesseract\s+v?(\d[\w.\-]*)", run("--version"))
    listing = run("--list-langs").splitlines()
    languages = tuple(
        sorted({line.strip() for line in listing if re.fullmatch(r"[A-Za-z_]+", line.strip())})
    )
    return (match.group(1) if match else None), languages


def _languages(installed: tuple[str, ...]) -> str | None:
    chosen = [lang for lang in ("eng", "jpn") if lang in installed]
    return "+".join(chosen) or None


def ocr_status() -> dict[str, object]:
    """What `taimatsu status` reports: is OCR available, which tesseract and languages."""
    path = tesseract_path()
    if path is None:
        return {
            "available": False,
            "version": None,
            "languages": [],
            "hint": "install tesseract-ocr and tesseract-ocr-jpn to index scanned PDFs",
        }
    version, installed = _probe(path)
    used = _languages(installed)
    if importlib.util.find_spec("pypdfium2") is None:
        return {
            "available": False,
            "version": version,
            "languages": list(installed),
            "hint": "pypdfium2 is missing; reinstall taimatsu to render scanned pages",
        }
    status: dict[str, object] = {
        "available": used is not None,
        "version": version,
        "languages": list(installed),
        "reads": used,
    }
    if used is None:
        status["hint"] = f"{path} has no eng or jpn language data; install tesseract-ocr-eng"
    elif "jpn" not in installed:
        status["hint"] = "install tesseract-ocr-jpn to read Japanese scans"
    return status


def available() -> bool:
    return bool(ocr_status()["available"])


def _read(tesseract: str, image: bytes, languages: str, page: int) -> str:
    try:
        done = subprocess.run(
            [tesseract, "stdin", "stdout", "-l", languages],
            input=image,
            capture_output=True,
            timeout=PAGE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.warning("OCR of page %d gave up after %.0f s; page skipped", page, PAGE_TIMEOUT)
        return ""
    except OSError as exc:
        log.warning("OCR of page %d could not start tesseract (%s); page skipped", page, exc)
        return ""
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        log.warning("OCR of page %d failed (%s); page skipped", page, reason[0])
        return ""
    text = done.stdout.decode("utf-8", "replace").replace("\f", "")
    text = _CJK_GAP.sub("", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def ocr_pages(data: bytes, pages: list[int]) -> dict[int, str]:
    """Text read from the given 1-based pages of a PDF that carry an image; pages where
    nothing was read are left out. Empty when OCR is unavailable or pdfium cannot open
    the file."""
    tesseract = tesseract_path()
    languages = _languages(_probe(tesseract)[1]) if tesseract else None
    if tesseract is None or languages is None or not pages:
        return {}
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        log.warning("OCR skipped: pdfium cannot open the PDF (%s)", exc)
        return {}
    found: dict[int, str] = {}
    try:
        for number in pages:
            image = _render(pdf, number, pdfium)
            if image is not None:
                text = _read(tesseract, image, languages, number)
                if text:
                    found[number] = text
    finally:
        pdf.close()
    return found


def _render(pdf, number: int, pdfium) -> bytes | None:
    """The page as a greyscale PGM image, or None when it has no image to read."""
    if not 1 <= number <= len(pdf):
        return None
    try:
        page = pdf[number - 1]
    except pdfium.PdfiumError as exc:  # a damaged page fails to load
        log.warning("OCR of page %d skipped: pdfium cannot load it (%s)", number, exc)
        return None
    try:
        images = page.get_objects(filter=(pdfium.raw.FPDF_PAGEOBJ_IMAGE,))
        if next(iter(images), None) is None:
            return None
        width, height = page.get_size()
        scale = min(DPI / 72, math.sqrt(MAX_PIXELS / max(1.0, width * height)))
        bitmap = page.render(scale=scale, grayscale=True)
        out = io.BytesIO()
        bitmap.to_pil().save(out, format="PPM")
        return out.getvalue()
    except pdfium.PdfiumError as exc:
        log.warning("OCR of page %d skipped: pdfium cannot render it (%s)", number, exc)
        return None
    finally:
        page.close()
