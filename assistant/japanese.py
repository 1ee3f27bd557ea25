"""Japanese content words, for the keyword leg and the answer gate.

Japanese has no spaces, so the keyword leg needs terms cut out of the text. Character
bigrams (the classic scheme, our first) need no dictionary but turn a question's
particles and verb endings (「認められていますか」) into terms no document holds, which
dilutes the keyword coverage the answer gate reads. A morphological analyser cuts the
text into words with their part of speech and dictionary form, so a question and a
document meet on their content words: nouns, verbs, adjectives, in dictionary form
(「認められて」 and 「認める」 alike), whatever the politeness of the sentence.

Analysers (measured on the natural Japanese gold set, docs/decisions.md): SudachiPy with
`sudachidict_core` (Apache-2.0; the dictionary ships in its wheel) — chosen; fugashi
with `unidic-lite` (MIT/BSD). Sudachi's normalised form also unifies spelling variants
(「引越し」「引っ越し」), and its split modes give both the short units (在宅 / 勤務) and
the compound (在宅勤務), so a question using either part still meets the document.
"""

from __future__ import annotations

import threading
from functools import lru_cache

# Parts of speech (UniDic's, which Sudachi uses) whose words carry content.
_CONTENT = {"名詞", "動詞", "形容詞", "形状詞"}
# Content-word parts that are grammar all the same: するの「為る」, いる, ある, なる…
_LIGHT = {
    "為る", "居る", "有る", "成る", "出来る", "言う", "思う", "見る", "行く", "来る", "良い",
    "無い", "事", "物", "為", "所", "方", "時", "何", "其れ", "此れ", "是", "様", "訳", "筈",
    "場合", "際", "上", "中", "等", "他", "以上", "以下", "今", "度", "的",
}  # fmt: skip
_MAX_RUN = 5000  # characters analysed at once (Sudachi refuses inputs over ~49 KB)

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _analyser():  # noqa: ANN202 - sudachipy's Tokenizer
    from sudachipy import Dictionary

    dictionary = Dictionary(dict="core")
    make = getattr(dictionary, "tokenizer", None) or dictionary.create  # older sudachipy
    return make()


@lru_cache(maxsize=1)
def _modes():  # noqa: ANN202
    from sudachipy import SplitMode

    return SplitMode.A, SplitMode.C


def available() -> bool:
    try:
        _analyser()
    except Exception:  # noqa: BLE001 - the package or its dictionary is missing
        return False
    return True


def _content(morphemes, nouns_only: bool = False) -> list[str]:  # noqa: ANN001
    words = []
    for m in morphemes:
        if nouns_only and m.part_of_speech()[0] != "名詞":
            continue
        pos = m.part_of_speech()
        if pos[0] not in _CONTENT or pos[1] in ("数詞", "代名詞", "非自立可能"):
            continue
        word = m.normalized_form()
        if word in _LIGHT or (len(word) == 1 and not _kanji(word)):
            continue
        words.append(word)
    return words


def _kanji(char: str) -> bool:
    return "\u3400" <= char <= "\u9fff" or "\uf900" <= char <= "\ufaff"


def content_words(text: str) -> list[str]:
    """The content words of a run of Japanese text, in dictionary form: the short units,
    and each longer compound beside its parts."""
    short_mode, long_mode = _modes()
    words: list[str] = []
    with _lock:  # one analyser per process; Sudachi's tokenizer is not thread-safe
        analyser = _analyser()
        for start in range(0, len(text), _MAX_RUN):
            piece = text[start : start + _MAX_RUN]
            short = _content(analyser.tokenize(piece, short_mode))
            long = _content(analyser.tokenize(piece, long_mode))
            words.extend(short)
            words.extend(w for w in long if w not in short)
    return words


def content_nouns(text: str) -> list[str]:
    """The content nouns of a text (the things it is about), in dictionary form."""
    short_mode, _ = _modes()
    with _lock:
        return _content(_analyser().tokenize(text[:_MAX_RUN], short_mode), nouns_only=True)
