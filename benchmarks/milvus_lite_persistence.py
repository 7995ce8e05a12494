"""Milvus Lite through MilvusIndex: insert time, query latency, recall@k against exact, restart survival.

    python benchmarks/milvus_lite_persistence.py --n 100000 --dim 64 --queries 100 \
        --out runs/bench/milvus_lite

Items are a seeded Gaussian mixture (1000 centres, noise, normalised) with a `category` (20 strings) and a
`price` (uniform 0..100). All n go into a fresh Milvus Lite file through MilvusIndex (HNSW), the index is
waited for, and the queries run one at a time with and without a filter; recall@k is measured against
ExactIndex on the same data and filter (filtered also at 8x ef: HNSW under a selective filter needs a
wider search in Milvus Lite). The index is then saved, the file closed, and a new Python
process loads the saved folder and runs the same queries: the bar is identical ids and scores and
len() == n there. Prints a Markdown table and a PASS/FAIL line; writes results.json to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from recindex.index.exact_index import ExactIndex
from recindex.index.milvus_index import MilvusIndex
from recindex.pipelines.indexes import load_index

ROOT = Path(__file__).resolve().parents[1]
FILTER = 'category in ["c1", "c2"] and price < 50'
CENTRES, CATEGORIES = 1000, 20


def mixture(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int, dim: int, queries: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, dim)) / np.sqrt(dim)
    items = mixture(n, dim, rng, centres)
    attributes = {
        "category": [f"c{c}" for c in rng.integers(0, CATEGORIES, n)],
        "price": rng.uniform(0, 100, n).round(2).tolist(),
    }
    return items, attributes, mixture(queries, dim, rng, centres)


def run_queries(index, queries: np.ndarray, k: int, where: str | None, params: dict) -> dict:
    """One query per call, as a service would send them: ids, scores and per-query latency."""
    ids, scores, seconds = [], [], []
    for query in queries:
        start = time.perf_counter()
        result = index.search(query[None, :], k, filter=where, params=params)
        seconds.append(time.perf_counter() - start)
        ids.append(result.ids[0])
        scores.append(result.scores[0])
    return {"ids": np.array(ids), "scores": np.array(scores), "ms": 1000 * np.array(seconds)}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in pairs]))


def child(saved: Path, work: Path, k: int, params: dict) -> None:
    """The restarted process: load the saved index and answer the same queries."""
    start = time.perf_counter()
    index = load_index(saved)
    load_s = time.perf_counter() - start
    queries = np.load(work / "queries.npy")
    out = {"len": len(index), "load_s": load_s}
    arrays = {}
    for name, where in (("plain", None), ("filtered", FILTER)):
        result = run_queries(index, queries, k, where, params)
        arrays[f"{name}_ids"], arrays[f"{name}_scores"] = result["ids"], result["scores"]
        out[f"{name}_p50_ms"] = float(np.percentile(result["ms"], 50))
    index.close()
    np.savez(work / "after.npz", **arrays)
    (work / "after.json").write_text(json.dumps(out), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--ef", type=int, default=200, help="HNSW search breadth (raised to k if lower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "milvus_lite")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.out / "work"
    params = {"ef": args.ef}
    if args.child:
        child(args.child, work, args.k, params)
        return

    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
        f"n={args.n:,} dim={args.dim} queries={args.queries} k={args.k} ef={args.ef}; "
        f"started {time.strftime('%Y-%m-%d %H:%M')}"
    )
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    items, attributes, queries = make_data(args.n, args.dim, args.queries, args.seed)
    np.save(work / "queries.npy", queries)

    index = MilvusIndex(args.dim, "ip", "HNSW", uri=work / "items.db", collection="bench_items")
    start = time.perf_counter()
    index.add(np.arange(args.n), items, attributes=attributes)
    insert_s = time.perf_counter() - start
    start = time.perf_counter()
    index.wait_for_index()
    index_s = time.perf_counter() - start

    exact = ExactIndex(args.dim, "ip")
    exact.add(np.arange(args.n), items, attributes=attributes)
    figures: dict = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "ef": args.ef,
        "insert_s": insert_s,
        "index_build_s": index_s,
        "filter": FILTER,
    }
    before = {}
    for name, where in (("plain", None), ("filtered", FILTER)):
        result = before[name] = run_queries(index, queries, args.k, where, params)
        truth = exact.search(queries, args.k, filter=where).ids
        figures[f"{name}_recall"] = recall(result["ids"], truth)
        figures[f"{name}_p50_ms"] = float(np.percentile(result["ms"], 50))
        figures[f"{name}_p95_ms"] = float(np.percentile(result["ms"], 95))
        figures[f"{name}_qps"] = float(1000 / result["ms"].mean())
        figures[f"{name}_full_rows"] = float((result["ids"] >= 0).all(axis=1).mean())

    wide = run_queries(index, queries, args.k, FILTER, {"ef": 8 * args.ef})
    figures.update(
        {
            "wide_ef": 8 * args.ef,
            "wide_p50_ms": float(np.percentile(wide["ms"], 50)),
            "wide_recall": recall(wide["ids"], exact.search(queries, args.k, filter=FILTER).ids),
        }
    )
    start = time.perf_counter()
    index.save(work / "saved")
    figures["save_s"] = time.perf_counter() - start
    index.close()  # Milvus Lite lets one process open the file at a time
    start = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(work / "saved"),
            "--out",
            str(args.out),
            "--k",
            str(args.k),
            "--ef",
            str(args.ef),
        ],
        capture_output=True,
        text=True,
    )
    figures["restart_process_s"] = time.perf_counter() - start
    if run.returncode != 0:
        print(run.stderr[-3000:])
        raise SystemExit("the restarted process failed")
    after = json.loads((work / "after.json").read_text(encoding="utf-8"))
    arrays = np.load(work / "after.npz")
    figures.update(
        {
            "restart_load_s": after["load_s"],
            "restart_len": after["len"],
            "restart_plain_p50_ms": after["plain_p50_ms"],
            "restart_filtered_p50_ms": after["filtered_p50_ms"],
        }
    )
    same = {
        name: bool(
            np.array_equal(arrays[f"{name}_ids"], before[name]["ids"])
            and np.array_equal(arrays[f"{name}_scores"], before[name]["scores"])
        )
        for name in before
    }
    figures["restart_identical"] = same
    survived = all(same.values()) and after["len"] == args.n
    figures["restart_pass"] = survived
    report(figures)
    print(
        f"{'PASS' if survived else 'FAIL'} data survives a restart: len {after['len']:,} "
        f"(expected {args.n:,}), identical results plain={same['plain']} filtered={same['filtered']}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print(f"wrote {args.out / 'results.json'}")


def report(f: dict) -> None:
    rows = [
        ("insert (upsert all items)", f"{f['insert_s']:.1f} s ({f['n'] / f['insert_s']:,.0f} items/s)"),
        ("index build (wait_for_index)", f"{f['index_build_s']:.1f} s"),
        (f"recall@{f['k']} plain", f"{f['plain_recall']:.4f}"),
        (
            f"recall@{f['k']} filtered",
            f"{f['filtered_recall']:.4f} (rows full: {f['filtered_full_rows']:.0%})",
        ),
        (
            f"recall@{f['k']} filtered, ef {f['wide_ef']}",
            f"{f['wide_recall']:.4f} (p50 {f['wide_p50_ms']:.1f} ms)",
        ),
        (
            "latency plain p50 / p95",
            f"{f['plain_p50_ms']:.1f} / {f['plain_p95_ms']:.1f} ms "
            f"({f['plain_qps']:.0f} q/s, 1 query per call)",
        ),
        (
            "latency filtered p50 / p95",
            f"{f['filtered_p50_ms']:.1f} / {f['filtered_p95_ms']:.1f} ms ({f['filtered_qps']:.0f} q/s)",
        ),
        ("save (manifest)", f"{f['save_s']:.2f} s"),
        (
            "restart: load in a new process",
            f"{f['restart_load_s']:.2f} s (whole process {f['restart_process_s']:.1f} s)",
        ),
        ("restart: len()", f"{f['restart_len']:,}"),
        (
            "restart: latency p50 plain / filtered",
            f"{f['restart_plain_p50_ms']:.1f} / {f['restart_filtered_p50_ms']:.1f} ms",
        ),
    ]
    print(f"\nfilter: `{f['filter']}`\n")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print()


if __name__ == "__main__":
    main()
