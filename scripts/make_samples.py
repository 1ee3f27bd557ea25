"""Generate the binary sample documents (PDF and DOCX) under samples/.

The text, Markdown and HTML samples are checked in as-is; this script only
builds the two binary files, deterministically (fixed dates, fixed ZIP
timestamps), so re-running it produces byte-identical output.

Usage: python scripts/make_samples.py   (needs fpdf2 and python-docx)
"""

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from docx import Document
from fpdf import FPDF

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FIXED_DATE = datetime(2024, 4, 1, tzinfo=UTC)

VPN_PAGES = [
    (
        "Connecting to the VPN",
        [
            "Kiri Systems K.K. - IT Service Desk - VPN troubleshooting guide, "
            "version 2.1. Use the VPN whenever you work outside the office "
            "and need internal systems.",
            '1. Install the VPN client "KiriConnect" from the Self-Service '
            "portal (Software > KiriConnect). It is pre-installed on laptops "
            "issued after January 2024.",
            "2. Open KiriConnect and enter the server address "
            "vpn.kiri.example with port 443. The connection uses TLS on port "
            "443, so it also works on most hotel and guest networks.",
            "3. Sign in with your company account and approve the sign-in "
            "request in the KiriAuth app.",
            '4. When the status shows "Connected", you can reach internal '
            "systems such as the HR portal Sakura and the finance system.",
            "If the connection fails, note the error code shown by "
            "KiriConnect and look it up on the next page.",
        ],
    ),
    (
        "Error codes",
        [
            "VPN-0x2F: the device certificate has expired. Renew it in the "
            "Self-Service portal under Certificates > Renew, then restart "
            "KiriConnect. Renewal takes about 5 minutes.",
            "VPN-0x31: your account is locked after 5 failed sign-ins. Wait "
            "15 minutes and try again, or call the IT desk at extension 4410 "
            "to unlock it immediately.",
            "VPN-0x12: the server vpn.kiri.example could not be reached. "
            "Check your internet connection and that port 443 is not blocked "
            "by the local network.",
            "Still stuck? Contact the IT desk at extension 4410 (weekdays "
            "9:00-18:00) and quote the error code.",
        ],
    ),
]

SECURITY_SECTIONS = [
    (
        "パスワード",
        [
            "パスワードは90日ごとに変更してください。変更はセルフサービスポータルから行えます。",
            "パスワードは14文字以上とし、他のサービスと同じパスワードを使い回さないでください。",
        ],
    ),
    (
        "外部記憶媒体",
        [
            "USBメモリの使用は情報システム部の許可が必要です。",
            "許可を得たUSBメモリは暗号化機能付きのものに限り、使用後はデータを消去してください。",
        ],
    ),
    (
        "不審なメール",
        [
            "送信元に心当たりのないメールや、添付ファイル・リンクを開くよう急かすメールは"
            "開かずに security@kiri.example に転送してください。",
            "誤って添付ファイルを開いた場合は、ネットワークから切断し、すぐに情報システム部へ連絡してください。",
        ],
    ),
    (
        "画面ロックとクリアデスク",
        [
            "席を離れるときは、必ずPCの画面をロックしてください。",
            "退社時には、機密情報を含む書類を机の上に残さず、施錠できる引き出しに保管してください。",
        ],
    ),
    (
        "機器の紛失・盗難",
        [
            "ノートPCを紛失した場合は、1時間以内に内線4410（ITデスク）へ連絡してください。",
            "スマートフォンを紛失した場合も同様に連絡し、KiriAuthアプリの再登録を受けてください。",
        ],
    ),
]


def make_pdf(path: Path) -> None:
    pdf = FPDF()
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title("VPN Troubleshooting Guide")
    pdf.set_author("Kiri Systems K.K. IT Service Desk")
    pdf.set_lang("en")
    pdf.set_auto_page_break(False)  # short pages; keeps the footer on the same page
    for number, (heading, paragraphs) in enumerate(VPN_PAGES, start=1):
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 18)
        pdf.multi_cell(0, 10, f"VPN Troubleshooting Guide - {heading}")
        pdf.ln(4)
        pdf.set_font("Helvetica", size=11)
        for text in paragraphs:
            pdf.multi_cell(0, 6, text)
            pdf.ln(3)
        pdf.set_y(-20)
        pdf.set_font("Helvetica", "I", 9)
        pdf.cell(0, 6, f"Page {number} of {len(VPN_PAGES)}", align="C")
    pdf.output(str(path))


def make_docx(path: Path) -> None:
    doc = Document()
    props = doc.core_properties
    props.title, props.author, props.last_modified_by = "情報セキュリティ規程", "情報システム部", ""
    props.created = props.modified = props.last_printed = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    doc.add_heading("情報セキュリティ規程", level=1)
    doc.add_paragraph("桐システムズ株式会社（Kiri Systems K.K.）情報システム部　規程番号 IS-02")
    doc.add_paragraph("本規程は、全従業員が守るべき情報セキュリティの基本ルールを定めます。")
    for heading, paragraphs in SECURITY_SECTIONS:
        doc.add_heading(heading, level=2)
        for text in paragraphs:
            doc.add_paragraph(text)
    buf = io.BytesIO()
    doc.save(buf)
    # Rewrite the ZIP with fixed timestamps so the output is reproducible.
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE.timetuple()[:6])
            dst.writestr(info, src.read(name), zipfile.ZIP_DEFLATED)


if __name__ == "__main__":
    make_pdf(SAMPLES / "en" / "vpn-troubleshooting.pdf")
    make_docx(SAMPLES / "ja" / "情報セキュリティ.docx")
    print("wrote", SAMPLES / "en" / "vpn-troubleshooting.pdf")
    print("wrote", SAMPLES / "ja" / "情報セキュリティ.docx")
