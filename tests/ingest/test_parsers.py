"""Parsers on the bundled samples and on hand-made bad input."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import docx
import pytest
from fpdf import FPDF
from pypdf import PdfWriter

from assistant.errors import ParseError
from ingest.chunker import Chunker, split_sentences
from ingest.parsing import decode_text, parse
from tests.conftest import SAMPLES


def _read(rel: str):
    path = SAMPLES / rel
    return parse(path, path.read_bytes())


def test_markdown_sections_carry_heading_path():
    sections = _read("en/leave-policy.md")
    part_time = [s for s in sections if "pro-rated" in s.text]
    assert part_time and part_time[0].section.endswith("> Part-time employees")
    assert all(s.page is None for s in sections)
    assert not any(s.text.startswith("#") for s in sections)


def test_html_drops_script_and_style_and_keeps_headings():
    sections = _read("en/expenses.html")
    text = "\n".join(s.text for s in sections)
    assert "SCRIPT-SENTINEL" not in text and "STYLE-SENTINEL" not in text
    assert "30 days" in text
    assert any(s.section and "Taxis" in s.section for s in sections)


def test_xhtml_is_read_as_html_without_a_warning_for_the_operator():
    page = b'<?xml version="1.0" encoding="utf-8"?>\n<div><h1>Setup</h1><p>Run it.</p></div>'
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bs4 warns that this looks like XML; we mean HTML
        sections = parse(Path("guide.html"), page)
    assert [(s.section, s.text) for s in sections] == [("Setup", "Run it.")]


def test_pdf_pages_are_numbered_from_one():
    sections = _read("en/vpn-troubleshooting.pdf")
    assert [s.page for s in sections] == [1, 2]
    assert "VPN-0x2F" in sections[1].text and "VPN-0x2F" not in sections[0].text


def test_docx_headings_become_sections():
    sections = _read("ja/情報セキュリティ.docx")
    password = [s for s in sections if "90日" in s.text]
    assert password and "パスワード" in password[0].section


def test_underlined_headings_of_plain_text_become_sections():
    """The README and checklist style: a line underlined with === or --- after a blank
    line is a heading (levels in the order the characters first appear); a rule under a
    paragraph's last line, or one far wider or narrower than the line, is not."""
    sections = _read("en/it-onboarding.txt")
    mfa = [s for s in sections if "KiriAuth" in s.text][0]
    assert mfa.section == (
        "KIRI SYSTEMS K.K. - IT ONBOARDING CHECKLIST FOR NEW JOINERS > "
        "2. WITHIN 24 HOURS: ENROL IN MULTI-FACTOR AUTHENTICATION (MFA)"
    )
    assert "-----" not in mfa.text and "ENROL" not in mfa.text
    japanese = "概要\n====\n\n本文です。\n\n申請\n----\n人事ポータルで。\n\n次へ\n-\n"
    assert [(s.section, s.text) for s in parse(Path("規程.txt"), japanese.encode())] == [
        ("概要", "本文です。"),
        ("概要 > 申請", "人事ポータルで。\n\n次へ\n-"),
    ]
    plain = "A paragraph that ends\nhere.\n-----\nAnd goes on.\n\nShort\n" + "-" * 40 + "\n"
    assert [s.section for s in parse(Path("notes.txt"), plain.encode())] == [None]


def test_markdown_of_headings_only_keeps_its_text():
    """A file whose every line opens with # (comments of a config or data file saved as
    .md) is all headings: its text is still indexed, not reported as empty."""
    text = "# The TZ database is in the public domain.\n\n# Anyone may contribute to it.\n"
    (section,) = parse(Path("tz.md"), text.encode())
    assert "public domain" in section.text and "contribute" in section.text
    assert [s.section for s in parse(Path("a.md"), b"# Title\n\nBody.\n")] == ["Title"]


def test_line_breaks_of_an_html_source_are_not_breaks_of_its_text():
    """A paragraph wrapped in the HTML source reads as one line (as a browser shows it):
    words joined by a space, kanji and kana by nothing; <pre> keeps its lines."""
    page = (
        "<h1>Pay</h1><p>Claims are paid on the\n  25th of the following month.</p>"
        "<pre>make\nmake install</pre><p>申請は人事ポー\nタルで行います。\nDetails: HR.</p>"
    )
    (section,) = parse(Path("pay.html"), page.encode())
    assert section.text.splitlines() == [
        "Claims are paid on the 25th of the following month.",
        "make",
        "make install",
        "申請は人事ポータルで行います。 Details: HR.",
    ]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "shift_jis", "euc_jp"])
def test_japanese_text_in_common_encodings(encoding: str):
    text = "在宅勤務は週3日までです。申請は人事ポータルで行います。" * 3
    assert decode_text(text.encode(encoding)) == text


def test_cp1252_text():
    text = "Café résumé — naïve façade, déjà vu. " * 5
    assert decode_text(text.encode("cp1252")) == text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty file"),
        ("binary.txt", bytes(range(256)) * 40, "not a text file"),
        ("broken.pdf", b"%PDF-1.4\n this is not really a pdf", "PDF"),
        ("broken.docx", b"PK\x03\x04 not a zip at all", "not a valid DOCX"),
    ],
)
def test_bad_files_raise_one_line_reasons(name: str, data: bytes, reason: str):
    with pytest.raises(ParseError) as info:
        parse(Path(name), data)
    assert reason in str(info.value) and "\n" not in str(info.value)


def _with_control_character(made: io.BytesIO, member: str, word: bytes) -> bytes:
    broken = io.BytesIO()
    with zipfile.ZipFile(made) as old, zipfile.ZipFile(broken, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            new.writestr(
                item, data.replace(word, word + b"\x1b") if item.filename == member else data
            )
    return broken.getvalue()


def test_office_files_whose_xml_is_broken_say_so_in_one_line():
    """A control character in a part's XML (a generator's or a converter's slip: 11 of
    38,325 files of the generated share) is a damaged file to open and save again, not
    a parser crash."""
    from openpyxl import Workbook

    made = io.BytesIO()
    document = docx.Document()
    document.add_paragraph("Quarterly report")
    document.save(made)
    with pytest.raises(ParseError) as info:
        parse(Path("report.docx"), _with_control_character(made, "word/document.xml", b"Quarterly"))
    assert str(info.value) == (
        "not a valid DOCX file (XMLSyntaxError); open it in Word and save it again"
    )
    made = io.BytesIO()
    book = Workbook()
    book.active.append(["Quarter", "Revenue"])
    book.save(made)
    with pytest.raises(ParseError) as info:
        parse(Path("sales.xlsx"), _with_control_character(made, "xl/worksheets/sheet1.xml", b"<c "))
    assert "XLSX" in str(info.value) and "open it in Excel and save it again" in str(info.value)


def _pdf_bytes(text: str) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 10, text)
    return bytes(pdf.output())


def test_password_protected_pdf_is_reported():
    writer = PdfWriter(clone_from=io.BytesIO(_pdf_bytes("secret plans")))
    writer.encrypt(user_password="hunter2", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(ParseError, match="password-protected"):
        parse(Path("locked.pdf"), out.getvalue())


def test_pdf_without_text_layer_is_reported():
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 50, 50)  # a drawing, no text
    with pytest.raises(ParseError, match="no text layer"):
        parse(Path("scan.pdf"), bytes(pdf.output()))


def test_docx_tables_are_kept_as_rows():
    document = docx.Document()
    document.add_heading("Rates", level=1)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Item", "Limit"
    table.cell(1, 0).text, table.cell(1, 1).text = "Hotel", "18,000 yen"
    out = io.BytesIO()
    document.save(out)
    sections = parse(Path("rates.docx"), out.getvalue())
    assert sections[0].section == "Rates" and "Hotel | 18,000 yen" in sections[0].text


def test_sentences_end_at_japanese_and_english_punctuation():
    pieces = split_sentences("週3日までです。申請は金曜日！本当？ Yes. Done")
    assert pieces[:3] == ["週3日までです。", "申請は金曜日！", "本当？"]
    assert "".join(pieces) == "週3日までです。申請は金曜日！本当？ Yes. Done"


def test_wrapped_lines_stay_in_their_sentence_and_block_lines_are_their_own():
    text = (
        "Taxi fares are reimbursed after 22:00\nwith a receipt. Keep it\nfor a year, e.g. in"
        " a folder.\n- one item\n- two\n| a | b |\n| 1 | 2 |\n「承認です。」と言った。\n"
        "1. First step\n2. Second step"
    )
    assert split_sentences(text) == [
        "Taxi fares are reimbursed after 22:00\nwith a receipt.",
        " Keep it\nfor a year, e.g. in a folder.\n",
        "- one item\n",
        "- two\n",
        "| a | b |\n",
        "| 1 | 2 |\n",
        "「承認です。」",
        "と言った。\n",
        "1. First step\n",
        "2. Second step",
    ]
    wrapped = "Apply early (see\nSection 4)\nor late (it said “no.”)\nThen"
    assert split_sentences(wrapped) == [
        "Apply early (see\nSection 4)\nor late (it said “no.”)\n",
        "Then",
    ]


def _wrapped(text: str, width: int) -> str:
    """`text` wrapped at `width` characters, as PDF lines and HTML sources are."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def test_chunks_of_wrapped_text_start_and_end_at_sentence_ends(embedder):
    """A line break inside a sentence is no place to cut: the overlap once began chunks
    with the last lines of the one before, half a sentence."""
    from ingest.parsing import Section

    english = " ".join(f"Form {i} goes to desk {i % 9} by noon." for i in range(90))
    japanese = "".join(f"第{i}条は申請の期限を定めます。" for i in range(90))
    chunker = Chunker(embedder.count_tokens, size=64, overlap=16)
    for text, end in ((_wrapped(english, 30), "."), (_wrapped(japanese, 11), "。")):
        chunks = chunker.chunks([Section(text)])
        assert len(chunks) > 5
        firsts = [c.text.split(end)[0] for c in chunks]
        assert all(c.text.endswith(end) for c in chunks), [c.text[-30:] for c in chunks]
        assert all(f.startswith(("Form", "第")) for f in firsts), firsts
        pairs = zip(chunks, chunks[1:], strict=False)
        assert any(first in a.text for (a, _), first in zip(pairs, firsts[1:], strict=False)), (
            "neighbours share whole sentences (the overlap)"
        )


def test_a_chunk_the_tokenizer_reads_longer_is_halved_at_a_sentence_end():
    """The splitter adds up the counts of its pieces; a tokenizer that counts more for
    the whole makes the chunker halve the chunk, at a sentence end, not mid-word."""
    from ingest.parsing import Section

    def superadditive(text: str) -> int:  # long texts count more than their parts
        words = len(text.split())
        return words + (words // 10) ** 2

    text = " ".join(f"Step {i} needs {'a signed ' * (i % 4)}form." for i in range(40))
    chunks = Chunker(superadditive, size=40, overlap=0).chunks([Section(text)])
    assert all(superadditive(c.text) <= 40 for c in chunks)
    assert all(c.text.startswith("Step") and c.text.endswith("form.") for c in chunks), [
        c.text for c in chunks
    ]
    assert " ".join(c.text for c in chunks) == text


def test_chunks_fit_the_model_and_overlap(embedder):
    from ingest.parsing import Section

    sentences = [f"Rule {i}: submit form {i} to the desk on floor {i % 9}." for i in range(120)]
    chunker = Chunker(embedder.count_tokens, size=64, overlap=16)
    chunks = chunker.chunks([Section(" ".join(sentences), None, "Forms")])
    assert len(chunks) > 5
    assert all(embedder.count_tokens(c.embed_text) <= 64 + 2 for c in chunks)
    # neighbours share text (the overlap), and nothing is lost
    assert any(c.text.split()[-1] in n.text for c, n in zip(chunks, chunks[1:], strict=False))
    assert all(f"form {i} " in " ".join(c.text for c in chunks) for i in range(120))


def test_japanese_chunks_split_on_sentence_ends(embedder):
    from ingest.parsing import Section

    text = "".join(f"第{i}条では在宅勤務の申請について定めます。" for i in range(80))
    chunks = Chunker(embedder.count_tokens, size=64, overlap=8).chunks([Section(text)])
    assert len(chunks) > 3
    assert all(c.text.endswith("。") for c in chunks[:-1])


def test_extremely_long_lines_and_invisible_characters_are_chunked(embedder):
    rtl = "\u202eevil.exe\u202c"  # right-to-left override around a name
    zero_width = "pass\u200bword"
    line = "A" * 200_000  # one line, no spaces, no sentence end
    sections = parse(Path("odd.txt"), f"{rtl} {zero_width}\n{line}\n".encode())
    chunks = Chunker(embedder.count_tokens, size=200, overlap=20).chunks(sections)
    assert len(chunks) > 10
    assert all(embedder.count_tokens(c.embed_text) <= 202 for c in chunks)
    assert rtl in chunks[0].text and zero_width in chunks[0].text  # kept as text, not dropped


def _pdf_with_table(rows: list[tuple[str, ...]]) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 6, "Travel allowance 2026. The daily rates below apply to every trip.")
    pdf.ln(4)
    with pdf.table() as table:  # a ruled table, as word processors export them
        for cells in rows:
            row = table.row()
            for cell in cells:
                row.cell(cell)
    pdf.ln(4)
    pdf.multi_cell(0, 6, "Claims go to finance within 30 days of the trip.")
    pdf.rect(10, 250, 190, 30)  # a frame is not a table
    pdf.text(15, 260, "Frame note: keep receipts.")
    return bytes(pdf.output())


def test_pdf_tables_come_out_as_header_value_rows_in_reading_order():
    rows = [
        ("City", "Daily rate", "Hotel cap"),
        ("Osaka", "8,000 JPY", "12,000 JPY"),
        ("Sapporo", "7,500 JPY", "11,000 JPY"),
    ]
    (section,) = parse(Path("allowance.pdf"), _pdf_with_table(rows))
    lines = section.text.splitlines()
    assert section.page == 1
    assert lines[:3] == [
        "Travel allowance 2026. The daily rates below apply to every trip.",
        "City: Osaka; Daily rate: 8,000 JPY; Hotel cap: 12,000 JPY",
        "City: Sapporo; Daily rate: 7,500 JPY; Hotel cap: 11,000 JPY",
    ]
    assert "Claims go to finance within 30 days of the trip." in lines[3:]
    assert "Frame note: keep receipts." in section.text
    assert "Osaka 8,000" not in section.text  # the table's text once, as rows


def test_pdf_pages_that_draw_nothing_keep_their_text():
    (section,) = parse(Path("plain.pdf"), _pdf_bytes("Plain words. Nothing drawn here."))
    assert section.text == "Plain words. Nothing drawn here."


def test_running_heads_and_feet_of_pdf_pages_are_left_out():
    """A passage cut from a page holds the page's text, not "Page 2 of 3" or the title
    line printed on every page; a line that is only on some pages, or a one-page PDF,
    keeps everything."""
    pdf = FPDF()
    bodies = [
        "Claims are paid monthly.",
        "Taxis need a receipt.",
        "Hotels are booked by the travel desk.",
    ]
    for n, body in enumerate(bodies, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 10, f"Kiri Systems - Expense Policy FIN-07\n{body}\nPage {n} of 3")
    sections = parse(Path("policy.pdf"), bytes(pdf.output()))
    assert [s.text for s in sections] == bodies
    assert [s.page for s in sections] == [1, 2, 3]

    (alone,) = parse(Path("one.pdf"), _pdf_bytes("Kiri Systems\nOnly page.\nPage 1 of 1"))
    assert alone.text.splitlines() == ["Kiri Systems", "Only page.", "Page 1 of 1"]


def test_markdown_strong_marks_are_not_kept_in_the_text():
    text = (
        "# Leave\n\nYou receive **20 days** of leave and __10 days of sick\nleave__.\n"
        "Use `**kept**` and snake__case__names.\n\n```\n**in code**\n```\n"
    )
    (section,) = parse(Path("leave.md"), text.encode())
    assert section.text.splitlines() == [
        "You receive 20 days of leave and 10 days of sick",
        "leave.",
        "Use `**kept**` and snake__case__names.",
        "",
        "```",
        "**in code**",
        "```",
    ]
