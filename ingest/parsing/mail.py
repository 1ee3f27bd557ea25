"""E-mail messages (.eml) with the stdlib `email` package (policy.default).

The first Section holds the headers people ask about and the body (text/plain when
there is one, else the HTML part as text); section = the subject. Attachments with a
parser of their own (PDF, DOCX, XLSX, another .eml, ...) are parsed through the
registry and follow as "Subject > attachment: NAME" sections. An attachment that cannot
be read is skipped (and logged); it never fails the message. Mail nested in mail is
followed `MAX_NESTING` levels deep. A header is read up to `MAX_HEADER_CHARS`: the stdlib
parses headers in quadratic time (136 kB of Content-Type took 7 s; a 1 MB Subject, minutes
or all of the worker's memory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from pathlib import Path, PurePosixPath

from assistant.errors import ParseError
from ingest.parsing.base import Section, decode_text
from ingest.parsing.markup import parse_html

log = logging.getLogger(__name__)

MAX_NESTING = 3  # a message attached to a message attached to a message
MAX_ATTACHMENTS = 100
MAX_PART_DEPTH = 20  # multipart inside multipart
MAX_HEADER_CHARS = 16_384  # a Subject of 16 kB is already absurd
_depth: ContextVar[int] = ContextVar("taimatsu_mail_depth", default=0)


class _Policy(EmailPolicy):
    """policy.default, but a header is cut to `MAX_HEADER_CHARS` before it is parsed;
    with refold_source="none", attached mail is written back with its headers as they
    came (refolding a long header parses it too)."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        if isinstance(value, str) and len(value) > MAX_HEADER_CHARS:
            value = value[:MAX_HEADER_CHARS]
        return super().header_fetch_parse(name, value)


_POLICY = _Policy(refold_source="none")


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
        text = str(value) if value is not None else ""
    except Exception:  # a malformed header must not lose the whole message
        text = ""
    if "\ufffd" in text:  # raw 8-bit bytes (Shift_JIS from old mailers): guess again
        raw = next((v for k, v in message.raw_items() if k.lower() == name), "")
        raw = str(raw)[:MAX_HEADER_CHARS]
        try:
            text = decode_text(raw.encode("ascii", "surrogateescape")) if raw else text
        except (ParseError, UnicodeError):
            pass
    return " ".join(text.split())


def _text_of(part: Message) -> str:
    """A text part's content: decoded by its charset, or guessed when that is wrong."""
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, UnicodeError, ValueError, AttributeError):
        content = None
    if not isinstance(content, str):
        raw = part.get_payload(decode=True) or b""
        try:
            content = decode_text(raw) if raw.strip() else ""
        except ParseError:
            content = ""
    if part.get_content_subtype() == "html":  # headings kept as lines of their own
        sections = parse_html(content) if content.strip() else []
        return "\n\n".join(f"{s.section}\n{s.text}" if s.section else s.text for s in sections)
    return content.strip()


def _leaves(part: Message, depth: int = 0) -> Iterator[Message]:
    """Non-multipart parts in order; an attached message is one leaf (not walked into)."""
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        if depth < MAX_PART_DEPTH:
            for inner in part.get_payload():
                yield from _leaves(inner, depth + 1)
    else:
        yield part


def _attachment(part: Message, body: Message | None) -> tuple[str, bytes] | None:
    """(file name, bytes) of an attachment worth parsing, else None."""
    if part is body:
        return None
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        if not isinstance(inner, Message):
            return None
        name = part.get_filename() or f"{_header(inner, 'subject') or 'message'}.eml"
        return name, inner.as_bytes(policy=_POLICY)
    name = part.get_filename()
    if not name:
        return None
    return name, part.get_payload(decode=True) or b""


def _clean_name(name: str) -> str:
    """The base name only (no folders from the sender's machine), on one line."""
    base = PurePosixPath(name.replace("\\", "/")).name
    return " ".join(base.split()) or "attachment"


def parse_eml(
    data: bytes,
    parse: Callable[[Path, bytes], list[Section]],
    supported: Callable[[Path], bool],
) -> list[Section]:
    """A message and its attachments; `parse` and `supported` are the registry's (an
    attachment may be of any format, a mail among them), passed in so that this module
    does not import the registry that imports it."""
    depth = _depth.get()
    if depth >= MAX_NESTING:
        raise ParseError(f"mail nested more than {MAX_NESTING} levels deep; not followed")
    try:
        message = BytesParser(policy=_POLICY).parsebytes(data)
    except Exception as exc:  # the parser is lenient; anything it raises is a broken file
        raise ParseError(f"unreadable e-mail message ({exc.__class__.__name__})") from exc
    if not isinstance(message, EmailMessage) or not any(
        _header(message, h) for h in ("from", "to", "subject", "date", "message-id")
    ):
        raise ParseError(
            "not an e-mail message (no From, To, Subject or Date header); "
            "save the message from the mail program as .eml"
        )
    subject = _header(message, "subject")
    label = subject or "(no subject)"
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except (KeyError, ValueError, AttributeError, TypeError):
        body = None
    fields = ((name, _header(message, name.lower())) for name in ("Subject", "From", "Date"))
    head = "\n".join(f"{name}: {value}" for name, value in fields if value)
    text = _text_of(body) if body is not None else ""
    sections = [Section(f"{head}\n\n{text}".strip(), None, label)]

    attached = 0
    for part in _leaves(message):
        try:
            found = _attachment(part, body)
        except Exception as exc:  # e.g. RecursionError writing back mail nested 250 deep
            log.info("%s: an attachment skipped (%s)", label, exc.__class__.__name__)
            continue
        if found is None:
            continue
        name, payload = _clean_name(found[0]), found[1]
        if not supported(Path(name)):
            continue
        if attached == MAX_ATTACHMENTS:
            log.warning("%s: only the first %d attachments are indexed", label, MAX_ATTACHMENTS)
            break
        attached += 1
        token = _depth.set(depth + 1)
        try:
            inner = parse(Path(name), payload)
        except Exception as exc:  # an attachment never fails the message
            log.info("%s: attachment %s skipped: %s", label, name, exc)
            continue
        finally:
            _depth.reset(token)
        where = f"{label} > attachment: {name}"
        for s in inner:
            heading = f"{where} > {s.section}" if s.section else where
            sections.append(Section(s.text, s.page, heading))
    return sections
