"""PPTX, XLSX, CSV, EML and hostile Office zips. Every file is built here."""

from __future__ import annotations

import datetime as dt
import io
import time
import tracemalloc
import zipfile
from email.message import EmailMessage
from pathlib import Path

import docx
import openpyxl
import pytest
from fpdf import FPDF
from PIL import Image
from pptx import Presentation
from pptx.util import Inches

from assistant.errors import ParseError
from ingest.parsing import containers, parse, supported, tables

# -- builders -------------------------------------------------------------------------


def _pdf(*pages: str) -> bytes:
    pdf = FPDF()
    for text in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def _docx(heading: str, body: str) -> bytes:
    document = docx.Document()
    document.add_heading(heading, level=1)
    document.add_paragraph(body)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _pptx() -> bytes:
    deck = Presentation()
    cover = deck.slides.add_slide(deck.slide_layouts[0])
    cover.shapes.title.text = "Travel policy 2025"
    cover.placeholders[1].text = "Approved by the board in March"

    rates = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    rates.shapes.title.text = "Hotel rates"
    box = rates.shapes.add_textbox(Inches(1), Inches(1.5), Inches(6), Inches(1))
    box.text_frame.text = "Book through the travel desk."
    grid = rates.shapes.add_table(2, 2, Inches(1), Inches(3), Inches(6), Inches(1.2)).table
    grid.cell(0, 0).text, grid.cell(0, 1).text = "City", "Limit"
    grid.cell(1, 0).text, grid.cell(1, 1).text = "Osaka", "18,000 yen"
    rates.notes_slide.notes_text_frame.text = "Mention the Osaka exception."

    loose = deck.slides.add_slide(deck.slide_layouts[6])  # blank: no title
    group = loose.shapes.add_group_shape()
    inner = group.shapes.add_textbox(Inches(1), Inches(1), Inches(4), Inches(1))
    inner.text_frame.text = "Receipts are kept for seven years."

    deck.slides.add_slide(deck.slide_layouts[6])  # an empty slide gives no section
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def _xlsx(build) -> bytes:
    book = openpyxl.Workbook()
    build(book)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _one_line_error(path: str, data: bytes) -> str:
    with pytest.raises(ParseError) as info:
        parse(Path(path), data)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


# -- registry -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.pptx", "b.XLSX", "c.csv", "d.tsv", "e.eml"])
def test_new_formats_are_registered(name: str):
    assert supported(Path(name))


# -- PPTX -----------------------------------------------------------------------------


def test_pptx_one_section_per_slide_with_title_tables_and_notes():
    sections = parse(Path("deck.pptx"), _pptx())
    assert [s.page for s in sections] == [1, 2, 3]  # the empty 4th slide is dropped
    assert [s.section for s in sections] == ["Travel policy 2025", "Hotel rates", None]
    cover, rates, loose = (s.text for s in sections)
    assert "Approved by the board in March" in cover
    assert "Book through the travel desk." in rates and "Osaka | 18,000 yen" in rates
    assert rates.index("Book through") < rates.index("Osaka | 18,000") < rates.index("Notes:")
    assert rates.endswith("Notes: Mention the Osaka exception.")
    assert loose == "Receipts are kept for seven years."  # from inside a group shape


@pytest.mark.parametrize("suffix", [".pptx", ".xlsx"])
@pytest.mark.parametrize(
    "damage",
    ["not a zip", "truncated", "wrong package"],
)
def test_corrupt_office_files_give_one_line_reasons(suffix: str, damage: str):
    good = _pptx() if suffix == ".pptx" else _xlsx(lambda b: b.active.append(["a", "b"]))
    data = {
        "not a zip": b"PK\x03\x04 this is not an archive",
        "truncated": good[: len(good) // 2],
        "wrong package": _zip({"hello.txt": b"hello"}),
    }[damage]
    message = _one_line_error(f"broken{suffix}", data)
    assert f"not a valid {suffix[1:].upper()} file" in message
    assert "save it again" in message


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


# -- XLSX -----------------------------------------------------------------------------


def _budget_book(book: openpyxl.Workbook) -> None:
    sheet = book.active
    sheet.title = "Rates"
    sheet.append([])  # leading empty row: the header is the first non-empty row
    sheet.append(["City", "Limit", "Since", None, "Note"])
    sheet.append(["Osaka", 18000.0, dt.datetime(2024, 4, 1), None, "incl.  breakfast"])
    sheet.append([None, None, None, None, None])  # skipped
    sheet.append(["Tokyo", 21500.5, dt.date(2025, 1, 6), "approved", None])
    japanese = book.create_sheet("予算")
    japanese.append(["部署", "金額"])
    japanese.append(["総務", 120000])


def test_xlsx_rows_read_as_header_value_pairs_per_sheet():
    sections = parse(Path("budget.xlsx"), _xlsx(_budget_book))
    assert [s.section for s in sections] == ["Rates", "予算"]
    assert all(s.page is None for s in sections)
    assert sections[0].text.splitlines() == [
        "City: Osaka; Limit: 18000; Since: 2024-04-01; Note: incl. breakfast",
        "City: Tokyo; Limit: 21500.5; Since: 2025-01-06; Column 4: approved",
    ]
    assert sections[1].text == "部署: 総務; 金額: 120000"


def test_xlsx_rows_past_a_wrong_declared_size_are_read():
    data = _xlsx(lambda b: [b.active.append(["k", "v"]), b.active.append(["late", "row"])])
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            xml = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                assert b'<dimension ref="A1:B2"/>' in xml
                xml = xml.replace(b'<dimension ref="A1:B2"/>', b'<dimension ref="A1"/>')
            dst.writestr(info, xml)
    assert parse(Path("dims.xlsx"), out.getvalue())[0].text == "k: late; v: row"


def test_xlsx_is_read_streaming_and_rows_are_capped(monkeypatch: pytest.MonkeyPatch):
    modes = []
    real_load = openpyxl.load_workbook

    def spy(*args, **kwargs):
        modes.append((kwargs.get("read_only"), kwargs.get("data_only")))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(openpyxl, "load_workbook", spy)
    monkeypatch.setattr(tables, "MAX_ROWS", 50)
    monkeypatch.setattr(tables, "ROWS_PER_SECTION", 20)

    def many(book: openpyxl.Workbook) -> None:
        book.active.append(["n", "square"])
        for n in range(120):
            book.active.append([n, n * n])

    sections = parse(Path("big.xlsx"), _xlsx(many))
    assert modes == [(True, True)]
    lines = [line for s in sections for line in s.text.splitlines()]
    assert len(sections) == 3 and len(lines) == 50
    assert lines[0] == "n: 0; square: 0" and lines[-1] == "n: 49; square: 2401"


# -- CSV ------------------------------------------------------------------------------


def test_csv_with_semicolons_in_shift_jis():
    text = (
        "名前;部署;メモ\r\n"
        "山田;総務;在宅勤務は週3日までです\r\n"
        '佐藤;経理;"申請は; ポータルで行います"\r\n'
        ";;\r\n"
    )
    sections = parse(Path("社員.csv"), text.encode("shift_jis"))
    assert sections[0].text.splitlines() == [
        "名前: 山田; 部署: 総務; メモ: 在宅勤務は週3日までです",
        "名前: 佐藤; 部署: 経理; メモ: 申請は; ポータルで行います",
    ]


@pytest.mark.parametrize(("name", "delimiter"), [("a.csv", ","), ("b.tsv", "\t"), ("c.csv", "|")])
def test_csv_delimiters_are_sniffed(name: str, delimiter: str):
    rows = [["Item", "Limit", "Approver"], ["Hotel", "18,000 yen", "Manager"], ["Taxi", "", "Lead"]]
    data = "\n".join(delimiter.join(f'"{c}"' if "," in c else c for c in r) for r in rows)
    sections = parse(Path(name), data.encode())
    assert sections[0].text.splitlines() == [
        "Item: Hotel; Limit: 18,000 yen; Approver: Manager",
        "Item: Taxi; Approver: Lead",
    ]


def test_csv_with_ragged_rows_still_reads():
    data = b"date,amount\n2025-01-01,100,extra\n2025-01-02\n"
    lines = parse(Path("ragged.csv"), data)[0].text.splitlines()
    assert lines == ["date: 2025-01-01; amount: 100; Column 3: extra", "date: 2025-01-02"]


# -- EML ------------------------------------------------------------------------------


def _mail(subject: str = "Travel rules update") -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "HR Desk <hr@example.com>"
    message["To"] = "all@example.com"
    message["Date"] = "Tue, 04 Mar 2025 09:30:00 +0900"
    return message


def test_eml_body_headers_and_attachments(bomb: bytes):
    message = _mail()
    message.set_content("Hello all,\nthe hotel limit rises to 18,000 yen.\n")
    message.add_alternative("<p>HTML <b>copy</b> that should not win</p>", subtype="html")
    pdf = _pdf("Page one about taxis.", "Page two: the KX-42 form is retired.")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename="rules.pdf")
    message.add_attachment(
        _docx("Rates", "Osaka 18,000 yen per night."),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="C:\\Users\\hr\\rates.docx",
    )
    message.add_attachment(b"\x89PNG not parsed", maintype="image", subtype="png", filename="x.png")
    message.add_attachment(
        b"%PDF-1.4 broken", maintype="application", subtype="pdf", filename="b.pdf"
    )
    message.add_attachment(bomb, maintype="application", subtype="octet-stream", filename="z.docx")

    sections = parse(Path("mail.eml"), message.as_bytes())
    first = sections[0]
    assert first.section == "Travel rules update" and first.page is None
    assert first.text == (
        "Subject: Travel rules update\nFrom: HR Desk <hr@example.com>\n"
        "Date: Tue, 04 Mar 2025 09:30:00 +0900\n\n"
        "Hello all,\nthe hotel limit rises to 18,000 yen."
    )
    rest = [(s.section, s.page) for s in sections[1:]]
    assert rest == [
        ("Travel rules update > attachment: rules.pdf", 1),
        ("Travel rules update > attachment: rules.pdf", 2),
        ("Travel rules update > attachment: rates.docx > Rates", None),
    ]  # the picture, the broken PDF and the zip bomb are skipped, the mail is not
    assert "KX-42" in sections[2].text and "Osaka 18,000 yen" in sections[3].text


def test_eml_html_only_body_is_converted():
    message = _mail("お知らせ")
    message.set_content(
        "<html><head><style>p{color:red}</style></head><body><h1>Notice</h1>"
        "<p>在宅勤務は週3日まで</p><script>alert(1)</script></body></html>",
        subtype="html",
        charset="iso-2022-jp",
    )
    first = parse(Path("notice.eml"), message.as_bytes())[0]
    assert first.section == "お知らせ"
    body = first.text.split("\n\n", 1)[1]
    assert "在宅勤務は週3日まで" in body and "Notice" in body
    assert "<" not in body and "alert" not in body and "color" not in body


def test_eml_attached_mail_is_followed_but_not_forever():
    inner = _mail("level 0")
    inner.set_content("innermost words")
    for level in range(1, 6):
        outer = _mail(f"level {level}")
        outer.set_content(f"text of level {level}")
        outer.add_attachment(inner)  # message/rfc822
        inner = outer
    sections = parse(Path("fwd.eml"), inner.as_bytes())
    texts = "\n".join(s.text for s in sections)
    assert "text of level 5" in texts and "text of level 3" in texts
    assert "text of level 2" not in texts and "innermost" not in texts
    assert sections[1].section == "level 5 > attachment: level 4.eml > level 4"


def test_eml_from_an_old_mailer_with_raw_shift_jis_and_a_wrong_charset():
    head = "Subject: 在宅勤務の件について\nFrom: y@example.com\n".encode("shift_jis")
    body = "在宅勤務は週3日までです。申請はポータルで行います。".encode("shift_jis")
    mime = b'Content-Type: text/plain; charset="x-unknown"\nContent-Transfer-Encoding: 8bit\n\n'
    first = parse(Path("old.eml"), head + mime + body)[0]
    assert first.section == "在宅勤務の件について"
    assert first.text == (
        "Subject: 在宅勤務の件について\nFrom: y@example.com\n\n"  # no Date header, no Date line
        "在宅勤務は週3日までです。申請はポータルで行います。"
    )


def test_text_that_is_not_mail_is_refused():
    message = _one_line_error("notes.eml", b"just some notes\nwithout any headers\n")
    assert "not an e-mail message" in message


# -- zip bombs and hostile archives ---------------------------------------------------


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8, 8), 255).save(out, format="PNG")
    return out.getvalue()


def _blow_up(data: bytes, member: str, megabytes: int = 300) -> bytes:
    """`data` (a zip) with `member` replaced by `megabytes` MB of zeros, which deflate to
    about 1/1000 of that; written in 1 MB pieces, so the test never holds the inflated
    size. The member is one the library reads when it opens the file."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
    ):
        assert member in source.namelist()
        for info in source.infolist():
            if info.filename != member:
                archive.writestr(info, source.read(info))
        with archive.open(member, "w") as huge:
            piece = bytes(1 << 20)
            for _ in range(megabytes):
                huge.write(piece)
    assert len(out.getvalue()) < 2 * 1024 * 1024
    return out.getvalue()


def _docx_bomb() -> bytes:
    document = docx.Document()
    document.add_paragraph("A normal paragraph next to a picture.")
    document.add_picture(io.BytesIO(_png()))  # python-docx loads every related part
    out = io.BytesIO()
    document.save(out)
    return _blow_up(out.getvalue(), "word/media/image1.png")


def _pptx_bomb() -> bytes:
    deck = Presentation()
    deck.slides.add_slide(deck.slide_layouts[6]).shapes.add_picture(io.BytesIO(_png()), 0, 0)
    out = io.BytesIO()
    deck.save(out)
    return _blow_up(out.getvalue(), "ppt/media/image1.png")


def _xlsx_bomb() -> bytes:  # openpyxl reads the style sheet whole, even in read-only mode
    return _blow_up(_xlsx(lambda b: b.active.append(["a", "b"])), "xl/styles.xml")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _docx_bomb()


@pytest.mark.parametrize("suffix", [".docx", ".pptx", ".xlsx"])
def test_zip_bomb_is_refused_without_inflating(bomb: bytes, suffix: str):
    data = {".docx": lambda: bomb, ".pptx": _pptx_bomb, ".xlsx": _xlsx_bomb}[suffix]()
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ParseError) as info:
            parse(Path(f"bomb{suffix}"), data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "zip bomb" in message and "\n" not in message
    assert f"{suffix[1:].upper()} would expand" in message
    assert peak < 16 * 1024 * 1024, f"{peak / 2**20:.0f} MB allocated"
    assert time.monotonic() - started < 2


def test_absurd_member_count_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for n in range(containers.MAX_MEMBERS + 1):
            archive.writestr(f"m/{n}", b"")
    message = _one_line_error("many.docx", out.getvalue())
    assert "members" in message and "hostile" in message


def test_password_protected_office_file_is_reported():
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4096)
    message = _one_line_error("secret.xlsx", ole)
    assert "password-protected" in message and "unprotected .xlsx" in message


def test_expansion_limit_has_a_floor_a_ratio_and_a_ceiling():
    mb = containers.MB
    assert containers.expansion_limit(1 * mb) == 200 * mb
    assert containers.expansion_limit(5 * mb) == 500 * mb
    assert containers.expansion_limit(50 * mb) == 1024 * mb
