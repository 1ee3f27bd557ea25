"""Documents to sections of text, each with its page (PDF) or heading path.

Parsers are chosen for their licences and upkeep: pypdf (BSD), python-docx (MIT),
BeautifulSoup with lxml (MIT/BSD), markdown-it-py (MIT), charset-normalizer (MIT),
python-pptx and openpyxl (MIT), the standard library's csv and email, and pypdfium2 with
the tesseract program for scans. Office files pass the zip-bomb checks of `containers`
before a library opens them. Every parser raises `ParseError` with a short reason a
person can act on. `isolation.ParserWorker` runs them in a worker process with time
and memory limits.

To add a format: a module here with `parse_x(data: bytes) -> list[Section]` that imports
its library inside the function, and one line in `registry.PARSERS`.
"""

from __future__ import annotations

from ingest.parsing.base import Section, decode_text
from ingest.parsing.registry import PARSERS, parse, supported

__all__ = ["PARSERS", "Section", "decode_text", "parse", "supported"]
