"""Sections to chunks that fit the embedding model.

llama-index's `SentenceSplitter` does the packing (paragraphs first, then sentences,
then words) with overlap; sizes are counted in the embedding model's own tokens, so a
chunk is never silently truncated by the model. Sentences end at `.!?` followed by a
space and at the Japanese `。！？` (and their half-width/fullwidth variants), which the
default English sentence tokenizer does not know.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from llama_index.core.node_parser import SentenceSplitter

from ingest.parsers import Section

_SENTENCE_END = re.compile(r"(?<=[。！？｡])|(?<=[.!?])(?=\s)|(?<=[.!?][\"')\]])(?=\s)|(?<=\n)")


def split_sentences(text: str) -> list[str]:
    """Split after sentence ends, keeping every character (the splitter rejoins)."""
    pieces = [p for p in _SENTENCE_END.split(text) if p]
    return pieces or [text]


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


class Chunker:
    def __init__(self, count_tokens: Callable[[str], int], size: int, overlap: int) -> None:
        if overlap >= size:
            raise ValueError(f"chunk overlap ({overlap}) must be smaller than the size ({size})")

        def count(text: str) -> int:
            return max(count_tokens(text), -(-len(text) // CHARS_PER_TOKEN_MAX))

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

    def chunks(self, sections: list[Section]) -> list[Chunk]:
        out: list[Chunk] = []
        for section in sections:
            # the heading path is embedded with every chunk: leave room for it
            heading_tokens = self._count(section.section) + 1 if section.section else 0
            size = max(32, self.size - heading_tokens)
            for text in self._splitter(size).split_text(section.text):
                if text.strip():
                    out.append(Chunk(text.strip(), section.page, section.section))
        return out
