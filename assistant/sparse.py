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


@lru_cache(maxsize=1)
def _model() -> Bm25:
    return Bm25(Bm25Config(tokenizer=TokenizerType.Word, language="english"))


def embed_document(text: str) -> SparseVector:
    return _model().embed_document(cjk_terms(text, document=True))


def embed_query(text: str) -> SparseVector:
    return _model().embed_query(cjk_terms(text, document=False))
