"""The keyword leg: BM25-style sparse vectors, with Japanese made searchable.

Qdrant Edge's `Bm25` hashes tokens into sparse vectors of term-frequency weights; the
IDF is applied to the query's terms at search time, counted over the chunks the asker may
read (assistant/index/base.py, `visible_idf`). Its word tokenizer sees a
run of kanji and kana as one "word", and its multilingual tokenizer segments a kanji-only
query differently from the same kanji inside a sentence (measured: 有給休暇 alone gave no
token in common with a sentence containing it). So runs of CJK characters are rewritten
as overlapping character bigrams before tokenizing — the classic CJK bigram scheme —
which needs no dictionary, treats queries and documents alike, and keeps exact terms
(error codes, part numbers, names) whole in Latin script.
"""

from __future__ import annotations

import re
from functools import lru_cache

from qdrant_edge import Bm25, Bm25Config, SparseVector, TokenizerType

# Hiragana, katakana, CJK ideographs (and extension A, compatibility), half-width katakana.
_CJK_RUN = re.compile(r"[\u3041-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]+")


def _bigrams(run: str, with_unigrams: bool) -> str:
    if len(run) == 1:
        return f" {run} "
    grams = [run[i : i + 2] for i in range(len(run) - 1)]
    if with_unigrams:
        grams.extend(run)
    return " " + " ".join(grams) + " "


def cjk_terms(text: str, *, document: bool) -> str:
    """Rewrite CJK runs as bigrams; documents also get unigrams so a one-character
    query (年, 猫) can match."""
    return _CJK_RUN.sub(lambda m: _bigrams(m.group(0), document), text)


SCHEMES = ("bigrams", "words", "words+bigrams")
SCHEME = "words"  # measured: docs/decisions.md (the natural Japanese set)


def keyword_text(text: str, *, document: bool, scheme: str = SCHEME) -> str:
    """The text the BM25 tokenizer reads: CJK runs replaced by their content words
    (assistant.japanese), by character bigrams, or by both; Latin text unchanged."""
    if scheme == "bigrams":
        return cjk_terms(text, document=document)
    from assistant.japanese import content_words

    def rewrite(run: str) -> str:
        words = " ".join(content_words(run))
        if scheme == "words+bigrams":
            words += _bigrams(run, document)
        return f" {words} "

    return _CJK_RUN.sub(lambda m: rewrite(m.group(0)), text)


@lru_cache(maxsize=1)
def _model() -> Bm25:
    return Bm25(Bm25Config(tokenizer=TokenizerType.Word, language="english"))


def embed_document(text: str, scheme: str = SCHEME) -> SparseVector:
    return _model().embed_document(keyword_text(text, document=True, scheme=scheme))


def embed_query(text: str, scheme: str = SCHEME) -> SparseVector:
    return _model().embed_query(keyword_text(text, document=False, scheme=scheme))
