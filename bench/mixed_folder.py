"""A mixed-format folder for bench/ingest.py, from the English gold corpus (Debian
documentation HTML, tests/data/eval/natural/en/corpus) and the Japanese one.

    python bench/mixed_folder.py OUT

Each English page is parsed by the product and written again, in turn, as HTML (the
original), DOCX, PDF, PPTX (a slide per section), XLSX (a row per paragraph), EML and
TXT; the Japanese corpus is copied as it is (HTML and Markdown), under nested folders.
Deterministic: the same corpus gives the same folder.
"""

from __future__ import annotations

import shutil
import sys
from email.message import EmailMessage
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from ingest.parsing import parse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent / "tests" / "data" / "eval" / "natural"
FORMATS = ("html", "docx", "pdf", "pptx", "xlsx", "eml", "txt")


def head(section: object) -> str:
    return getattr(section, "section", None) or ""


def write(kind: str, sections: list, out: Path) -> None:
    if kind == "docx":
        from docx import Document

        doc = Document()
        for section in sections:
            if head(section):
                doc.add_heading(head(section).split(" > ")[-1], level=2)
            for para in section.text.split("\n\n"):
                doc.add_paragraph(para)
        doc.save(out)
    elif kind == "pdf":
        from fpdf import FPDF

        pdf = FPDF()
        pdf.set_auto_page_break(True, 15)
        pdf.add_page()
        pdf.set_font("Helvetica", size=10)
        for section in sections:
            text = f"{head(section)}\n{section.text}".encode("latin-1", "replace").decode("latin-1")
            pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
        pdf.output(str(out))
    elif kind == "pptx":
        from pptx import Presentation

        deck = Presentation()
        for section in sections:
            slide = deck.slides.add_slide(deck.slide_layouts[1])
            slide.shapes.title.text = head(section).split(" > ")[-1] or "-"
            slide.placeholders[1].text = section.text[:3000]
        deck.save(out)
    elif kind == "xlsx":
        from openpyxl import Workbook

        book = Workbook()
        sheet = book.active
        sheet.append(["section", "text"])
        for section in sections:
            for para in section.text.split("\n\n"):
                sheet.append([head(section), para[:32000]])
        book.save(out)
    elif kind == "eml":
        message = EmailMessage()
        message["Subject"] = head(sections[0]) or out.stem
        message["From"] = "docs@example.org"
        message["To"] = "staff@example.org"
        message.set_content("\n\n".join(f"{head(s)}\n{s.text}" for s in sections))
        out.write_bytes(bytes(message))
    else:
        out.write_text("\n\n".join(f"{head(s)}\n{s.text}" for s in sections), "utf-8")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/mixed_folder.py OUT")
    out = Path(sys.argv[1])
    shutil.rmtree(out, ignore_errors=True)
    pages = sorted((ROOT / "en" / "corpus").rglob("*.html"))
    for n, page in enumerate(pages):
        kind = FORMATS[n % len(FORMATS)]
        target = out / "en" / page.parent.name / f"{page.stem}.{kind}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "html":
            shutil.copy(page, target)
        else:
            write(kind, parse(page, page.read_bytes()), target)
    shutil.copytree(ROOT / "ja" / "corpus", out / "ja")
    kinds = sorted({p.suffix for p in out.rglob("*") if p.is_file()})
    print(f"{out}: {sum(1 for p in out.rglob('*') if p.is_file())} files, {' '.join(kinds)}")


if __name__ == "__main__":
    main()
