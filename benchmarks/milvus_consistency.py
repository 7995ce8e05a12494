"""Read latency of a Milvus server at each consistency level, and how soon a write is visible.

    python benchmarks/milvus_consistency.py --uri http://127.0.0.1:19530 --n 10000 --dim 64 \
        --reads 200 --seconds 20 --out runs/bench/milvus_consistency

A fresh collection (MilvusIndex, HNSW, one `price` attribute) gets n seeded random vectors; then, per
level (Strong, Bounded, Session, Eventually), single-query searches of k=10 run one after another for at
most --reads reads or --seconds, whichever ends first, and their p50/p99 are printed. Session is what
the backend reads with (index.milvus.features).

Visibility: a writer upserts one new item and at once searches for it (a) at Session, as this process's
next read does (the bar: found every time), and (b) at Eventually, which is what a Session read in
another process (another replica, without this process's write timestamp) amounts to: that read polls
until the item is found, and the p50/p99 of the time from the upsert's return are printed. Prints a
Markdown table; writes results.json to --out. The collection is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import numpy as np

from recindex.index.milvus.schema import ID, METRIC_NAMES, VECTOR
from recindex.index.milvus_index import MilvusIndex

LEVELS = ("Strong", "Bounded", "Session", "Eventually")
VISIBLE_WAIT_S = 10.0  # a write not visible elsewhere after this long counts as not visible


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def search(index: MilvusIndex, query: np.ndarray, level: str, expr: str = "") -> list:
    return index.client.search(
        index.collection,
        data=query[None, :],
        limit=10,
        filter=expr,
        anns_field=VECTOR,
        search_params={"metric_type": METRIC_NAMES[index.field.metric], "params": {"ef": 64}},
        output_fields=[ID],
        consistency_level=level,
    )[0]


def read_latency(index: MilvusIndex, queries: np.ndarray, reads: int, seconds: float) -> dict:
    results = {}
    for level in LEVELS:
        spent, deadline = [], time.monotonic() + seconds
        for query in queries[:reads]:
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            search(index, query, level)
            spent.append(time.perf_counter() - started)
        results[level] = percentiles(spent)
    return results


def visibility(index: MilvusIndex, dim: int, trials: int, rng) -> dict:
    """Even trials: the writer's Session read right after the upsert; odd trials: an Eventually read
    polled from the upsert on (apart, so that neither read waits for the other)."""
    own_misses, elsewhere, never = 0, [], 0
    for trial in range(trials * 2):
        item = 10_000_000 + trial
        vector = rng.standard_normal(dim).astype(np.float32)
        index.add([item], vector[None, :], attributes={"price": [1.0]})
        written = time.perf_counter()
        if trial % 2 == 0:
            hits = search(index, vector, "Session", f"id == {item}")
            own_misses += not any(hit["id"] == item for hit in hits)
            continue
        while not any(hit["id"] == item for hit in search(index, vector, "Eventually", f"id == {item}")):
            if time.perf_counter() - written > VISIBLE_WAIT_S:
                never += 1
                break
        else:
            elsewhere.append(time.perf_counter() - written)
    return {
        "trials": trials,
        "session_misses": own_misses,
        "elsewhere": percentiles(elsewhere) if elsewhere else None,
        "elsewhere_not_visible": never,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", required=True, help="a Milvus server, e.g. http://127.0.0.1:19530")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--reads", type=int, default=200, help="searches per level, at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="time per level, at most")
    parser.add_argument("--trials", type=int, default=30, help="write-visibility trials")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/milvus_consistency"))
    args = parser.parse_args()
    if not 0 < args.n <= 1_000_000 or not 0 < args.reads <= 10_000 or not 0 < args.trials <= 1_000:
        parser.error("--n in 1..1,000,000, --reads in 1..10,000, --trials in 1..1,000")
    rng = np.random.default_rng(0)
    items = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    queries = rng.standard_normal((args.reads, args.dim)).astype(np.float32)
    index = MilvusIndex(args.dim, "ip", "HNSW", uri=args.uri, collection=f"bench_{uuid.uuid4().hex[:10]}")
    try:
        started = time.perf_counter()
        index.add(np.arange(args.n), items, attributes={"price": rng.uniform(0, 100, args.n).tolist()})
        index.wait_for_index()
        loaded_s = time.perf_counter() - started
        version = index.client.get_server_version()
        reads = read_latency(index, queries, args.reads, args.seconds)
        visible = visibility(index, args.dim, args.trials, rng)
    finally:
        index.client.drop_collection(index.collection)
        index.close()
    results = {
        "uri": args.uri,
        "server": version,
        "n": args.n,
        "dim": args.dim,
        "insert_and_index_s": loaded_s,
        "reads": reads,
        "visibility": visible,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"server {version}, {args.n:,} items x {args.dim}, inserted and indexed in {loaded_s:.1f} s\n")
    print("| read consistency | reads | p50 ms | p99 ms |\n|---|---|---|---|")
    for level, figures in reads.items():
        print(f"| {level} | {figures['n']} | {figures['p50_ms']:.1f} | {figures['p99_ms']:.1f} |")
    elsewhere = visible["elsewhere"] or {"p50_ms": float("nan"), "p99_ms": float("nan")}
    print(
        f"\nwrite visible to the writer's next Session read: {visible['trials'] - visible['session_misses']}"
        f"/{visible['trials']}; to another process (Eventually): p50 {elsewhere['p50_ms']:.1f} ms, "
        f"p99 {elsewhere['p99_ms']:.1f} ms, not within {VISIBLE_WAIT_S:g} s: "
        f"{visible['elsewhere_not_visible']}"
    )


if __name__ == "__main__":
    main()
