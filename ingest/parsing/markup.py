"""Plain text, Markdown (markdown-it-py, MIT) and HTML (BeautifulSoup with lxml, MIT/BSD)
as sections by heading."""

from __future__ import annotations

import re
import unicodedata
import warnings

from ingest.parsing.base import Headings, Section, decode_text, sections_from, strict_decode

_UNDERLINE = re.compile(r"^\s*(?:={3,}|-{3,})\s*$")


def _width(text: str) -> int:
    """Columns a line takes in a fixed-width font (a kanji or kana takes two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def parse_text(data: bytes) -> list[Section]:
    """Plain text, as sections by its underlined headings when it has them (a line under
    a line of ``===`` or ``---`` about as wide, after a blank line: the README and
    checklist style; levels in the order the underline characters first appear, as
    reStructuredText does), else as one section."""
    lines = decode_text(data).splitlines()
    headings = Headings()
    levels: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    start, current = 0, ""
    for i in range(1, len(lines)):
        title = lines[i - 1].strip()
        if (
            not _UNDERLINE.match(lines[i])
            or not title
            or _UNDERLINE.match(title)
            or (i >= 2 and lines[i - 2].strip())  # a paragraph's last line: a rule under it
            or not 0.5 <= len(lines[i].strip()) / _width(title) <= 1.5
        ):
            continue
        pairs.append((current, "\n".join(lines[start : i - 1])))
        headings.enter(levels.setdefault(lines[i].strip()[0], len(levels) + 1), title)
        current, start = str(headings), i + 1
    pairs.append((current, "\n".join(lines[start:])))
    return sections_from(pairs)


_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)[^`]*?\1")
# **strong** and __strong__ within a paragraph (CommonMark: the marks hug the text, and
# `__` does not open or close inside a word)
_IN_PARAGRAPH = r"(?:(?!\n[ \t]*\n).)+?"
_STRONG = re.compile(
    rf"\*\*(?=\S)({_IN_PARAGRAPH})(?<=\S)\*\*|(?<!\w)__(?=\S)({_IN_PARAGRAPH})(?<=\S)__(?!\w)",
    re.DOTALL,
)


def _plain_strong(prose: str) -> str:
    spans = [(m.start(), m.end()) for m in _CODE_SPAN.finditer(prose)]
    pieces, at = [], 0
    for begin, end in [*spans, (len(prose), len(prose))]:
        pieces.append(_STRONG.sub(lambda m: m.group(1) or m.group(2), prose[at:begin]))
        pieces.append(prose[begin:end])
        at = end
    return "".join(pieces)


def _without_strong(text: str) -> str:
    """Markdown text without the marks of strong emphasis, which a passage would show as
    they are ("**20 days**"); code blocks and code spans keep theirs."""
    out: list[str] = []
    prose: list[str] = []
    fenced = None
    for line in text.split("\n"):
        fence = _FENCE.match(line)
        code = fenced is not None or fence or line.startswith(("    ", "\t"))
        if code and prose:
            out.append(_plain_strong("\n".join(prose)))
            prose = []
        if fenced is None and fence:
            fenced = fence.group(1)
        elif fenced is not None and fence and fence.group(1) == fenced:
            fenced = None
        if code:
            out.append(line)
        else:
            prose.append(line)
    if prose:
        out.append(_plain_strong("\n".join(prose)))
    return "\n".join(out)


def parse_markdown(data: bytes) -> list[Section]:
    from markdown_it import MarkdownIt

    text = decode_text(data)
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    headings = Headings()
    pairs: list[tuple[str, str]] = []
    start = 0
    current = ""
    for i, token in enumerate(tokens):
        if token.type != "heading_open" or token.map is None:
            continue
        begin, end = token.map
        pairs.append((current, "\n".join(lines[start:begin])))
        headings.enter(int(token.tag[1:]), tokens[i + 1].content.strip())
        current = str(headings)
        start = end
    pairs.append((current, "\n".join(lines[start:])))
    pairs = [(heading, _without_strong(text)) for heading, text in pairs]
    # only headings and no text under any (lines of a #-commented file saved as .md): the
    # headings are the text, rather than a document that reports "no text found"
    return sections_from(pairs) or sections_from([("", text)])


_HTML_BLOCKS = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "table",
    "tr",
    "td",
    "th",
    "pre",
    "blockquote",
    "br",
    "section",
    "article",
    "dt",
    "dd",
    "dl",
    "figcaption",
    "hr",
    "header",
    "footer",
    "main",
}
_HTML_DROP = ("script", "style", "noscript", "template", "head", "svg", "iframe", "object")


_WRAP = re.compile(r"[ \t]*\r?\n\s*")


def _unwrap(text: str) -> str:
    """A source line break inside a paragraph is no break of the text (HTML renders it as
    a space): a space between words, nothing between two kanji or kana."""

    def join(match: re.Match[str]) -> str:
        before = text[match.start() - 1] if match.start() else ""
        after = text[match.end()] if match.end() < len(text) else ""
        if before and after and _width(before) == 2 and _width(after) == 2:
            return ""
        return " "

    return _WRAP.sub(join, text)


def parse_html(data: bytes | str) -> list[Section]:
    """HTML as sections by heading, navigation and other page furniture left out
    (ingest.parsing.boilerplate); `data` may be already-decoded text (mail bodies)."""
    from bs4 import BeautifulSoup, NavigableString, Tag, XMLParsedAsHTMLWarning

    # an .html file with an XML prologue (XHTML, DocBook) is read as HTML, on purpose
    warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)
    if isinstance(data, bytes):  # valid UTF-8 is UTF-8 (bs4 took 2 kana for GB18030)
        data = strict_decode(data, "utf-8-sig") or data
    try:
        soup = BeautifulSoup(data, "lxml")
    except ValueError:  # lxml refuses the encoding a damaged <meta charset> names
        if not isinstance(data, bytes):
            raise
        soup = BeautifulSoup(decode_text(data), "lxml")
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    from ingest.parsing.boilerplate import strip_boilerplate  # bs4: only for HTML

    content = strip_boilerplate(soup)
    headings = Headings()
    pairs: list[tuple[str, str]] = []
    buffer: list[str] = []
    current = ""
    skip: set[int] = set()
    for node in content.descendants:
        if isinstance(node, Tag):
            if re.fullmatch(r"h[1-6]", node.name or ""):
                pairs.append((current, "".join(buffer)))
                buffer = []
                headings.enter(int(node.name[1]), " ".join(node.get_text(" ").split()))
                current = str(headings)
                skip.update(id(s) for s in node.find_all(string=True))
            elif node.name in _HTML_BLOCKS:
                buffer.append("\n")
        elif isinstance(node, NavigableString) and id(node) not in skip:
            if type(node) is NavigableString:  # not a Comment, CData, Doctype...
                text = str(node)
                buffer.append(text if node.find_parent("pre") else _unwrap(text))
    pairs.append((current, "".join(buffer)))
    cleaned = [(h, re.sub(r"[ \t\r\f\v]+", " ", t)) for h, t in pairs]
    return sections_from([(h, re.sub(r"\s*\n\s*", "\n", t)) for h, t in cleaned])
