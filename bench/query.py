"""Search latency with an access filter on, beside the time to embed one query.

    python bench/query.py [--sizes 10000 100000] [--queries 200]

For each size, builds an embedded index of that many chunks (random unit vectors and
keyword vectors from a real vocabulary, each chunk readable by 1-3 of 20 groups,
written through the product's own Index.write and optimized as the engine would), then
runs the product's queries through the index contract (`Index.search`, as the page does)
with the group filter inside (and the keyword leg's IDF counted over the asker's
chunks): hybrid (dense + keyword, RRF), and each leg alone as
`TAIMATSU_RETRIEVAL=by-language` routes an English (dense) or a Japanese (keyword)
question. Each at two depths side by side: 5 hits (the former fetch) and the depth
the product now fetches for 5 passages (`Searcher`: 4 hits per passage to spread them
over documents, plus 10 for ties).
In the same run it times the embedding of one query with the real model. Target:
retrieval adds less than the query embedding itself. Also reports the index's size on
disk and the process's peak memory.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402

from assistant import sparse  # noqa: E402
from assistant.embedder import Embedder, ModelStamp  # noqa: E402
from assistant.index import (  # noqa: E402
    ChunkPoint,
    Field,
    Index,
    SearchRequest,
    SparseTerms,
    Upsert,
    open_index,
)
from assistant.retrieval.search import DEPTH_PER_PASSAGE, TIES  # noqa: E402
from assistant.settings import Settings  # noqa: E402

GROUPS = [f"group-{i:02d}" for i in range(20)]
LEGS = ("both", "dense", "keyword")  # hybrid; by-language's English and Japanese paths
FETCH = (5, 5 * DEPTH_PER_PASSAGE + TIES)  # the former depth; what Searcher fetches for 5
WORDS = (
    "leave policy expense claim taxi receipt vpn certificate error password laptop "
    "network office meeting room budget invoice contract holiday training security "
    "backup server storage printer badge parking travel hotel insurance payroll "
    "在宅 勤務 申請 通信 補助 健康 診断 書籍 購入 会議 受付 規程 休暇 経費 精算"
).split()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def build(folder: Path, size: int, dim: int, rng: random.Random) -> Index:
    index = open_index(Settings(data_dir=folder, qdrant_url=None))
    index.ensure(ModelStamp("bench-random", "0" * 64, dim))
    vectors = np.random.default_rng(rng.randrange(2**32)).standard_normal((size, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    batch: list[ChunkPoint] = []
    for i in range(size):
        text = " ".join(rng.choices(WORDS, k=40)) + f" code-{i}"
        keyword = sparse.embed_document(text)
        groups = rng.sample(GROUPS, rng.randint(1, 3))
        payload = {
            Field.ROOT: "/bench",
            Field.SOURCE: f"doc-{i // 20}.md",
            Field.DOC_HASH: "h",
            Field.CHUNK: i % 20,
            Field.TEXT: text,
            Field.GROUPS: groups,
        }
        batch.append(
            ChunkPoint(
                f"00000000-0000-4000-8000-{i:012d}",
                vectors[i].tolist(),
                SparseTerms.of(keyword),
                payload,
            )
        )
        if len(batch) == 2000:
            index.write([Upsert(batch)])
            batch = []
    index.write([Upsert(batch)])
    index.optimize()  # build HNSW and payload indexes, as a long-lived index has them
    return index


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    embedder = Embedder()
    questions = [" ".join(rng.choices(WORDS, k=6)) + "?" for _ in range(args.queries)]
    embedder.embed_query("warm up")
    embed_ms = []
    for question in questions:
        start = time.perf_counter()
        embedder.embed_query(question)
        embed_ms.append((time.perf_counter() - start) * 1000)

    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            index = build(Path(tmp), size, embedder.dim, rng)
            build_s = time.perf_counter() - started
            requests = []
            for question in questions:
                dense = np.random.default_rng(len(question)).standard_normal(embedder.dim)
                dense = (dense / np.linalg.norm(dense)).tolist()
                terms = SparseTerms.of(sparse.embed_query(question))
                requests.append((dense, terms, rng.sample(GROUPS, 2)))
            for dense, terms, groups in requests:  # warm up: a long-lived index is read
                index.search(SearchRequest(dense, terms, groups, limit=5))
            for legs in LEGS:
                for fetch in FETCH:
                    search_ms = []
                    hits = 0
                    for dense, terms, groups in requests:  # as the page does it
                        request = SearchRequest(dense, terms, groups, limit=fetch, legs=legs)
                        start = time.perf_counter()  # with the asker's IDF counts
                        hits += len(index.search(request))
                        search_ms.append((time.perf_counter() - start) * 1000)
                    disk = folder_mb(Path(tmp))
                    rows.append((size, f"{legs}@{fetch}", build_s, search_ms, disk, hits))

    med_embed = statistics.median(embed_ms)
    print(
        f"embed one query (all-MiniLM-L6-v2, CPU): median {med_embed:.1f} ms, "
        f"p95 {percentile(embed_ms, 95):.1f} ms"
    )
    print(
        f"{'chunks':>8} {'legs@hits':>12} {'build s':>8} {'search med':>11} {'search p95':>11} "
        f"{'x embed':>8} {'disk MB':>8}"
    )
    for size, legs, build_s, search_ms, disk, hits in rows:
        assert hits > 0
        med_search = statistics.median(search_ms)
        print(
            f"{size:>8} {legs:>12} {build_s:>8.1f} {med_search:>9.2f}ms "
            f"{percentile(search_ms, 95):>9.2f}ms {med_search / med_embed:>8.2f} {disk:>8.0f}"
        )
    print(
        f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
