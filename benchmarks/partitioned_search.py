"""Partitioned vs unpartitioned search under a filter on the partition attribute.

    nice -n 19 python benchmarks/partitioned_search.py --items 200000
    nice -n 19 python benchmarks/partitioned_search.py            # 1M items

N synthetic unit vectors (d=64, bench_common.synthetic), each with a `region` among 8 values drawn
independently of its vector. Each backend is built once unpartitioned and once as
`sharded:by=region:INNER`, and every query asks for the top 100 of one region (`region == "r3"`): the
partitioned index searches that region's partition alone, the unpartitioned one searches everything
under the filter. Reported per backend: candidates scored per query (the index's own count,
`SearchResult.scored`), queries/s (1,000 queries in one batched call, one thread, median of three
runs after a warm-up), and recall@100 against exact search with the same filter.

Backends: exact search (the reference), FAISS Flat (every eligible item scored: the partitioned one
scores one region's items, the unpartitioned one every item under an id selector), and IVF,Flat with
lists sized for the index they live in (recindex.index.specs.ivf_lists_for: the whole catalogue, or one
region's eighth of it), probed with the same nprobe and, partitioned, also with the same share of lists.
Candidates scored count what FAISS counts (recindex.index.faiss_layers): distances computed, plus every
centroid of an IVF's coarse quantizer; exact search counts the items its filter keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import markdown_table, synthetic, threads  # noqa: E402
from machine import run_info  # noqa: E402

from recindex.index.specs import ivf_lists_for  # noqa: E402
from recindex.pipelines.indexes import make_index  # noqa: E402

K = 100
REGIONS = 8
WHERE = 'region == "r3"'


def backends(n: int, nprobe: int) -> list[tuple[str, str, dict, list[dict]]]:
    """(label, spec, build options, the search params measured): each backend unpartitioned and
    partitioned. A partition's IVF lists are as long as the whole index's (a quarter as many lists for an
    eighth of the items: ivf_lists_for), so the same nprobe scans as many items per query, and nprobe / 4
    probes the same share of the lists."""
    whole, part = ivf_lists_for(n), ivf_lists_for(n // REGIONS)
    return [
        ("exact", "exact", {}, [{}]),  # the reference: exact search under the filter
        ("Flat", "faiss:Flat", {}, [{}]),
        ("Flat", "sharded:by=region:faiss:Flat", {}, [{}]),
        ("IVF,Flat", f"faiss:IVF{whole},Flat", {"train_size": min(n, 64 * whole)}, [{"nprobe": nprobe}]),
        (
            "IVF,Flat",
            f"sharded:by=region:faiss:IVF{part},Flat",
            {"train_size": min(n // REGIONS, 64 * part)},
            [{"nprobe": nprobe}, {"nprobe": max(1, nprobe * part // whole)}],
        ),
    ]


def measure(index, queries: np.ndarray, params: dict) -> tuple[np.ndarray, float, float]:
    """(ids, queries/s, candidates scored per query): counted in one run, timed in three without
    counting (counting reads FAISS's global counters and turns off its fastest paths)."""
    params = params or None
    index.count_candidates = True
    result = index.search(queries, K, filter=WHERE, params=params)
    index.count_candidates = False
    index.search(queries, K, filter=WHERE, params=params)  # warm-up
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        index.search(queries, K, filter=WHERE, params=params)
        seconds.append(time.perf_counter() - started)
    return result.ids, len(queries) / float(np.median(seconds)), float(np.mean(result.scored))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    shares = [
        len(np.intersect1d(f[f >= 0], t[t >= 0])) / max(1, (t >= 0).sum())
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(shares))


def run(n: int, n_queries: int, nprobe: int, seed: int) -> dict:
    data = synthetic(n, n_queries, seed=seed)
    regions = np.random.default_rng(seed + 1).integers(0, REGIONS, n)
    attributes = {"region": [f"r{r}" for r in regions]}
    ids = np.arange(n)
    rows, truth = [], None
    for label, spec, options, param_sets in backends(n, nprobe):
        index = make_index(spec, data.items.shape[1], options=options)
        started = time.perf_counter()
        index.add(ids, data.items, attributes=attributes)
        build = time.perf_counter() - started
        for params in param_sets:
            found, qps, scored = measure(index, data.queries, params)
            if truth is None:  # the first backend is exact search under the same filter
                truth = found
            rows.append(
                {
                    "backend": label,
                    "spec": spec,
                    "params": params,
                    "build_s": build,
                    "candidates_scored_per_query": scored,
                    "qps": qps,
                    "recall@100": recall(found, truth),
                }
            )
            print(
                f"{spec} {params}: built in {build:.1f}s, {scored:,.0f} scored/query, {qps:,.0f} q/s",
                file=sys.stderr,
            )
        if hasattr(index, "close"):
            index.close()
    return {"items": n, "queries": n_queries, "regions": REGIONS, "filter": WHERE, "rows": rows}


def table(result: dict) -> str:
    rows = [
        [
            r["backend"],
            f"`{r['spec']}`",
            ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-",
            f"{r['candidates_scored_per_query']:,.0f}",
            f"{r['qps']:,.0f}",
            f"{r['recall@100']:.3f}",
            f"{r['build_s']:.1f}",
        ]
        for r in result["rows"]
    ]
    headers = ["backend", "spec", "params", "candidates scored / query", "q/s", "recall@100", "build s"]
    return markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args()
    if not REGIONS * 1_000 <= args.items <= 50_000_000 or not 1 <= args.queries <= 100_000:
        parser.error("--items must be 8,000..50,000,000 and --queries 1..100,000")
    started = time.perf_counter()
    with threads(1):
        result = run(args.items, args.queries, args.nprobe, args.seed)
    result["machine"] = run_info()
    result["wall_s"] = time.perf_counter() - started
    print(f"{args.items:,} items, d=64, {REGIONS} regions, filter {WHERE}, 1 thread")
    print(table(result))
    print(f"wall time {result['wall_s']:.0f}s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
