"""Build time of every plain index backend, each built once over the index benchmark's synthetic items.

    python benchmarks/build_times.py --items 100000                  # about a minute
    python benchmarks/build_times.py --items 1000000 --check          # every plain backend at 1M
    python benchmarks/build_times.py --items 1000000 --hnsw           # HNSW too (3-5 minutes more)
    python benchmarks/build_times.py --items 100000 --specs faiss:IVF1024,Flat exact

Per spec: wall and CPU seconds of `add()` of all items (training included) with --threads threads,
FAISS's own split into training and adding, and the size of the FAISS object. HNSW above 200k items is
skipped unless --hnsw (its build at 1M is minutes; the last measured figure is printed, marked as not
re-measured). --check also searches --queries queries one at a time on one thread at a few search
parameters and reports recall@100 against exact search and queries/s, so that a faster build can be
seen not to cost recall. Prints a Markdown table; --out writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np
from bench_common import K, exact_top, log, machine_info, recall_at, synthetic, threads

from recindex.index.specs import ivf_lists_for, recommended_faiss
from recindex.pipelines.indexes import make_index

# Measured builds not repeated by default (seconds, where, when): HNSW at 1M takes minutes.
NOT_REMEASURED = {
    "faiss:HNSW32": "421 s at 1M with 2 threads on the loaded machine (2026-12-01, docs/indexes.md)",
}
HNSW_SKIP_ABOVE = 200_000


def default_specs(n: int, dim: int) -> list[str]:
    nlist = ivf_lists_for(n)
    return [
        "exact",
        "exact:float16",
        "exact:int8",
        f"faiss:IVF{nlist},Flat",
        f"faiss:IVF{nlist},PQ32x8,RFlat",
        f"faiss:OPQ32,IVF{nlist},PQ32x8,RFlat",
        recommended_faiss(n, dim),
        f"faiss:IVF{nlist},PQ{dim // 2}x4fsr,RFlat",
        f"faiss:IVF{nlist},PQ{dim // 2}x4fs,RFlat",
        f"faiss:IVF{nlist},PQ{dim // 2}x4fsr",
        "faiss:HNSW32",
    ]


def check_params(spec: str) -> list[dict]:
    """The search parameters --check tries for `spec` (none for exact, which is exact)."""
    if spec.startswith("exact"):
        return []
    if "HNSW" in spec:
        return [{"ef": 128}, {"ef": 256}]
    refine = [{"k_factor": f} for f in (2, 4, 8)] if ",R" in spec else [{}]
    return [{"nprobe": p, **r} for p in (32, 64) for r in refine]


def build_one(spec: str, items: np.ndarray, n_threads: int) -> tuple[object, dict]:
    options = {"ef_construction": 200} if "HNSW" in spec else None
    index = make_index(spec, items.shape[1], "ip", options=options)
    with threads(n_threads):
        cpu, wall = time.process_time(), time.perf_counter()
        index.add(np.arange(len(items), dtype=np.int64), items)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = {"spec": spec, "build_s": wall, "cpu_s": cpu}
    phases = getattr(index, "last_add_seconds", {})
    row["train_s"], row["add_s"] = phases.get("train"), phases.get("add")
    if index.backend == "faiss":
        row["memory_mb"] = faiss.serialize_index(index.index).nbytes / 1e6
    else:
        row["memory_mb"] = index._rows[: index.table.used].nbytes / 1e6
    return index, row


def check(index, spec: str, queries: np.ndarray, truth: np.ndarray) -> list[dict]:
    """recall@100 and single-query queries/s (one thread) at each of `check_params(spec)`."""
    points = []
    with threads(1):
        for params in check_params(spec):
            index.search_params = index.resolve_params(params)
            index.search(queries[:50], K)  # warm-up
            started = time.perf_counter()
            ids = np.vstack([index.search(q[None, :], K).ids for q in queries])
            seconds = time.perf_counter() - started
            qps = len(queries) / seconds
            points.append({"params": params, "recall": recall_at(ids, truth), "qps_1t": qps})
    return points


def table(rows: list[dict]) -> str:
    lines = [
        "| spec | build s (wall) | CPU s | train s | add s | FAISS object MB | recall@100 at q/s (1T) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "note" in row:
            lines.append(f"| `{row['spec']}` | not re-measured: {row['note']} | | | | | |")
            continue
        points = "; ".join(
            f"{' '.join(f'{k} {v}' for k, v in p['params'].items())}: {p['recall']:.3f} at {p['qps_1t']:,.0f}"
            for p in row.get("check", [])
        )
        phases = [f"{row[key]:.1f}" if row[key] is not None else "-" for key in ("train_s", "add_s")]
        lines.append(
            f"| `{row['spec']}` | {row['build_s']:.1f} | {row['cpu_s']:.1f} | {phases[0]} | {phases[1]} "
            f"| {row['memory_mb']:.0f} | {points or '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="threads of each build (FAISS OpenMP, BLAS)")
    parser.add_argument("--specs", nargs="+", default=None, help="default: every plain backend")
    parser.add_argument("--hnsw", action="store_true", help=f"build HNSW above {HNSW_SKIP_ABOVE:,} items too")
    parser.add_argument("--check", action="store_true", help="recall@100 and 1T q/s of each build")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.items < 1_000 or args.items > 20_000_000:
        parser.error(f"--items must be between 1,000 and 20,000,000, got {args.items:,}")
    info = machine_info()
    log(f"{info['cpu_count']} CPUs; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    data = synthetic(args.items, args.queries, args.dim, seed=args.seed)
    truth = exact_top(data.items, data.queries, K) if args.check else None
    rows, started = [], time.perf_counter()
    for spec in args.specs or default_specs(args.items, args.dim):
        if "HNSW" in spec and args.items > HNSW_SKIP_ABOVE and not args.hnsw:
            rows.append({"spec": spec, "note": NOT_REMEASURED.get(spec, "skipped (pass --hnsw)")})
            log(f"{spec}: skipped at {args.items:,} items (--hnsw builds it)")
            continue
        index, row = build_one(spec, data.items, args.threads)
        log(f"{spec}: {row['build_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU")
        if args.check:
            row["check"] = check(index, spec, data.queries, truth)
            for point in row["check"]:
                log(f"  {point['params']}: recall {point['recall']:.3f} at {point['qps_1t']:,.0f} q/s")
        rows.append(row)
        del index
    print(table(rows))
    log(f"{len(rows)} specs at {args.items:,} items in {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
        args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
