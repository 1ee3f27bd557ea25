"""Tables (CSV, spreadsheet sheets) as readable text: one line per row,
"Header1: value1; Header2: value2", the first non-empty row being the header.

Rows are consumed from an iterator, so a huge table is never held whole; after
`MAX_ROWS` rows with content the rest is left out (and logged).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Iterable, Iterator, Sequence

from assistant.errors import ParseError
from ingest.parsing.base import Section, decode_text

log = logging.getLogger(__name__)

MAX_ROWS = 20_000  # rows with content indexed per table (sheet or CSV file)
MAX_COLUMNS = 256
ROWS_PER_SECTION = 200  # keeps each Section a readable size
_DELIMITERS = ",;\t|"


def cell_text(value: object) -> str:
    """A cell as text: whole floats without ".0", dates without a zero time, whitespace
    collapsed to single spaces."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value).split())


def table_lines(rows: Iterable[Sequence[object]], name: str) -> Iterator[str]:
    """Each row with content as "Header: value; ...". Empty cells are left out; a cell
    under an empty header is labelled with its column number."""
    header: list[str] | None = None
    emitted = 0
    for row in rows:
        row = row[:MAX_COLUMNS]
        end = len(row)
        while end and row[end - 1] is None:  # spreadsheet rows come padded
            end -= 1
        cells = [cell_text(v) for v in row[:end]]
        if not any(cells):
            continue
        if header is None:
            header = cells
            continue
        if emitted == MAX_ROWS:
            log.warning("%s: only the first %d rows are indexed", name, MAX_ROWS)
            return
        pairs = []
        for i, value in enumerate(cells):
            if value:
                label = header[i] if i < len(header) and header[i] else f"Column {i + 1}"
                pairs.append(f"{label}: {value}")
        emitted += 1
        yield "; ".join(pairs)
    if header is not None and emitted == 0:  # a one-row table: the row is the content
        yield "; ".join(c for c in header if c)


def table_sections(lines: Iterable[str], section: str | None) -> list[Section]:
    out: list[Section] = []
    block: list[str] = []
    for line in lines:
        block.append(line)
        if len(block) == ROWS_PER_SECTION:
            out.append(Section("\n".join(block), None, section))
            block = []
    if block:
        out.append(Section("\n".join(block), None, section))
    return out


class _Sniffer(csv.Sniffer):
    """The delimiter from how often each candidate occurs per line; quoting is Excel's.
    csv.Sniffer's quote guess is regular expressions that backtrack without bound: a
    400-byte line of quotes took 90 s (tests/data/crashers/quotes-backtrack.csv)."""

    def _guess_quote_and_delimiter(
        self, data: str, delimiters: str | None
    ) -> tuple[str, bool, str, bool]:
        return '"', True, "", False  # quote, doubled quotes, no delimiter yet: guessed next


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return _Sniffer().sniff(sample, delimiters=_DELIMITERS)
    except csv.Error:
        # the sniffer gives up on ragged rows; take the delimiter most used in line one
        first = sample.split("\n", 1)[0]
        counts = {d: first.count(d) for d in _DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        dialect = csv.excel
        if counts[best]:
            dialect = type("Sniffed", (csv.excel,), {"delimiter": best})
        return dialect


def parse_csv(data: bytes) -> list[Section]:
    text = decode_text(data)
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    reader = csv.reader(io.StringIO(text, newline=""), _dialect(sample))
    try:
        return table_sections(table_lines(reader, "CSV"), None)
    except csv.Error as exc:
        raise ParseError(
            f"unreadable CSV (line {reader.line_num}: {exc}); check the quoting and save it again"
        ) from exc
