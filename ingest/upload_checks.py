"""The checks an uploaded file passes before anything is written (ingest/uploads.py writes).

A refused file gets one reason, as an `UploadProblem` with a code (the page translates it,
ui.web.i18n's "upload_<code>") and an English message:

- its name: directory parts (`/` and `\\`) are dropped; absolute paths, `..`, control and
  invisible characters (bidi overrides that disguise `exe.pdf`), characters Windows forbids
  (`<>:"|?*`), Windows device names (CON, PRN, AUX, NUL, COM0-9, LPT0-9, with or without an
  extension), leading dots (hidden files are never indexed, and `.taimatsu-acl.toml` must
  not be overwritten), a trailing dot and over-long names are refused;
- its type: the last extension must be one ingestion reads (ingest.parsing.base.PARSERS). An
  executable-looking inner extension (`report.exe.pdf`) is neutralized, not refused: the
  file is stored as `report_exe.pdf`. Its content is checked against its last extension,
  so it is a real PDF; what the rename removes is the remaining risk — a web server or file
  share that maps any `.exe`/`.php` part of a name to a handler — without making the
  administrator rename a genuine document;
- its content: it must be what its extension says (`%PDF-` for PDF; a zip with the right
  main part for DOCX/PPTX/XLSX; text that decodes, with no binary signature, for the text
  types) and not be empty.
"""

from __future__ import annotations

import re
import unicodedata
import zipfile
from collections.abc import Iterable
from io import BytesIO
from pathlib import PurePosixPath

from assistant.errors import UPLOAD_MESSAGES, ParseError, UploadError, UploadProblem
from ingest.parsing import PARSERS, decode_text

MAX_NAME_BYTES = 200  # UTF-8 bytes; file systems allow 255, and `-N` may be added
MAX_GROUP_CHARS = 100
STALE_TEMP_SECONDS = 3600

DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"0123456789", "¹", "²", "³"]}
)
FORBIDDEN_CHARACTERS = frozenset('<>:"|?*')
# inner extensions that some program, server or share runs or interprets
EXECUTABLE_SUFFIXES = frozenset(
    "exe com bat cmd ps1 psm1 vbs vbe js jse mjs wsf wsh hta msi msp scr pif cpl dll sys "
    "lnk reg inf jar class apk app dmg pkg deb rpm sh bash zsh csh ksh command run bin elf "
    "so dylib php php3 php4 php5 php7 php8 phtml phar asp aspx ashx asmx cer jsp jspx cgi pl "
    "py pyc pyw rb lua svg xhtml htaccess".split()
)
OFFICE_PARTS = {
    ".docx": "word/document.xml",
    ".pptx": "ppt/presentation.xml",
    ".xlsx": "xl/workbook.xml",
}
TYPE_NAMES = {".pdf": "PDF", ".docx": "Word", ".pptx": "PowerPoint", ".xlsx": "Excel"}
BINARY_SIGNATURES = (
    b"MZ",
    b"\x7fELF",
    b"PK\x03\x04",
    b"%PDF",
    b"\x89PNG",
    b"GIF8",
    b"\xff\xd8\xff",
    b"\xca\xfe\xba\xbe",
    b"\xcf\xfa\xed\xfe",
    b"\xd0\xcf\x11\xe0",
    b"Rar!",
    b"7z\xbc\xaf",
    b"\x1f\x8b",
)

MESSAGES = UPLOAD_MESSAGES


def accepted_suffixes() -> list[str]:
    return sorted(PARSERS)


# -- names --------------------------------------------------------------------------------


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def safe_name(raw: str) -> tuple[str, bool]:
    """(the name to store, whether an inner extension was neutralized); UploadProblem if
    the name is refused."""
    if any(_invisible(ch) for ch in raw):
        raise UploadProblem("control")
    if raw.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", raw):
        raise UploadProblem("absolute")
    parts = re.split(r"[/\\]", raw)
    if any(part.strip() == ".." for part in parts):
        raise UploadProblem("traversal")
    name = unicodedata.normalize("NFC", parts[-1]).strip()
    if not name:
        raise UploadProblem("empty_name")
    if name.startswith("."):
        raise UploadProblem("hidden")
    if any(ch in FORBIDDEN_CHARACTERS for ch in name):
        raise UploadProblem("reserved_char")
    if name.endswith("."):
        raise UploadProblem("trailing_dot")
    stem = name.split(".")[0].rstrip(" ").upper()
    if stem in DEVICE_NAMES:
        raise UploadProblem("device", stem=stem)
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in PARSERS:
        raise UploadProblem(
            "type", suffix=suffix or "(none)", accepted=" ".join(accepted_suffixes())
        )
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UploadProblem("too_long", limit=MAX_NAME_BYTES)
    return _neutralize(name)


def _neutralize(name: str) -> tuple[str, bool]:
    """`report.exe.pdf` -> `report_exe.pdf`: executable inner extensions joined by `_`."""
    first, *inner, last = name.split(".")
    out, renamed = first, False
    for part in inner:
        if part.strip().lower() in EXECUTABLE_SUFFIXES:
            out, renamed = f"{out}_{part}", True
        else:
            out = f"{out}.{part}"
    return f"{out}.{last}", renamed


# -- content ------------------------------------------------------------------------------


def check_content(name: str, data: bytes) -> None:
    """UploadProblem unless the bytes are what the extension says."""
    suffix = PurePosixPath(name).suffix.lower()
    if not data.strip():
        raise UploadProblem("empty")
    if suffix == ".pdf":
        if b"%PDF-" not in data[:1024]:
            raise UploadProblem("mismatch", type="PDF", suffix=suffix)
    elif suffix in OFFICE_PARTS:
        if not data.startswith(b"PK\x03\x04") or not _zip_has(data, OFFICE_PARTS[suffix]):
            raise UploadProblem("mismatch", type=TYPE_NAMES[suffix], suffix=suffix)
    else:  # the text types: .txt .md .markdown .csv .tsv .html .htm .eml
        if data.startswith(BINARY_SIGNATURES):
            raise UploadProblem("not_text", suffix=suffix)
        try:
            decode_text(data)
        except ParseError:
            raise UploadProblem("not_text", suffix=suffix) from None


def _zip_has(data: bytes, part: str) -> bool:
    """Reads the zip's directory only; the zip-bomb checks come at ingestion."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return part in names and "[Content_Types].xml" in names


def clean_groups(chosen: Iterable[str], extra: str = "") -> list[str]:
    """The groups picked plus those typed (comma-separated), checked and sorted."""
    names = [*chosen, *extra.replace(";", ",").split(",")]
    groups = set()
    for raw in names:
        group = raw.strip()
        if not group:
            continue
        if any(_invisible(ch) for ch in group) or len(group) > MAX_GROUP_CHARS:
            raise UploadError("bad_group", group=group[:MAX_GROUP_CHARS])
        groups.add(group)
    if not groups:
        raise UploadError("no_groups")
    return sorted(groups)
