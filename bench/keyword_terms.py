"""Keyword terms for Japanese, side by side: character bigrams, morphological content
words, or both — scored on a natural-question gold set with the keyword leg alone.

    python bench/keyword_terms.py tests/data/eval/natural/ja [--schemes bigrams words]

The corpus is parsed and chunked by the product's own parser and chunker (no embedding:
the keyword leg does not need the dense model), each chunk and question turned into BM25
vectors by `assistant.sparse` under each scheme, and every chunk scored as the engine
does (the query's terms weighted by BM25 IDF over all chunks, times the chunk's term
weights). Printed per scheme: hit@1/5/10 and MRR@10 by document and by gold passage, the
answer gate's keyword coverage of the best passage for answerable and for unanswerable
questions, and the time to compute the chunks' vectors (ingestion's cost).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from assistant import sparse  # noqa: E402
from assistant.embedder import Embedder  # noqa: E402
from assistant.evaluation import holds_passage  # noqa: E402
from assistant.settings import Settings  # noqa: E402
from ingest.chunker import Chunker  # noqa: E402
from ingest.parsing import parse, supported  # noqa: E402

WEIGHTED = os.environ.get("WEIGHTED") == "1"


def load(folder: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (folder / "gold.jsonl").read_text().splitlines() if line]
    answerable = [r for r in rows if r.get("answerable", True) is not False]
    return answerable, [r for r in rows if r.get("answerable", True) is False]


def chunks_of(corpus: Path, chunker: Chunker) -> list[tuple[str, str]]:
    out = []
    for path in sorted(corpus.rglob("*")):
        if path.is_file() and supported(path):
            for chunk in chunker.chunks(parse(path, path.read_bytes())):
                out.append((str(path.relative_to(corpus)), chunk.embed_text))
    return out


class Ranker:
    """Chunks in the engine's keyword order for a question, with the gate's coverage."""

    def __init__(self, scheme: str, vectors: list[dict[int, float]]) -> None:
        self.scheme, self.vectors = scheme, vectors
        self.df = Counter(t for v in vectors for t in v)

    def __call__(self, question: str) -> tuple[list[int], list[float]]:
        q = sparse.embed_query(question, self.scheme)
        total, df = len(self.vectors), self.df
        idf = {t: math.log(1 + (total - df[t] + 0.5) / (df[t] + 0.5)) for t in q.indices}
        terms = list(zip(q.indices, q.values, strict=True))
        scores = [sum(w * idf[t] * v.get(t, 0.0) for t, w in terms) for v in self.vectors]
        order = sorted(range(total), key=lambda i: (-scores[i], i))[:10]
        mass = sum(idf.values()) or 1.0
        if WEIGHTED:  # the share of the question's IDF mass the chunk holds
            share = [sum(idf[t] for t in idf if t in self.vectors[i]) / mass for i in order]
        else:  # the share of the question's terms the chunk holds
            share = [sum(t in self.vectors[i] for t in idf) / max(1, len(idf)) for i in order]
        return order, share


def mecab_words(text: str) -> list[str]:
    """fugashi + unidic-lite, for comparison: the same parts of speech, UniDic lemmas."""
    from assistant import japanese

    tagger = _tagger()
    words = []
    for word in tagger(text):
        pos1, pos2 = word.feature.pos1, word.feature.pos2
        lemma = (word.feature.lemma or word.surface).split("-")[0]
        if pos1 not in {"名詞", "動詞", "形容詞", "形状詞"} or pos2 in ("数詞", "非自立可能"):
            continue
        if lemma in japanese._LIGHT or (len(lemma) == 1 and not japanese._kanji(lemma)):
            continue
        words.append(lemma)
    return words


@functools.lru_cache(maxsize=1)
def _tagger():  # noqa: ANN202
    import fugashi

    return fugashi.Tagger()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--schemes", nargs="+", default=[*sparse.SCHEMES, "mecab"])
    args = parser.parse_args()
    answerable, unanswerable = load(args.folder)
    settings = Settings()
    embedder = Embedder(settings.embed_model_dir)
    chunker = Chunker(embedder.count_tokens, settings.chunk_size, settings.chunk_overlap)
    chunks = chunks_of(args.folder / "corpus", chunker)
    print(f"{len(chunks)} chunks, {len(answerable)} answerable, {len(unanswerable)} not")
    print("scheme | doc hit@1 @5 @10 MRR@10 | passage hit@5 MRR@10 | coverage ans/unans | index s")
    for scheme in args.schemes:
        if scheme == "mecab":  # words, cut by fugashi + unidic-lite instead of Sudachi
            import assistant.japanese

            assistant.japanese.content_words = mecab_words
            scheme = "words"
        started = time.perf_counter()
        vectors = []
        for _, text in chunks:
            v = sparse.embed_document(text, scheme)
            vectors.append(dict(zip(v.indices, v.values, strict=True)))
        cost = time.perf_counter() - started

        rank = Ranker(scheme, vectors)

        doc_ranks, passage_ranks, cov_yes, cov_no = [], [], [], []
        for row in answerable:
            order, coverage = rank(row["question"])
            gold = set(row["sources"])
            passage = row.get("passage", "")
            doc = next((r for r, i in enumerate(order, 1) if chunks[i][0] in gold), None)
            hit = next(
                (
                    r
                    for r, i in enumerate(order, 1)
                    if chunks[i][0] in gold and holds_passage(chunks[i][1], passage)
                ),
                None,
            )
            doc_ranks.append(doc)
            passage_ranks.append(hit)
            cov_yes.append(max(coverage[:5], default=0.0))
        for row in unanswerable:
            cov_no.append(max(rank(row["question"])[1][:5], default=0.0))

        def at(ranks: list, k: int) -> float:
            return sum(1 for r in ranks if r and r <= k) / len(ranks)

        def mrr(ranks: list) -> float:
            return sum(1 / r for r in ranks if r) / len(ranks)

        print(
            f"{scheme} | {at(doc_ranks, 1):.3f} {at(doc_ranks, 5):.3f} {at(doc_ranks, 10):.3f} "
            f"{mrr(doc_ranks):.3f} | {at(passage_ranks, 5):.3f} {mrr(passage_ranks):.3f} | "
            f"{statistics.median(cov_yes):.2f}/{statistics.median(cov_no) if cov_no else 0:.2f} "
            f"| {cost:.1f}"
        )
        for gate in (0.3, 0.4, 0.5, 0.6):
            through = sum(c >= gate for c in cov_yes) / len(cov_yes)
            refused = sum(c < gate for c in cov_no) / len(cov_no) if cov_no else float("nan")
            print(
                f"    gate {gate:.1f}: answerable let through {through:.3f}, "
                f"unanswerable refused {refused:.3f}"
            )


if __name__ == "__main__":
    main()
