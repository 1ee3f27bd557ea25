"""Sections to chunks that fit the embedding model.

llama-index's `SentenceSplitter` does the packing (paragraphs first, then sentences;
a sentence longer than a chunk by its lines, clauses, then words) with overlap; sizes
are counted in the embedding model's own tokens, so a chunk is never silently truncated
by the model. Sentences end at `.!?` followed by a space (not after "e.g." or a list
number) and at the Japanese `。！？` (and their half-width variant), with any closing
quote or bracket, which the default English sentence tokenizer does not know.

A chunk starts and ends at a sentence boundary unless one sentence is longer than a
chunk: a passage shown to a person or given to the model reads whole. So a line break
ends a sentence only where the line before ends one, or either line is a block of its
own (a table row, a list item, a heading): text wrapped at a fixed width (PDF lines,
HTML and Markdown sources) has a line break in the middle of most sentences, and the
overlap, which carries whole splits, then began a chunk with half a sentence.

Hostile input costs time in proportion to its size: a text too long for any chunk is
never handed to the tokenizer (it measures it by its characters), the counts of short
pieces are remembered, and a run of characters with no space in it (a one-line 5 MB
file, Japanese without 。) is cut into slices rather than counted a character at a
time. A heading takes at most half a chunk, and is shortened with "…" when longer, so
the model always reads the text under it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest.parsing import Section

if TYPE_CHECKING:  # imported when the first file is split: llama-index takes seconds to
    # import, and a run over unchanged files (the common cron run) splits nothing
    from llama_index.core.node_parser import SentenceSplitter

_CLOSERS = "\"'”’)）]」』】〕》〉"
_CLOSING = f"[{re.escape(_CLOSERS)}]*"  # quotes and brackets that close a sentence
_SENTENCE_END = re.compile(rf"[。！？｡]{_CLOSING}|[.!?]{_CLOSING}(?=\s)|\n")
_LIST_NUMBER = r"\(?(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})[.)）]"
# a full stop that ends no sentence: after an abbreviation, or a list number at a line start
_NOT_AN_END = re.compile(
    rf"(?:\b(?:e\.g|i\.e|cf|vs|approx|Mr|Mrs|Ms|Dr|Fig|No)\.|(?:^|\n)[ \t]*{_LIST_NUMBER})$",
    re.IGNORECASE,
)
# a line that is a block of its own: a table row, a list item, a heading, a quote, a fence
_BLOCK_LINE = re.compile(rf"[ \t]*(?:[|#>]|```|~~~|[-*+•・●◦▪※][ \t]|{_LIST_NUMBER}[ \t]|[①-⑳])")
_LINE_BREAK = re.compile(r"(?<=\n)")
_CLAUSE_END = re.compile(r"(?<=[,;:])(?=\s)|(?<=[、，；：])")
_SPACE = re.compile(r"\s+")
_LINE_END = "。！？｡.!?:："  # a line ending in one of these (and closing quotes) ends a sentence
LONG_RUN_CHARS = 256  # no word or URL is this long: a run this long is cut into slices
RUN_SLICE_CHARS = 32  # a few tokens, rarely more than 32: a slice fits in a chunk
_LONG_RUN = re.compile(rf"\S{{{LONG_RUN_CHARS},}}")


def sentence_ends(text: str) -> list[int]:
    """Where sentences end in `text`: the offsets after the punctuation and its closing
    quotes, or after a line break that ends a sentence (`_line_break_ends`)."""
    ends = []
    for match in _SENTENCE_END.finditer(text):
        at = match.start()
        if text[at] == "\n" and not _line_break_ends(text, at):
            continue
        if text[at] == "." and _NOT_AN_END.search(text, max(0, at - 8), at + 1):
            continue
        if ends and ends[-1] == at:  # "end.\n": the line break ends that sentence
            ends.pop()
        ends.append(match.end())
    return ends


def _line_break_ends(text: str, at: int) -> bool:
    next_end = text.find("\n", at + 1)
    line = text[text.rfind("\n", 0, at) + 1 : at]
    return line_ends_sentence(line, text[at + 1 : next_end if next_end >= 0 else len(text)])


def line_ends_sentence(line: str, next_line: str) -> bool:
    """Whether a line break between `line` and `next_line` ends a sentence: the line ends
    with a sentence's punctuation (or a table row's "|"), it or the next line is a block
    of its own, or either is blank; not a line break that wraps a sentence at a fixed
    width, as in PDF lines and HTML and Markdown sources."""
    before = line.rstrip()
    if not before or not next_line.strip() or before.endswith("|"):
        return True
    if before.rstrip(_CLOSERS)[-1:] in tuple(_LINE_END):  # "end." or "(end.)", not "(see 4)"
        return True
    return bool(_BLOCK_LINE.match(before) or _BLOCK_LINE.match(next_line))


def split_sentences(text: str) -> list[str]:
    """Split after sentence ends, and every `RUN_SLICE_CHARS` characters inside a run of
    `LONG_RUN_CHARS` or more non-space characters, keeping every character (the splitter
    rejoins)."""
    pieces = []
    cuts = sentence_ends(text)
    for begin, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        sentence = text[begin:end]
        start = 0
        for run in _LONG_RUN.finditer(sentence):
            for cut in range(run.start() + RUN_SLICE_CHARS, run.end(), RUN_SLICE_CHARS):
                pieces.append(sentence[start:cut])
                start = cut
        pieces.append(sentence[start:])
    return [p for p in pieces if p] or [text]


def _split_at(pattern: re.Pattern[str], text: str) -> list[str]:
    return [piece for piece in pattern.split(text) if piece]


def _middle(text: str) -> int:
    """Where to halve `text`: the sentence end nearest its middle, else the line break or
    space nearest it, else the middle; always in its middle half, so halving stays
    logarithmic."""
    low, high = len(text) // 4, min(len(text) - len(text) // 4, len(text) - 1)
    middle = len(text) / 2
    for ends in (
        sentence_ends(text),
        [m.end() for m in _LINE_BREAK.finditer(text)],
        [m.end() for m in _SPACE.finditer(text)],
    ):
        inside = [end for end in ends if low < end <= high]
        if inside:
            return min(inside, key=lambda end: abs(end - middle))
    return len(text) // 2


@dataclass(frozen=True)
class Chunk:
    text: str
    page: int | None
    section: str | None

    @property
    def embed_text(self) -> str:
        """What the models see: the heading path gives the chunk its context."""
        return f"{self.section}\n{self.text}" if self.section else self.text


CHARS_PER_TOKEN_MAX = 8  # a bound on characters too: the model reads a 200 kB "word" as one token
SHORT_CHARS = 64  # token counts of pieces this short are remembered (repeated words, slices)


class Chunker:
    def __init__(self, count_tokens: Callable[[str], int], size: int, overlap: int) -> None:
        if overlap >= size:
            raise ValueError(f"chunk overlap ({overlap}) must be smaller than the size ({size})")

        @functools.lru_cache(maxsize=8192)
        def count_short(text: str) -> int:
            return count_tokens(text)

        def count(text: str) -> int:
            chars = -(-len(text) // CHARS_PER_TOKEN_MAX)
            if chars > size:  # fits in no chunk whatever its tokens: not tokenized (a
                return chars  # 2M-character section took 17 s and 1 GB to tokenize)
            tokens = count_short(text) if len(text) <= SHORT_CHARS else count_tokens(text)
            return max(tokens, chars)

        self._count = count
        self.size = size
        self._splitters: dict[int, SentenceSplitter] = {}
        self.overlap = overlap

    def _splitter(self, size: int) -> SentenceSplitter:
        if size not in self._splitters:
            from llama_index.core.node_parser import SentenceSplitter
            from llama_index.core.node_parser.text.utils import split_by_char, split_by_sep

            self._splitters[size] = SentenceSplitter(
                chunk_size=size,
                chunk_overlap=min(self.overlap, size // 4),
                tokenizer=lambda text: [0] * self._count(text),
                chunking_tokenizer_fn=split_sentences,
                paragraph_separator="\n\n",
            )
            # a sentence longer than a chunk: by its lines, then clauses, then words
            # (llama-index's default clause regex drops characters it does not match)
            self._splitters[size]._sub_sentence_split_fns = [
                functools.partial(_split_at, _LINE_BREAK),
                functools.partial(_split_at, _CLAUSE_END),
                split_by_sep(" "),
                split_by_char(),
            ]
        return self._splitters[size]

    def heading(self, heading: str | None) -> str | None:
        """The heading as embedded with each chunk: itself when it takes at most half a
        chunk (with its line break), else a long prefix that does, followed by "…"."""
        budget = self.size // 2 - 1
        if not heading or self._count(heading) <= budget:
            return heading
        low, high = 0, len(heading)  # a long prefix that fits (bisection; "…" alone fits)
        while low < high:
            middle = (low + high + 1) // 2
            if self._count(heading[:middle].rstrip() + "…") <= budget:
                low = middle
            else:
                high = middle - 1
        return heading[:low].rstrip() + "…"

    def _fit(self, text: str, size: int) -> list[str]:
        """`text`, halved until each part fits `size`. The splitter adds up the counts of
        the pieces it joins, but a tokenizer may count more for the whole: a word cut in
        slices is read differently in one piece (65 tokens from slices counted 64)."""
        text = text.strip()
        if len(text) < 2 or self._count(text) <= size:
            return [text]
        middle = _middle(text)
        return self._fit(text[:middle], size) + self._fit(text[middle:], size)

    def chunks(self, sections: list[Section]) -> list[Chunk]:
        out: list[Chunk] = []
        for section in sections:
            # the heading path is embedded with every chunk: leave room for it
            heading = self.heading(section.section)
            size = self.size - (self._count(heading) + 1 if heading else 0)
            for text in self._splitter(size).split_text(section.text):
                for part in self._fit(text, size):
                    if part:
                        out.append(Chunk(part, section.page, heading))
        return out
