"""Each retrieval leg on a real index, beside embedding the question, in one pass.

    python bench/index_legs.py DATA_DIR [--groups everyone] [--rounds 25]

DATA_DIR is an ingested index (`TAIMATSU_DATA_DIR` of a run, e.g. the 100,000-file share
of bench/share.py). Prints how many points it holds and how many have no vector graph yet
(docs/decisions.md §16), then, for six questions (English and Japanese), the median and
p95 of: embedding the question, and the dense, keyword and fused query (30 hits, the
asker's groups filtering every leg), each question embedded right before its queries.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from assistant import sparse
from assistant.embedder import Embedder
from assistant.index import SearchRequest, SparseTerms, open_index
from assistant.settings import Settings

QUESTIONS = [
    "How do I configure the network interface?",
    "What does the -r option of cp do?",
    "how can i build a debian package from source",
    "パッケージのビルド方法を教えてください",
    "ネットワークの設定はどこでしますか",
    "メンテナーが引退するときの手続きは？",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--groups", nargs="+", default=["everyone"])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    index = open_index(Settings(data_dir=args.data_dir, qdrant_url=None))
    embedder = Embedder()
    embedder.embed_query("warm up")
    print(json.dumps(index.counts()))
    index.refresh_keyword_counts()
    times: dict[str, list[float]] = {}
    for question in QUESTIONS:
        terms = SparseTerms.of(sparse.embed_query(question))
        vector = embedder.embed_query(question)
        index.search(SearchRequest(vector, terms, args.groups, limit=30))  # warm
        for _ in range(args.rounds):
            start = time.perf_counter()
            vector = embedder.embed_query(question)
            times.setdefault("embed", []).append((time.perf_counter() - start) * 1000)
            for legs in ("dense", "keyword", "both"):
                request = SearchRequest(vector, terms, args.groups, limit=30, legs=legs)
                start = time.perf_counter()
                index.search(request)
                times.setdefault(legs, []).append((time.perf_counter() - start) * 1000)
    embed = statistics.median(times["embed"])
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("| | median | p95 | ÷ embedding (median) |\n|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        p95 = sorted(values)[int(len(values) * 0.95) - 1]
        print(f"| {name} | {median:.1f} ms | {p95:.1f} ms | {median / embed:.2f} |")


if __name__ == "__main__":
    main()
