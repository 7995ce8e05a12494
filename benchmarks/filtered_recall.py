"""Filtered recall, measured: each backend under attribute filters of falling selectivity and under
per-query history exclusion, against exact search with the same filter.

    python benchmarks/filtered_recall.py                      # 100k items, d=64, ~3 min on 2 cores
    python benchmarks/filtered_recall.py --sizes 100000 1000000 --out runs/bench/filtered

Items get a `category` among 1,000 values, drawn independently of their vectors, so a filter keeping m
categories keeps about m/1000 of the catalogue. For each backend and selectivity (50%, 10%, 1%,
0.1%) it reports recall@100 against exact filtered top-100, the share of rows that came back full
(the contract: k results whenever k items match), candidates scored and queries/s (batched, 2
threads). History masking excludes each query's exact top-50 and measures recall of the next 100.

numpy's OpenBLAS runs on one thread here: its worker threads spin after each call and, on a small
machine, starve FAISS's OpenMP threads (a 20x slowdown of small searches was measured); FAISS gets
all cores. A serving process should do the same (`threadpoolctl.threadpool_limits(1, "blas")`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import machine_info, markdown_table, synthetic  # noqa: E402

from recindex.pipelines.indexes import make_index  # noqa: E402

K = 100
CATEGORIES = 1_000
SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)


def backends(n: int) -> list[tuple[str, dict, dict]]:
    nlist = 1024 if n <= 200_000 else 4096
    return [
        ("exact", {}, {}),
        ("faiss:HNSW32", {"ef_construction": 200}, {"ef": 128}),
        (f"faiss:IVF{nlist},Flat", {}, {"nprobe": 32}),
        (f"faiss:IVF{nlist},PQ32x8,RFlat", {}, {"nprobe": 32, "k_factor": 4}),
        (f"sharded:2:faiss:IVF{nlist},Flat", {}, {"nprobe": 32}),
    ]


def filters_for(rng: np.random.Generator) -> list[tuple[float, str | None]]:
    out: list[tuple[float, str | None]] = [(1.0, None)]  # the unfiltered recall, to compare with
    for share in SELECTIVITIES:
        chosen = rng.choice(CATEGORIES, max(1, round(share * CATEGORIES)), replace=False)
        out.append((share, "category in [" + ", ".join(f'"c{c}"' for c in sorted(chosen)) + "]"))
    return out


def recall_against(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true results (ignoring -1 padding: fewer than k items matched) found."""
    shares = []
    for row, expected in zip(found, truth, strict=True):
        expected = expected[expected >= 0]
        shares.append(len(np.intersect1d(row[row >= 0], expected)) / max(1, len(expected)))
    return float(np.mean(shares))


def measure(index, queries, k, where=None, exclude=None, params=None) -> tuple[np.ndarray, float, float]:
    """Ids of one search, and its speed: the median of three timed runs after a warm-up run."""
    index.count_candidates = True
    result = index.search(queries, k, filter=where, exclude=exclude, params=params)
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        index.search(queries, k, filter=where, exclude=exclude, params=params)
        seconds.append(time.perf_counter() - started)
    scored = float(np.mean(result.scored)) if result.scored is not None else float("nan")
    return result.ids, len(queries) / float(np.median(seconds)), scored


def run_size(n: int, n_queries: int, seed: int) -> dict:
    data = synthetic(n, n_queries, seed=seed)
    rng = np.random.default_rng(seed + 1)
    categories = [f"c{c}" for c in rng.integers(0, CATEGORIES, n)]
    attributes = {"category": categories}
    ids = np.arange(n)
    filters = filters_for(rng)
    reference = make_index("exact", data.items.shape[1])
    reference.add(ids, data.items, attributes=attributes)
    truths = {where: reference.search(data.queries, K, filter=where).ids for _, where in filters}
    history_truth = reference.search(data.queries, K + 50).ids
    histories = [row[:50] for row in history_truth]
    rows = []
    for spec, options, params in backends(n):
        index = make_index(spec, data.items.shape[1], options=options, search_params=params)
        started = time.perf_counter()
        index.add(ids, data.items, attributes=attributes)
        build = time.perf_counter() - started
        print(f"{data.name} {spec}: built in {build:.1f}s", file=sys.stderr, flush=True)
        for share, where in filters:
            found, qps, scored = measure(index, data.queries, K, where=where)
            truth = truths[where]
            expected = np.minimum(K, (truth >= 0).sum(axis=1))
            full = float(np.mean((found >= 0).sum(axis=1) >= expected))
            rows.append(
                {
                    "backend": spec,
                    "params": params,
                    "filter": f"{share:.1%} of items" if where else "none",
                    "recall@100": recall_against(found, truth),
                    "rows_full": full,
                    "qps": qps,
                    "candidates": scored,
                }
            )
        found, qps, scored = measure(index, data.queries, K, exclude=histories)
        rows.append(
            {
                "backend": spec,
                "params": params,
                "filter": "history of 50 excluded",
                "recall@100": recall_against(found, history_truth[:, 50:]),
                "rows_full": float(np.mean((found >= 0).all(axis=1))),
                "qps": qps,
                "candidates": scored,
            }
        )
    return {"dataset": data.name, "items": n, "queries": n_queries, "rows": rows}


def report(results: list[dict], command: str) -> str:
    lines = [
        "# Filtered recall",
        "",
        f"Command: `{command}`",
        "",
        "```",
        json.dumps(machine_info(), indent=1),
        "```",
        "",
    ]
    for result in results:
        lines += [
            f"## {result['dataset']} ({result['items']:,} items, {result['queries']} queries, k={K})",
            "",
        ]
        table = [
            [
                r["backend"],
                json.dumps(r["params"]),
                r["filter"],
                f"{r['recall@100']:.4f}",
                f"{r['rows_full']:.3f}",
                f"{r['candidates']:,.0f}",
                f"{r['qps']:,.0f}",
            ]
            for r in result["rows"]
        ]
        headers = [
            "backend",
            "params",
            "filter",
            "recall@100 vs exact",
            "rows full",
            "candidates/query",
            "batched q/s",
        ]
        lines += [markdown_table(headers, table), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/filtered"))
    args = parser.parse_args()
    threadpool_limits(1, user_api="blas")
    results = [run_size(n, args.queries, args.seed) for n in args.sizes]
    text = report(results, " ".join(["python", *sys.argv]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
