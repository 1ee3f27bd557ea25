"""Sections to chunks that fit the embedding model.

llama-index's `SentenceSplitter` does the packing (paragraphs first, then sentences,
then words) with overlap; sizes are counted in the embedding model's own tokens, so a
chunk is never silently truncated by the model. Sentences end at `.!?` followed by a
space and at the Japanese `。！？` (and their half-width/fullwidth variants), which the
default English sentence tokenizer does not know.

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

from llama_index.core.node_parser import SentenceSplitter

from ingest.parsing import Section

_SENTENCE_END = re.compile(r"(?<=[。！？｡])|(?<=[.!?])(?=\s)|(?<=[.!?][\"')\]])(?=\s)|(?<=\n)")
LONG_RUN_CHARS = 256  # no word or URL is this long: a run this long is cut into slices
RUN_SLICE_CHARS = 32  # a few tokens, rarely more than 32: a slice fits in a chunk
_LONG_RUN = re.compile(rf"\S{{{LONG_RUN_CHARS},}}")


def split_sentences(text: str) -> list[str]:
    """Split after sentence ends, and every `RUN_SLICE_CHARS` characters inside a run of
    `LONG_RUN_CHARS` or more non-space characters, keeping every character (the splitter
    rejoins)."""
    pieces = []
    for sentence in _SENTENCE_END.split(text):
        start = 0
        for run in _LONG_RUN.finditer(sentence):
            for cut in range(run.start() + RUN_SLICE_CHARS, run.end(), RUN_SLICE_CHARS):
                pieces.append(sentence[start:cut])
                start = cut
        pieces.append(sentence[start:])
    return [p for p in pieces if p] or [text]


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
            self._splitters[size] = SentenceSplitter(
                chunk_size=size,
                chunk_overlap=min(self.overlap, size // 4),
                tokenizer=lambda text: [0] * self._count(text),
                chunking_tokenizer_fn=split_sentences,
                paragraph_separator="\n\n",
            )
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
        middle = len(text) // 2
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
