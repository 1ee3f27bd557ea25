"""Search latency with an access filter on, beside the time to embed one query.

    python bench/query.py [--sizes 10000 100000] [--queries 200] [--index-dir DIR]

For each size, builds an embedded index of that many chunks (random unit vectors and
keyword vectors from a real vocabulary, each chunk readable by 1-3 of 20 groups,
written through the product's own Index.write, then given its vector index as the end of
an ingestion run does: `Index.build_search_indexes`, which leaves under 20,000 points
unindexed), then runs the product's queries through the index contract (`Index.search`,
as the page does) with the group filter inside (and the keyword leg's IDF counted over the asker's
chunks): hybrid (dense + keyword, RRF), and each leg alone as
`TAIMATSU_RETRIEVAL=by-language` routes an English (dense) or a Japanese (keyword)
question. Each at two depths side by side: 5 hits (the former fetch) and the depth
the product now fetches for 5 passages (`Searcher`: 4 hits per passage to spread them
over documents, plus 10 for ties).

Each query runs twice in the same run: first with the asker's IDF counted in the engine
(one filtered count per query term, as when the per-label table is stale: a write has
come since the last count), then, after `refresh_keyword_counts()` (timed: what the end
of an ingestion run pays), from the table of document frequencies per ACL label
(assistant/index/label_counts.py).
In the same run it times the embedding of one query with the real model. Target:
retrieval adds less than the query embedding itself. Also reports the index's size on
disk and the process's peak memory. `--index-dir DIR` builds each size's index under
DIR/<size> and reuses it in later runs (a 100,000-chunk build takes many minutes).
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
    DeleteDocument,
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
    index.build_search_indexes()  # as the end of an ingestion run does
    return index


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


Pass = tuple[list[float], list[float], int]  # search ms, embed ms, hits


def one_pass(
    embedder: Embedder,
    index: Index,
    work: list[tuple[str, list[float], SparseTerms, list[str]]],
    legs: str,
    fetch: int,
) -> Pass:
    """Each question embedded, then its (random-vector) query searched, as the page does
    it: the two times side by side, query by query, so a load that drifts over the run
    moves both."""
    search_ms, embed_ms, hits = [], [], 0
    for question, dense, terms, groups in work:
        start = time.perf_counter()
        embedder.embed_query(question)
        embed_ms.append((time.perf_counter() - start) * 1000)
        request = SearchRequest(dense, terms, groups, limit=fetch, legs=legs)  # type: ignore[arg-type]
        start = time.perf_counter()  # with the asker's IDF counts
        hits += len(index.search(request))
        search_ms.append((time.perf_counter() - start) * 1000)
    return search_ms, embed_ms, hits


def passes(embedder: Embedder, index: Index, work: list) -> dict[str, Pass]:
    return {
        f"{legs}@{fetch}": one_pass(embedder, index, work, legs, fetch)
        for legs in LEGS
        for fetch in FETCH
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--index-dir", type=Path, help="keep (and reuse) the built indexes here")
    args = parser.parse_args()
    rng = random.Random(7)
    embedder = Embedder()
    questions = [" ".join(rng.choices(WORDS, k=6)) + "?" for _ in range(args.queries)]
    embedder.embed_query("warm up")

    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.index_dir / str(size) if args.index_dir else Path(tmp)
            started = time.perf_counter()
            if (folder / "index").exists():
                index = open_index(Settings(data_dir=folder, qdrant_url=None))
            else:
                index = build(folder, size, embedder.dim, rng)
            build_s = time.perf_counter() - started
            work = []
            for question in questions:
                dense = np.random.default_rng(len(question)).standard_normal(embedder.dim)
                dense = (dense / np.linalg.norm(dense)).tolist()
                terms = SparseTerms.of(sparse.embed_query(question))
                work.append((question, dense, terms, rng.sample(GROUPS, 2)))
            # a write (of nothing): the per-label table is stale, the engine counts
            index.write([DeleteDocument("/bench", "no-such-document.md")])
            for _, dense, terms, groups in work:  # warm up: a long-lived index is read
                index.search(SearchRequest(dense, terms, groups, limit=5))
            engine = passes(embedder, index, work)
            started = time.perf_counter()
            index.refresh_keyword_counts()  # what the end of an ingestion run pays
            count_s = time.perf_counter() - started
            table = passes(embedder, index, work)
            disk = folder_mb(folder)
            for key in engine:
                rows.append((size, key, build_s, count_s, engine[key], table[key], disk))

    every_embed = [ms for row in rows for one in row[4:6] for ms in one[1]]
    print(
        f"embed one query ({embedder.stamp.name}, {embedder.stamp.runtime}, CPU): "
        f"median {statistics.median(every_embed):.1f} ms, p95 {percentile(every_embed, 95):.1f} ms"
    )
    print(
        "search: IDF counted in the engine (a stale table) | from the per-label table; "
        "x embed: the query's median over the embedding's median in the same pass"
    )
    print(
        f"{'chunks':>8} {'legs@hits':>12} {'build s':>8} {'count s':>8} "
        f"{'engine med':>11} {'p95':>9} {'x embed':>8} "
        f"{'table med':>10} {'p95':>9} {'x embed':>8} {'disk MB':>8}"
    )
    for size, key, build_s, count_s, engine, table, disk in rows:
        assert engine[2] > 0 and table[2] == engine[2]
        cells = []
        for search_ms, embed_ms, _ in (engine, table):
            med = statistics.median(search_ms)
            ratio = med / statistics.median(embed_ms)
            cells.append(f"{med:>9.2f}ms {percentile(search_ms, 95):>7.2f}ms {ratio:>8.2f}")
        print(f"{size:>8} {key:>12} {build_s:>8.1f} {count_s:>8.2f} {' '.join(cells)} {disk:>8.0f}")
    print(
        f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
