"""What reading PDF tables as rows costs, beside pypdf's text alone, in one run.

    python bench/pdf_tables.py [PAGES]

Three generated PDFs of PAGES pages (default 40): text only (no drawing: pdfplumber is
never called), text with boxes on every page (drawn but no table: pdfplumber looks and
finds nothing, the price of a false alarm), and text with a ruled table on every page.
Each is parsed by `parse_pdf` (tables on) and by pypdf alone, best of three; the ratio
is the price of tables per kind of page.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from fpdf import FPDF  # noqa: E402

from ingest.parsing import pdf as pdf_parser  # noqa: E402

WORDS = "The quarterly report covers travel, expenses and the rates that apply. " * 6


def make(pages: int, kind: str) -> bytes:
    doc = FPDF()
    doc.set_font("Helvetica", size=10)
    for n in range(pages):
        doc.add_page()
        doc.multi_cell(0, 5, f"Page {n + 1}. {WORDS}", new_x="LMARGIN", new_y="NEXT")
        if kind == "frame":
            for k in range(4):  # boxes around text: drawn, so pdfplumber looks
                doc.rect(10 + k, 200 + k, 190 - 2 * k, 40 - 2 * k)
        elif kind == "table":
            with doc.table() as table:
                for r in range(8):
                    row = table.row()
                    for c in range(4):
                        row.cell("Header" if r == 0 else f"r{r}c{c} {n}")
        doc.multi_cell(0, 5, WORDS, new_x="LMARGIN", new_y="NEXT")
    return bytes(doc.output())


def best(fn, data: bytes) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - start)
    return min(times)


def pypdf_only(data: bytes) -> None:
    original = pdf_parser._tables
    pdf_parser._tables = lambda data, pages: {}
    try:
        pdf_parser.parse_pdf(data)
    finally:
        pdf_parser._tables = original


def main() -> None:
    pages = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    print(f"{'pages':<14}{'pypdf only':>12}{'with tables':>13}{'ratio':>8}")
    for kind in ("text", "frame", "table"):
        data = make(pages, kind)
        plain = best(pypdf_only, data)
        tables = best(pdf_parser.parse_pdf, data)
        name = f"{kind} x{pages}"
        print(f"{name:<14}{plain:>11.3f}s{tables:>12.3f}s{tables / plain:>8.2f}")


if __name__ == "__main__":
    main()
