"""Which parser reads which file: by extension, every format module imported here (each
imports its heavy library only when a file of its kind arrives)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from assistant.errors import ParseError
from ingest.parsing.base import Section
from ingest.parsing.mail import parse_eml
from ingest.parsing.markup import parse_html, parse_markdown, parse_text
from ingest.parsing.office import parse_pptx, parse_xlsx
from ingest.parsing.pdf import parse_pdf
from ingest.parsing.tables import parse_csv
from ingest.parsing.word import parse_docx


def _parse_eml(data: bytes) -> list[Section]:
    return parse_eml(data, parse, supported)  # attachments through this same registry


PARSERS: dict[str, Callable[[bytes], list[Section]]] = {
    ".txt": parse_text,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".pptx": parse_pptx,
    ".xlsx": parse_xlsx,
    ".csv": parse_csv,
    ".tsv": parse_csv,
    ".eml": _parse_eml,
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
