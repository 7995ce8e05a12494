"""Recall-vs-speed of our index backends against hnswlib, usearch and raw FAISS (issue "Index contract").

    python benchmarks/index_bench.py --quick                                   # smoke test, < 1 minute
    python benchmarks/index_bench.py --sizes 100000 --bundle runs/bench/beauty  # ~5 minutes
    python benchmarks/index_bench.py --sizes 100000 1000000 --bundle runs/bench/beauty --out runs/bench/index

Data: synthetic clustered unit vectors (d=64, see bench_common.synthetic) at each of --sizes, with
--queries queries from the same distribution; with --bundle, that bundle's item vectors and the user
vectors of its validation cases. Ground truth is the exact top-100 by inner product (numpy GEMM).
k = 100 everywhere.

Per (method, search parameters):
  recall@100     overlap with the exact top-100, over all queries, from the batched call's results
  1T QPS, p50/p99   one query per call, one library thread (FAISS OpenMP, BLAS, hnswlib, usearch set
                 to 1), each method on its own, --rounds passes over the queries (after 100 warm-up
                 queries); QPS = queries timed / sum of their latencies
  batched QPS    all queries in one call, 2 threads; best of two calls
  build s        add() of all items including training, 2 threads
  memory MB      FAISS: faiss.serialize_index(...).nbytes (ours: the FAISS object only, not the 8 B/item id
                 table); hnswlib: index_file_size(); usearch: serialized_length; exact: the stored matrix
  cand./query    vectors scored per query: ours from SearchResult.scored (count_candidates on, in an
                 extra untimed call), raw FAISS from the same FAISS counters, usearch from
                 computed_distances; hnswlib does not say
  overhead       ours vs raw FAISS on the very same faiss object and parameter chain: single queries
                 timed in blocks of --block queries that every variant runs in turn, the order cycling
                 through all permutations (a later runner finds warmer caches), --overhead-rounds passes;
                 the median over blocks of (ours block time / raw block time) - 1. Two paths of ours:
                 "serving" (the sweep's parameters set as the index's search_params, none passed per
                 call; the 1T and batched columns of ours use this path too) and "per-call"
                 (params=... on every call)

The sharded index fans each query out to 2 shard threads (each FAISS call given 1 OpenMP thread), so its
"1T" row uses up to 2 cores. Writes results.json, results.md and recall_qps_<dataset>.png to --out.

IVF uses 4096 lists at 1M and 1024 at 100k (the power of two nearest 4 sqrt(n); 256 for Beauty's 12k
items: recindex.index.specs.ivf_lists_for). The 4-bit PQ fast-scan specs (PQ..x4fs: codes of the vectors,
PQ..x4fsr: of their residuals) sweep k_factor up to 8. --quick runs 20k items, 200 queries, one round,
two points per sweep, and uses PQ32x8np (no polysemous training) and no OPQ so that it finishes in well
under a minute; the full run uses the factory strings as written above. A full run at 100k + 1M + Beauty
takes about 25 minutes of both cores.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
from bench_common import (
    BUILD_THREADS,
    EF_SWEEP,
    Dataset,
    K,
    Method,
    bars,
    build_hnswlib,
    build_usearch,
    bundle_dataset,
    exact_top,
    interleaved_single_queries,
    log,
    machine_info,
    params_text,
    recall_at,
    single_queries,
    synthetic,
    threads,
    timed,
    write_report,
)

from recindex.index.faiss_layers import distances_computed, reset_stats, search_parameters
from recindex.index.specs import ivf_lists_for, recommended_faiss
from recindex.pipelines.indexes import make_index

ROOT = Path(__file__).resolve().parents[1]


def specs_for(n: int, dim: int, args) -> list[tuple[str, list[dict]]]:
    """Our index specs at this size and dimension, each with its sweep of search parameters."""
    nlist = ivf_lists_for(n)
    quick = args.quick
    ef = [100, 192] if quick else EF_SWEEP
    nprobe = [8, 32] if quick else [8, 16, 32, 64, 128]
    pq_sweep = [(16, 2), (32, 4)] if quick else [(p, f) for p in (16, 32, 64) for f in (2, 4)]
    pq_params = [{"nprobe": p, "k_factor": f} for p, f in pq_sweep]
    # Fast-scan codes are cheap to scan and coarse (4 bits), so their sweep goes deeper into k_factor.
    fs_sweep = [(16, 4), (32, 8)] if quick else [(p, f) for p in (16, 32, 64) for f in (2, 4, 8)]
    fs_params = [{"nprobe": p, "k_factor": f} for p, f in fs_sweep]
    pq = "PQ32x8np" if quick else "PQ32x8"  # np: no polysemous training (see the report's notes)
    specs = [
        ("exact", [{}]),
        ("exact:float16", [{}]),
        ("exact:int8", [{}]),
        ("faiss:HNSW32", [{"ef": e} for e in ef]),
        (f"faiss:IVF{nlist},Flat", [{"nprobe": p} for p in nprobe]),
        (f"faiss:IVF{nlist},{pq},RFlat", pq_params),
        (recommended_faiss(n, dim), fs_params),
        (f"faiss:IVF{nlist},PQ{dim // 2}x4fsr,RFlat", fs_params),
    ]
    if not quick:
        specs.append((f"faiss:IVF{nlist},PQ{dim // 2}x4fs,RFlat", fs_params))
    if n <= args.opq_max:
        specs.append((f"faiss:OPQ32,IVF{nlist},{pq},RFlat", pq_params))
    specs.append((f"sharded:2:faiss:IVF{nlist},Flat", [{"nprobe": p} for p in ([32] if quick else [32, 64])]))
    return specs


def memory_of(index) -> int:
    if hasattr(index, "shards"):
        return sum(memory_of(s) for s in index.shards)
    if index.backend == "faiss":
        return int(faiss.serialize_index(index.index).nbytes)
    rows = index._rows[: index.table.used]
    return int(rows.nbytes + (0 if index._scale is None else index._scale.nbytes))


def set_shard_threads(index, n: int) -> None:
    """FAISS sizes OpenMP per calling thread: give each shard worker thread n threads."""
    barrier = threading.Barrier(len(index.shards))

    def setup():
        faiss.omp_set_num_threads(n)
        barrier.wait(timeout=30)  # so that every worker takes exactly one of these tasks

    for future in [index._pool.submit(setup) for _ in index.shards]:
        future.result()


def build_ours(spec: str, sweep: list[dict], data: Dataset, exact_single: int | None) -> Method:
    dim = data.items.shape[1]
    options = {"ef_construction": 200} if "HNSW" in spec else None
    index = make_index(spec, dim, "ip", options=options)
    ids = np.arange(len(data.items), dtype=np.int64)
    with threads(BUILD_THREADS):
        build_s, _ = timed(lambda: index.add(ids, data.items))

    # Serving path: the sweep's parameters are the index's configured search_params and each call
    # passes none (as a service would); `per_call` passes them on every call instead.
    def configure(params, single):
        for target in getattr(index, "shards", [index]):
            target.search_params = target.resolve_params(params)

    def one(q, params):
        return index.search(q, K)

    def per_call(q, params):
        return index.search(q, K, params=params)

    def batch(q, params):
        return index.search(q, K).ids

    def count(q, params):
        index.count_candidates = True  # off while timing: serving leaves it off
        try:
            return index.search(q, K).scored
        finally:
            index.count_candidates = False

    ours = Method(
        f"ours {spec}",
        "ours",
        sweep,
        one,
        batch,
        build_s,
        memory_of(index),
        count=count,
        prepare=configure,
        single_queries=exact_single if spec.startswith("exact") else None,
        index=index,
    )
    if spec.startswith("sharded"):
        index.search(data.queries[:1], K)  # starts the shard threads
        set_shard_threads(index, 1)  # 1T: 2 shard threads x 1; batched: the same, 2 threads in all
    if spec.startswith("faiss"):
        ours.peer = raw_twin(index, spec, build_s, ours.memory)
        ours.per_call = per_call
    return ours


def raw_twin(index, spec: str, build_s: float, memory: int) -> Method:
    """The very same faiss object, searched directly with the parameter chain our backend builds."""
    raw_index, layers, slot_ids = index.index, index.layers, index.table.ids
    cache: dict = {}

    def chain(params):
        key = tuple(sorted(params.items()))
        if key not in cache:
            cache[key] = search_parameters(layers, {**index.search_params, **params}, K)
        return cache[key][0]

    def one(q, params):
        return raw_index.search(q, K, params=chain(params))

    def batch(q, params):
        labels = raw_index.search(q, K, params=chain(params))[1]
        return np.where(labels >= 0, slot_ids[np.maximum(labels, 0)], -1)

    def count(q, params):
        reset_stats()
        raw_index.search(q, K, params=chain(params))
        scored = distances_computed(layers, len(q), K, {**index.search_params, **params}, len(slot_ids))
        return np.full(len(q), scored)

    notes = {"build_note": "same object as ours", "memory_note": "same object as ours"}
    name = f"raw FAISS {spec.removeprefix('faiss:')}"
    return Method(name, "raw", [], one, batch, build_s, memory, count=count, notes=notes)


def measure(method: Method, params: dict, data: Dataset, truth: np.ndarray, args) -> list[dict]:
    """Rows for `method` at `params`, and for its raw FAISS twin if it has one."""
    methods = [method] + ([method.peer] if method.peer else [])
    single = data.queries[: method.single_queries] if method.single_queries else data.queries
    if method.prepare:
        method.prepare(params, True)
    with threads(1):
        # Absolute 1T figures: each method on its own, like the peers.
        timings = [single_queries(lambda q, m=m: m.one(q, params), single, args.rounds) for m in methods]
        overhead = None
        if method.peer:  # ours (serving), raw, ours (per-call params): same blocks, balanced order
            fns = [lambda q: method.one(q, params), lambda q: method.peer.one(q, params)]
            fns.append(lambda q: method.per_call(q, params))
            overhead = interleaved_single_queries(fns, single, args.overhead_rounds, args.block)
    if method.prepare:
        method.prepare(params, False)
    rows = []
    batch_ids = []
    with threads(BUILD_THREADS):
        for m, timing in zip(methods, timings, strict=True):
            best = np.inf
            for _ in range(args.batch_repeats):
                seconds, ids = timed(lambda m=m: m.batch(data.queries, params))
                best = min(best, seconds)
            scored = m.count(data.queries, params) if m.count else None
            batch_ids.append(ids)
            rows.append(
                {
                    "method": m.name,
                    "family": m.family,
                    "params": params,
                    "recall": recall_at(ids, truth),
                    "qps_1t": timing.qps,
                    "p50_ms": timing.percentile_ms(50),
                    "p99_ms": timing.percentile_ms(99),
                    "single_queries_timed": len(timing.seconds),
                    "qps_batch": len(data.queries) / best,
                    "build_s": m.build_s,
                    "memory_mb": m.memory / 1e6,
                    "candidates": None if scored is None else float(np.mean(scored)),
                    "overhead_pct": None,
                    **m.notes,
                }
            )
    if overhead:
        serving, raw, per_call = overhead
        for key, ours in (("overhead", serving), ("overhead_per_call", per_call)):
            rows[0][f"{key}_pct"] = float(np.median(ours.block_seconds / raw.block_seconds) - 1) * 100
            rows[0][f"{key}_sum_pct"] = float(ours.block_seconds.sum() / raw.block_seconds.sum() - 1) * 100
            rows[0][f"{key}_us"] = float(np.median(ours.seconds) - np.median(raw.seconds)) * 1e6
        rows[0]["overhead_blocks"] = len(raw.block_seconds)
        rows[0]["same_ids_as_raw"] = float(np.mean((batch_ids[0] == batch_ids[1]).all(axis=1)))
    for row in rows:
        log(
            f"  {row['method']:<42} {params_text(params):<22} recall {row['recall']:.4f}  "
            f"1T {row['qps_1t']:8.0f} q/s  batch {row['qps_batch']:8.0f} q/s"
            + (
                f"  overhead {row['overhead_pct']:+.1f}% "
                f"(per-call params {row['overhead_per_call_pct']:+.1f}%)"
                if row["overhead_pct"] is not None
                else ""
            )
        )
    return rows


def run_dataset(data: Dataset, args) -> dict:
    n, dim = data.items.shape
    log(f"{data.name}: {n:,} items x {dim}, {len(data.queries):,} queries")
    started = time.perf_counter()
    with threads(BUILD_THREADS):
        gt_s, truth = timed(lambda: exact_top(data.items, data.queries, K))
    log(f"  ground truth {gt_s:.1f} s")
    exact_single = None if n <= 200_000 else args.exact_queries
    rows: list[dict] = []
    builds: dict[str, float] = {}
    for spec, sweep in specs_for(n, dim, args):
        log(f"  building ours {spec}")
        ours = build_ours(spec, sweep, data, exact_single)
        builds[ours.name] = ours.build_s
        log(f"    built in {ours.build_s:.1f} s, {ours.memory / 1e6:.1f} MB")
        for params in sweep:
            rows += measure(ours, params, data, truth, args)
        if hasattr(ours.index, "close"):
            ours.index.close()
        del ours
    ef_sweep = [100, 192] if args.quick else EF_SWEEP
    for builder in (build_hnswlib, build_usearch):
        log(f"  building {builder.__name__.removeprefix('build_')}")
        with threads(BUILD_THREADS):
            peer = builder(data, ef_sweep)
        builds[peer.name] = peer.build_s
        log(f"    built in {peer.build_s:.1f} s, {peer.memory / 1e6:.1f} MB")
        for params in peer.sweep:
            rows += measure(peer, params, data, truth, args)
        del peer
    order = {name: i for i, name in enumerate(dict.fromkeys(r["method"] for r in rows))}
    rows.sort(key=lambda r: order[r["method"]])  # stable: each method's sweep stays in order
    return {
        "name": data.name,
        "note": data.note,
        "meta": data.meta,
        "items": n,
        "dim": dim,
        "queries": len(data.queries),
        "exact_single_queries": exact_single or len(data.queries),
        "ground_truth_s": gt_s,
        "builds_s": builds,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }


# ---- report ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--bundle", default=None, help="a trained bundle directory, e.g. runs/bench/beauty")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "index")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 20k items, 200 queries, tiny sweeps"
    )
    parser.add_argument("--rounds", type=int, default=2, help="passes over the queries for 1T figures")
    parser.add_argument(
        "--overhead-rounds", type=int, default=3, help="passes over the queries for the overhead measurement"
    )
    parser.add_argument("--block", type=int, default=100, help="queries per interleaved block")
    parser.add_argument("--batch-repeats", type=int, default=2)
    parser.add_argument(
        "--exact-queries",
        type=int,
        default=100,
        help="single queries timed for exact backends above 200k items",
    )
    parser.add_argument(
        "--opq-max", type=int, default=1_000_000, help="largest size at which the OPQ variant is built"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries = [20_000], min(args.queries, 200)
        args.rounds, args.overhead_rounds, args.block, args.batch_repeats, args.opq_max = 1, 3, 50, 1, 0
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    log(
        f"{info['cpu_count']} CPUs, {info['platform']}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    )
    datasets: list[Callable[[], Dataset]] = [
        (lambda n=n: synthetic(n, args.queries, seed=args.seed)) for n in args.sizes
    ]
    if args.bundle:
        datasets.append(lambda: bundle_dataset(args.bundle, args.queries))
    results = []
    for make in datasets:
        data = make()
        results.append(run_dataset(data, args))
        del data
        (args.out / "results.json").write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "datasets": results,
                    "bars": bars(results),
                },
                indent=1,
            ),
            encoding="utf-8",
        )
    print(write_report(results, info, args, args.out))
    log(f"wrote {args.out / 'results.md'}, results.json and plots")


if __name__ == "__main__":
    main()
