"""PowerPoint and Excel files: python-pptx (MIT) and openpyxl (MIT, read-only streaming).

Both are zip archives and are checked for zip bombs before the library opens them.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from xml.etree.ElementTree import ParseError as EtreeParseError

from lxml.etree import XMLSyntaxError

from assistant.errors import ParseError
from ingest.parsing.base import Section
from ingest.parsing.containers import check_office_zip
from ingest.parsing.tables import MAX_COLUMNS, table_lines, table_sections

# what the libraries raise on damaged or mislabelled packages; zlib.error and
# NotImplementedError come from zipfile inflating a damaged or unsupported member
_BROKEN = (
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    KeyError,
    ValueError,
    TypeError,
    XMLSyntaxError,
    EtreeParseError,  # openpyxl reads sheets with the standard library's parser
    EOFError,
)


def _shape_lines(shape, out: list[str]) -> None:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        for inner in _reading_order(shape.shapes):
            _shape_lines(inner, out)
    elif getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            cells = [" ".join(cell.text.split()) for cell in row.cells]
            if any(cells):
                out.append(" | ".join(cells))
    elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        text = shape.text_frame.text.strip()
        if text:
            out.append(text)


def _reading_order(shapes) -> list:
    """Top to bottom, then left to right (z-order is not reading order)."""
    return sorted(shapes, key=lambda s: (s.top or 0, s.left or 0))


def parse_pptx(data: bytes) -> list[Section]:
    """One Section per slide: page = slide number, section = the slide title, speaker
    notes after the slide text under "Notes:"."""
    check_office_zip(data, "PPTX")
    from pptx import Presentation
    from pptx.exc import PackageNotFoundError

    try:
        presentation = Presentation(io.BytesIO(data))
        sections = []
        for number, slide in enumerate(presentation.slides, start=1):
            title_shape = slide.shapes.title
            title = " ".join(title_shape.text.split()) if title_shape is not None else ""
            lines: list[str] = []
            for shape in _reading_order(slide.shapes):
                _shape_lines(shape, lines)
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text.strip()
                if notes:
                    lines.append(f"Notes: {notes}")
            if lines:
                sections.append(Section("\n".join(lines), number, title or None))
    except (*_BROKEN, PackageNotFoundError, AttributeError) as exc:
        raise ParseError(
            f"not a valid PPTX file ({exc.__class__.__name__}); open it in PowerPoint "
            "and save it again"
        ) from exc
    return sections


def parse_xlsx(data: bytes) -> list[Section]:
    """Each sheet's rows as "Header: value; ..." lines, section = the sheet name. Read
    streaming (read_only) with the cached values of formulas (data_only)."""
    check_office_zip(data, "XLSX")
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (*_BROKEN, InvalidFileException, OSError) as exc:
        raise ParseError(
            f"not a valid XLSX file ({exc.__class__.__name__}); open it in Excel and save it again"
        ) from exc
    sections: list[Section] = []
    try:
        for sheet in workbook.worksheets:
            sheet.reset_dimensions()  # a wrong declared size must not cut rows off
            rows = sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS)
            sections += table_sections(table_lines(rows, f"sheet {sheet.title}"), sheet.title)
    except _BROKEN as exc:
        raise ParseError(
            f"damaged XLSX sheet ({exc.__class__.__name__}); open it in Excel and save it again"
        ) from exc
    finally:
        workbook.close()
    return sections
