"""Does a failed open of a qdrant-edge shard damage the process that has it open?

Why the handle lock exists (docs/decisions.md, 14). Each round: a writer process is
SIGKILLed with updates it has not flushed; a reader opens the shard (replaying them) and
holds it; with `race`, a third process meanwhile tries to open the shard (and fails: the
WAL is locked); the reader closes; a writer upserts, deletes, flushes and closes; then the
shard must open. With `control` the third process waits for the reader to close, as the
product's processes do. Prints one line per round and how many shards no longer opened.

    python bench/edge_open_race.py race --rounds 80
    python bench/edge_open_race.py control --rounds 80

Re-run it when qdrant-edge-py is upgraded: once `race` stops breaking shards, the lock
costs nothing but may stay.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    Point,
    ScrollRequest,
    SparseVector,
    UpdateOperation,
)

POINTS = 400


def point(i: int, rng: random.Random, version: int) -> Point:
    terms = sorted(rng.sample(range(5000), rng.randint(3, 60)))
    vectors = {
        "dense": [rng.random() for _ in range(8)],
        "bm25": SparseVector(indices=terms, values=[rng.random() for _ in terms]),
    }
    payload = {"source": f"s{i}", "v": version, "text": "x" * rng.randint(10, 3000)}
    return Point(str(uuid.UUID(int=i)), vectors, payload)


def upserts(rng: random.Random, version: int) -> UpdateOperation:
    return UpdateOperation.upsert_points(
        [point(i, rng, version) for i in rng.sample(range(POINTS), 40)]
    )


def killed_writer(path: str, seed: int) -> None:
    rng = random.Random(seed)
    shard = EdgeShard.load(path)
    for version in range(5):
        shard.update(upserts(rng, version))
        if version < 2:  # the last three stay in the WAL only
            shard.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def reader(path: str, opened: mp.Queue, release: mp.Event) -> None:
    shard = EdgeShard.load(path)
    shard.count(CountRequest(exact=True))
    opened.put("open")
    release.wait()
    shard.close()


def writer(path: str, seed: int) -> None:
    rng = random.Random(seed)
    while True:
        try:
            shard = EdgeShard.load(path)
            break
        except Exception:  # noqa: BLE001 - held by the reader: the failed open under test
            time.sleep(0.01)
    for version in range(3):
        shard.update(upserts(rng, version))
        gone = [str(uuid.UUID(int=i)) for i in rng.sample(range(POINTS), 5)]
        shard.update(UpdateOperation.delete_points(gone))
    shard.flush()
    shard.close()


def opens(path: str) -> str:
    try:
        shard = EdgeShard.load(path)
        count = shard.count(CountRequest(exact=True))
        shard.scroll(ScrollRequest(limit=POINTS * 2, with_vector=True))
        shard.close()
    except Exception as exc:  # noqa: BLE001 - what the engine says is the result
        return f"BROKEN: {exc}"
    return f"opens, {count} points"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["race", "control"])
    parser.add_argument("--rounds", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "shard")
        config = EdgeConfig(
            vectors={"dense": EdgeVectorParams(size=8, distance=Distance.Cosine)},
            sparse_vectors={"bm25": EdgeSparseVectorParams()},
        )
        shard = EdgeShard.create(path, config)
        rng = random.Random(0)
        shard.update(UpdateOperation.upsert_points([point(i, rng, 0) for i in range(POINTS)]))
        shard.flush()
        shard.close()
        broken = 0
        for round_ in range(args.rounds):
            killed = mp.Process(target=killed_writer, args=(path, round_))
            killed.start()
            killed.join()
            opened, release = mp.Queue(), mp.Event()
            held = mp.Process(target=reader, args=(path, opened, release))
            held.start()
            opened.get()
            second = mp.Process(target=writer, args=(path, round_ + 1000))
            if args.mode == "race":  # it tries to open while the reader holds the shard
                second.start()
            time.sleep(0.2)
            release.set()
            held.join()
            if args.mode == "control":  # it opens once the reader has closed
                second.start()
            second.join()
            result = opens(path)
            print(f"round {round_}: {result}", flush=True)
            if result.startswith("BROKEN"):
                broken += 1
                shutil.rmtree(path)  # start again from a fresh shard
                shard = EdgeShard.create(path, config)
                shard.update(
                    UpdateOperation.upsert_points([point(i, rng, 0) for i in range(POINTS)])
                )
                shard.flush()
                shard.close()
        print(f"{args.mode}: {broken} of {args.rounds} rounds left a shard that does not open")


if __name__ == "__main__":
    main()
