"""Search latency with an access filter on, beside the time to embed one query.

    python bench/query.py [--sizes 10000 100000] [--queries 200]

For each size, builds an embedded index of that many chunks (random unit vectors and
keyword vectors from a real vocabulary, each chunk readable by 1-3 of 20 groups,
written through the product's own Index.write and optimized as the engine would), then
runs the product's queries with the group filter inside (and the keyword leg's IDF
counted over the asker's chunks): hybrid (dense + keyword, RRF),
and each leg alone as `TAIMATSU_RETRIEVAL=by-language` routes an English (dense) or a
Japanese (keyword) question — once on an open shard (engine cost) and once as the page
does it (open, query, close).
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
from assistant.index import ChunkPoint, Upsert  # noqa: E402
from assistant.index.edge import EdgeIndex, hybrid_request, weigh_terms  # noqa: E402

GROUPS = [f"group-{i:02d}" for i in range(20)]
LEGS = ("both", "dense", "keyword")  # hybrid; by-language's English and Japanese paths
WORDS = (
    "leave policy expense claim taxi receipt vpn certificate error password laptop "
    "network office meeting room budget invoice contract holiday training security "
    "backup server storage printer badge parking travel hotel insurance payroll "
    "在宅 勤務 申請 通信 補助 健康 診断 書籍 購入 会議 受付 規程 休暇 経費 精算"
).split()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def build(folder: Path, size: int, dim: int, rng: random.Random) -> EdgeIndex:
    index = EdgeIndex(folder)
    index.ensure(ModelStamp("bench-random", "0" * 64, dim))
    vectors = np.random.default_rng(rng.randrange(2**32)).standard_normal((size, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    batch: list[ChunkPoint] = []
    for i in range(size):
        text = " ".join(rng.choices(WORDS, k=40)) + f" code-{i}"
        keyword = sparse.embed_document(text)
        groups = rng.sample(GROUPS, rng.randint(1, 3))
        payload = {
            "root": "/bench",
            "source": f"doc-{i // 20}.md",
            "doc_hash": "h",
            "chunk": i % 20,
            "text": text,
            "groups": groups,
        }
        batch.append(
            ChunkPoint(
                f"00000000-0000-4000-8000-{i:012d}",
                vectors[i].tolist(),
                list(keyword.indices),
                list(keyword.values),
                payload,
            )
        )
        if len(batch) == 2000:
            index.write([Upsert(batch)])
            batch = []
    index.write([Upsert(batch)])
    with index.shard() as shard:
        shard.optimize()  # build HNSW and payload indexes, as a long-lived index has them
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
            queries = []
            for question in questions:
                keyword = sparse.embed_query(question)
                dense = np.random.default_rng(len(question)).standard_normal(embedder.dim)
                dense = (dense / np.linalg.norm(dense)).tolist()
                groups = rng.sample(GROUPS, 2)
                queries.append((dense, (list(keyword.indices), list(keyword.values)), groups))
            for legs in LEGS:
                engine_ms, page_ms = [], []
                hits = 0
                with index.shard() as shard:  # engine cost: one open shard
                    for dense, keyword, groups in queries:
                        start = time.perf_counter()  # with the asker's IDF counts
                        terms = keyword if legs == "dense" else weigh_terms(shard, keyword, groups)
                        request = hybrid_request(dense, terms, groups, 5, legs=legs)
                        hits += len(shard.query(request))
                        engine_ms.append((time.perf_counter() - start) * 1000)
                for dense, keyword, groups in queries:  # as the page does it
                    start = time.perf_counter()
                    index.hybrid(dense, keyword, groups, limit=5, legs=legs)
                    page_ms.append((time.perf_counter() - start) * 1000)
                disk = folder_mb(Path(tmp))
                rows.append((size, legs, build_s, engine_ms, page_ms, disk, hits))

    med_embed = statistics.median(embed_ms)
    print(
        f"embed one query (all-MiniLM-L6-v2, CPU): median {med_embed:.1f} ms, "
        f"p95 {percentile(embed_ms, 95):.1f} ms"
    )
    print(
        f"{'chunks':>8} {'legs':>8} {'build s':>8} {'engine med':>11} {'engine p95':>11} "
        f"{'open+query med':>15} {'p95':>7} {'x embed':>8} {'disk MB':>8}"
    )
    for size, legs, build_s, engine_ms, page_ms, disk, hits in rows:
        assert hits > 0
        med_page = statistics.median(page_ms)
        print(
            f"{size:>8} {legs:>8} {build_s:>8.1f} {statistics.median(engine_ms):>9.2f}ms "
            f"{percentile(engine_ms, 95):>9.2f}ms {med_page:>13.2f}ms "
            f"{percentile(page_ms, 95):>5.1f}ms {med_page / med_embed:>8.2f} {disk:>8.0f}"
        )
    print(
        f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
