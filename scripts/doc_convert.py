"""Debian documentation to Markdown, for the evaluation corpora (scripts/build_eval.py).

- POD (Perl's documentation): headings, paragraphs, verbatim blocks as indented code,
  formatting codes as plain text (C<> as `code`, L<> as its text), =begin/=for dropped.
- roff man(7) pages: .SH/.SS as headings, font and character escapes resolved, macro
  definitions and comments dropped; the NAME section is taken out and returned apart
  (its one-line description becomes the question). mdoc pages are skipped.

Deterministic and dependency-free: the same package version gives the same text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

FAQ_FILES = [f"perlfaq{n}" for n in range(1, 10)]

# -- POD -> Markdown -----------------------------------------------------------------------

_ENTITIES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


def _entity(name: str) -> str:
    if name in _ENTITIES:
        return _ENTITIES[name]
    if name.isdigit():
        return chr(int(name))
    if name.lower().startswith("0x"):
        return chr(int(name, 16))
    return html.unescape(f"&{name};")


def _link(body: str) -> str:
    text, bar, target = body.partition("|")
    if bar:
        return text
    if "://" in body:
        return body
    name, slash, section = body.partition("/")
    section = section.strip('"')
    if slash and name:
        return f'"{section}" in {name}'
    if slash:
        return f'"{section}"'
    return body


def _code(letter: str, body: str) -> str:
    if letter == "C":
        return f"`{body}`"
    if letter == "E":
        return _entity(body)
    if letter == "L":
        return _link(body)
    if letter in "XZ":
        return ""
    return body  # B, I, F, S


def pod_inline(text: str) -> str:
    """POD formatting codes as plain text (C<> as `code`), innermost first."""
    for n in range(5, 1, -1):  # C<<< x >>> forms
        opening, closing = "<" * n, ">" * n
        pattern = re.compile(
            rf"([A-Z]){re.escape(opening)}\s+(.*?)\s+{re.escape(closing)}(?!>)", re.DOTALL
        )
        text = pattern.sub(lambda m: _code(m.group(1), m.group(2)), text)
    single = re.compile(r"([A-Z])<([^<>]*)>")
    while True:
        new = single.sub(lambda m: _code(m.group(1), m.group(2)), text)
        if new == text:
            return text
        text = new


@dataclass
class PodBlock:
    kind: str  # "head", "text", "verbatim", "item"
    text: str
    level: int = 0


def pod_blocks(source: str) -> list[PodBlock]:
    """The POD paragraphs of a file, with =begin/=end, =for and non-POD code dropped."""
    blocks: list[PodBlock] = []
    in_pod, skipping = False, None
    for para in re.split(r"\n[ \t]*\n", source.replace("\r\n", "\n")):
        if not para.strip():
            continue
        command = re.match(r"=(\w+)\s*(.*)", para, re.DOTALL)
        if command:
            name, rest = command.group(1), command.group(2).strip()
            in_pod = name != "cut"
            if skipping:
                skipping = None if (name == "end" and rest.split()[:1] == [skipping]) else skipping
                continue
            if name == "begin":
                skipping = rest.split()[0] if rest else ""
            elif name.startswith("head") and name[4:].isdigit():
                blocks.append(PodBlock("head", pod_inline(" ".join(rest.split())), int(name[4:])))
            elif name == "item":
                blocks.append(PodBlock("item", pod_inline(rest)))
            continue
        if not in_pod or skipping is not None:
            continue
        if para[0] in " \t":
            blocks.append(PodBlock("verbatim", para.rstrip()))
        else:
            blocks.append(PodBlock("text", pod_inline(para.strip())))
    return blocks


def _safe_line(line: str) -> str:
    """Plain text that Markdown would read as a heading gets a leading space."""
    if re.match(r"\s{0,3}(#|=+\s*$|-+\s*$)", line):
        return "\\" + line.lstrip()
    return line


def blocks_markdown(blocks: list[PodBlock], heading_offset: int = 0) -> str:
    out: list[str] = []
    for block in blocks:
        if block.kind == "head":
            out.append("#" * min(6, block.level + heading_offset) + " " + block.text)
        elif block.kind == "verbatim":
            out.append("\n".join("    " + line for line in block.text.splitlines()))
        elif block.kind == "item":
            item = block.text.strip()
            if item and item not in ("*", "-") and not re.fullmatch(r"\d+\.?", item):
                out.append("- " + _safe_line(item))
        else:
            out.append("\n".join(_safe_line(line) for line in block.text.splitlines()))
    return "\n\n".join(out).strip() + "\n"


@dataclass
class FaqEntry:
    id: str
    question: str
    category: str
    markdown: str
    first_paragraph: str


def _faq_entry(name: str, number: int, category: str, question: str, answer: list[PodBlock]):
    paragraphs = [b.text for b in answer if b.kind == "text"]
    if sum(len(b.text) for b in answer) < 40:
        return None  # an answer that only points elsewhere: no gold to find
    title = f"# {name}: {category}" if category else f"# {name}"
    return FaqEntry(
        f"{name}-{number:03d}",
        question,
        category,
        title + "\n\n" + blocks_markdown(answer),
        " ".join((paragraphs[0] if paragraphs else "").split())[:400],
    )


def faq_entries(pod_dir: Path) -> list[FaqEntry]:
    """Every =head2 question of perlfaq1-9, its answer as Markdown without the question."""
    entries: list[FaqEntry] = []
    for name in FAQ_FILES:
        blocks = pod_blocks((pod_dir / f"{name}.pod").read_text(encoding="utf-8"))
        category, question, answer = "", None, []
        found: list[FaqEntry] = []
        for block in [*blocks, PodBlock("head", "END", 1)]:
            is_head = block.kind == "head" and block.level <= 2
            if is_head and question is not None:
                entry = _faq_entry(name, len(found) + 1, category, question, answer)
                found += [entry] if entry else []
                question, answer = None, []
            if is_head and block.level == 1:
                if block.text.startswith("AUTHOR") or block.text == "END":
                    break
                head = block.text
                category = "" if head in ("NAME", "VERSION", "DESCRIPTION") else head
            elif is_head:
                question, answer = block.text, []
            elif question is not None:
                answer.append(block)
        entries += found
    return entries


def pod_copyright(pod: Path) -> str:
    """The text of a POD file's copyright or licence section(s)."""
    keep, lines = False, []
    for block in pod_blocks(pod.read_text(encoding="utf-8")):
        if block.kind == "head" and block.level == 1:
            keep = bool(re.search(r"COPYRIGHT|LICEN[CS]E", block.text))
        elif keep:
            lines.append(block.text)
    return "\n\n".join(lines)


# -- roff (man) -> Markdown ----------------------------------------------------------------

_ROFF_CHARS = {
    "em": "—",
    "en": "–",
    "bu": "•",
    "aq": "'",
    "dq": '"',
    "lq": "“",
    "rq": "”",
    "co": "©",
    "mi": "-",
    "hy": "-",
    "ra": "→",
    "la": "←",
    "de": "°",
    "+-": "±",
    "ti": "~",
    "sl": "/",
    "**": "*",
    "ts": '"',
    "oq": "'",
    "cq": "'",
    "rg": "®",
    "tm": "™",
    "pl": "+",
    "eq": "=",
    "lh": "☜",
    "rh": "☞",
    "ua": "↑",
    "da": "↓",
    "mu": "×",
    "di": "÷",
    "ba": "|",
    "br": "|",
}
_ROFF_ESCAPE = re.compile(
    r"\\(?:f(?:\[[^]]*\]|\(..|.)|s[-+]?\d+|\*(?:\(..|\[[^]]*\]|.)|\((..)|\[([^]]*)\]|(.))"
)
_JOINED = {"BR", "BI", "IR", "IB", "RB", "RI", "SB"}
_BREAKS = {"PP", "LP", "P", "sp", "br", "HP", "TP", "RS", "RE", "nf", "fi", "PD", "in", "ti"}


def _roff_escape(m: re.Match[str]) -> str:
    named, bracketed, single = m.group(1), m.group(2), m.group(3)
    if named:
        return _ROFF_CHARS.get(named, "")
    if bracketed is not None:
        return _ROFF_CHARS.get(bracketed, "")
    if single is None:
        return ""  # font, size or string escapes
    return {"-": "-", "e": "\\", " ": " ", "~": " ", "0": " ", "\\": "\\"}.get(single, "")


def roff_inline(text: str) -> str:
    return _ROFF_ESCAPE.sub(_roff_escape, text)


def _macro_args(rest: str) -> list[str]:
    return [a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"|\S+', rest)]


@dataclass
class ManPage:
    name: str
    section: str
    description: str
    markdown: str
    notice: str = ""  # the page's leading roff comments: its copyright and licence


def _notice(text: str) -> str:
    lines = []
    for raw in text.splitlines():
        if not raw.startswith(('.\\"', "'\\\"")):
            break
        lines.append(raw[3:].rstrip())
    return "\n".join(lines).strip()


def parse_man(text: str, name: str, section: str) -> ManPage | None:
    """A man(7) page as Markdown without its NAME section; None for mdoc pages, `.so`
    aliases and pages without a one-line description."""
    if re.search(r"^\.(Dd|Sh|so)\b", text, re.MULTILINE):
        return None
    lines: list[str] = []
    heading, description, skipping_macro = "", "", False
    for raw in text.splitlines():
        if skipping_macro:
            skipping_macro = raw.strip() != ".."
            continue
        if raw.startswith(('.\\"', "'\\\"", '\\"')) or raw.strip() in (".", "'"):
            continue
        if raw.startswith((".", "'")):
            macro, _, rest = raw[1:].strip().partition(" ")
            if macro in ("de", "de1", "am", "ig"):
                skipping_macro = True
            elif macro in ("SH", "SS"):
                heading = roff_inline(" ".join(_macro_args(rest))).strip()
                if heading not in ("名前", "名称", "NAME"):
                    lines.append("")
                    lines.append(("## " if macro == "SH" else "### ") + heading)
                    lines.append("")
            elif macro in ("B", "I", "SM", "IP", "TQ"):
                if macro == "IP":
                    lines.append("")
                lines.append(roff_inline(" ".join(_macro_args(rest))))
            elif macro in _JOINED:
                lines.append(roff_inline("".join(_macro_args(rest))))
            elif macro in _BREAKS:
                lines.append("")
            continue
        line = roff_inline(raw)
        if heading in ("名前", "名称", "NAME"):
            description += " " + line
            continue
        lines.append(line)
    _, dash, desc = description.partition(" - ")
    desc = " ".join(desc.split()) if dash else ""
    if not desc:
        return None
    body = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    body = "\n".join(
        _safe_line(line) if not line.startswith("#") else line for line in body.splitlines()
    )
    markdown = f"# {name}({section[3:]})\n\n{body}\n"
    return ManPage(name, section, desc, markdown, _notice(text))
