"""Refuse hostile Office files (zip bombs, absurd archives) before a library opens them.

DOCX, PPTX and XLSX are zip archives. python-docx and python-pptx read every member
into memory when they open a file, and openpyxl reads the shared strings and styles
whole, so a small file that declares gigabytes of content would take the ingestion
process down. The checks below only read the archive's central directory, which
`zipfile` also trusts for the sizes it will inflate (a member that inflates past its
declared size fails its CRC check instead of growing), so nothing is decompressed here.

Bounds, and why:
- total declared uncompressed size at most max(200 MB, 100 x the file size), and never
  more than 1 GiB. Real Office files compress 2-20x (XML) or not at all (images); very
  repetitive generated spreadsheets reach 50-100x. Deflate tops out near 1030x, which is
  where zip bombs sit. The 200 MB floor lets a small but very repetitive file through
  at a cost a worker can afford; the 1 GiB ceiling is what python-docx/python-pptx can
  hold in memory (plus their XML trees) next to the embedding model.
- at most 10,000 members (a 500-slide deck has about 2,000) and a central directory of
  at most 4 MB, checked from the end-of-archive record before `zipfile` builds one
  object per member.
"""

from __future__ import annotations

import io
import zipfile

from assistant.errors import ParseError

MB = 1024 * 1024
FLOOR_BYTES = 200 * MB
RATIO = 100
CEILING_BYTES = 1024 * MB
MAX_MEMBERS = 10_000
MAX_DIRECTORY_BYTES = 4 * MB

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # encrypted Office files and .doc/.xls/.ppt
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"


def expansion_limit(compressed: int) -> int:
    """The most a file of `compressed` bytes may declare once inflated."""
    return min(CEILING_BYTES, max(FLOOR_BYTES, RATIO * compressed))


def _directory_size(data: bytes) -> int | None:
    """The central directory's size from the end-of-archive record (zip64 aware), or None
    when there is no such record (not a zip)."""
    pos = data.rfind(_EOCD, max(0, len(data) - 22 - 65535))
    if pos < 0 or len(data) < pos + 22:
        return None
    size = int.from_bytes(data[pos + 12 : pos + 16], "little")
    if size == 0xFFFFFFFF and data[pos - 20 : pos - 16] == _EOCD64_LOCATOR:
        offset = int.from_bytes(data[pos - 12 : pos - 4], "little")
        if data[offset : offset + 4] == _EOCD64:
            size = int.from_bytes(data[offset + 40 : offset + 48], "little")
    return size


def check_office_zip(data: bytes, kind: str) -> None:
    """Raise ParseError unless `data` is a zip a `kind` (DOCX, PPTX, XLSX) library may open."""
    ext = kind.lower()
    if data.startswith(_OLE_MAGIC):
        raise ParseError(
            f"{kind} is password-protected or in the old binary format; "
            f"save an unprotected .{ext} copy to index it"
        )
    directory = _directory_size(data)
    if directory is None:
        raise ParseError(f"not a valid {kind} file (not a zip archive); open it and save it again")
    if directory > MAX_DIRECTORY_BYTES:
        raise ParseError(
            f"{kind} archive has a {directory / MB:.0f} MB member list (over "
            f"{MAX_DIRECTORY_BYTES // MB} MB); refused as hostile, check where the file came from"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (  # NotImplementedError: a zip version zipfile cannot read
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        ValueError,
        EOFError,
        OSError,
    ) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise ParseError(
            f"not a valid {kind} file (damaged zip: {reason}); open it and save it again"
        ) from exc
    if len(members) > MAX_MEMBERS:
        raise ParseError(
            f"{kind} archive has {len(members)} members (over {MAX_MEMBERS}); "
            "refused as hostile, check where the file came from"
        )
    if any(m.flag_bits & 0x1 for m in members):
        raise ParseError(f"{kind} has encrypted parts; save an unprotected .{ext} copy to index it")
    declared = sum(m.file_size for m in members)
    limit = expansion_limit(len(data))
    if declared > limit:
        raise ParseError(
            f"{kind} would expand from {len(data) / MB:.1f} MB to {declared / MB:.0f} MB "
            f"(limit {limit / MB:.0f} MB); refused as a possible zip bomb, "
            "check where the file came from"
        )
