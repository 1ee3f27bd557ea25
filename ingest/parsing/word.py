"""Word documents (DOCX) with python-docx (MIT): heading styles and tables in document
order, after the zip-bomb checks of ingest.parsing.containers."""

from __future__ import annotations

import io
import re
import zipfile
import zlib

from assistant.errors import ParseError
from ingest.parsing.base import Headings, Section, sections_from
from ingest.parsing.containers import check_office_zip


def parse_docx(data: bytes) -> list[Section]:
    check_office_zip(data, "DOCX")
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from lxml.etree import XMLSyntaxError

    try:
        document = docx.Document(io.BytesIO(data))
    except (  # zlib.error, NotImplementedError: zipfile on a damaged or unsupported member
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        KeyError,
        ValueError,
        PackageNotFoundError,
        XMLSyntaxError,  # a part that is no XML (a control character written into it)
    ) as exc:
        raise ParseError(
            f"not a valid DOCX file ({exc.__class__.__name__}); open it in Word and save it again"
        ) from exc
    headings = Headings()
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
    return sections_from(pairs)
