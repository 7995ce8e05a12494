"""Index recall, latency and build time of indexes built from one trained bundle, as `recindex index build`
builds them (the learned backends with the material the bundle gives them: CI's query views).

    python benchmarks/bundle_index_bench.py runs/b1m exact faiss:HNSW32@ef=128/256 ci mfli \
        'ci:min_agreement=0@nprobe=32/128' --out runs/bench/bundle-index

Each argument is a spec, optionally followed by `@NAME=V1/V2/...`: the search parameter swept (without
one, the index's stored defaults). Queries: the user vectors of the bundle's first --queries validation
cases; ground truth: exact top-100 by inner product over the bundle's item vectors (numpy GEMM).

Per (spec, search parameters):
  recall@10/@100  overlap with exact top-10 / top-100, from one batched call over all queries
  candidates      items scored per query (the backend's own count, in a separate untimed call)
  p50/p99 ms      one query per call, one thread (FAISS OpenMP and BLAS set to 1), --single queries
                  after 100 warm-up queries
  build s         `build_bundle_index` (material included), --build-threads threads; HNSW graphs with
                  --hnsw-ef-construction (200)
A build the backend refuses is reported as such, with its message. Writes results.json and results.md
to --out after each spec; the index folders are written into the bundle (`BUNDLE/indexes/bench-*`)
and removed after.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import shutil
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from machine import run_info  # benchmarks/ is on the path when a script here runs
from threadpoolctl import threadpool_limits

from recindex.data.splits import split_for
from recindex.errors import RecIndexError
from recindex.eval.evaluate import encode_cases
from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import build_bundle_index, default_name

K = 100


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def threads(n: int):
    """BLAS and FAISS's OpenMP limited to n threads for the block."""
    before = faiss.omp_get_max_threads()
    with threadpool_limits(limits=n):
        faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)


def exact_top(items: np.ndarray, queries: np.ndarray, block: int = 64) -> np.ndarray:
    """Ids of each query's K largest inner products, best first."""
    out = np.empty((len(queries), K), np.int64)
    for start in range(0, len(queries), block):
        scores = queries[start : start + block] @ items.T
        part = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(part, order, axis=1)
    return out


def overlap(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of `truth` found in the same row of `found`."""
    return float(
        np.mean([np.intersect1d(f[f >= 0], t).size / len(t) for f, t in zip(found, truth, strict=True)])
    )


def single_query_ms(index, queries: np.ndarray) -> np.ndarray:
    """Milliseconds of one query per call, after 100 warm-up queries, garbage collection off."""
    for q in queries[:100]:
        index.search(q[None, :], K)
    seconds = np.empty(len(queries))
    gc.disable()
    try:
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            index.search(q[None, :], K)
            seconds[i] = time.perf_counter() - t0
    finally:
        gc.enable()
    return seconds * 1e3


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def parse_target(text: str) -> tuple[str, list[dict]]:
    """'ci@nprobe=32/128' -> ('ci', [{'nprobe': 32}, {'nprobe': 128}]); 'exact' -> ('exact', [{}])."""
    spec, _, sweep = text.partition("@")
    if not sweep:
        return spec, [{}]
    name, _, values = sweep.partition("=")
    if not name or not values:
        raise SystemExit(f"{text!r}: expected SPEC@NAME=V1/V2/...")
    return spec, [{name: int(v) if v.isdigit() else v} for v in values.split("/")]


def measure(index, params: dict, queries: np.ndarray, truth: np.ndarray, single: int) -> dict:
    index.search_params = index.resolve_params(params)  # the serving path: parameters set, none passed
    found = index.search(queries, K).ids
    index.count_candidates = True
    try:
        scored = index.search(queries, K).scored
    finally:
        index.count_candidates = False
    with threads(1):
        ms = single_query_ms(index, queries[:single])
    return {
        "params": dict(index.search_params),
        "recall@10": overlap(found[:, :10], truth[:, :10]),
        "recall@100": overlap(found, truth),
        "candidates": None if scored is None else float(np.mean(scored)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def write_report(args, bundle_id: str, items: int, queries: int, rows: list[dict], started: float) -> str:
    """results.json and results.md of the rows so far; returns the Markdown table."""
    info = {**run_info(), "versions": {"numpy": np.__version__, "faiss": faiss.__version__}}
    result = {
        "machine": info,
        "bundle": args.bundle,
        "bundle_id": bundle_id,
        "items": items,
        "queries": queries,
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    table = markdown_table(
        [
            "index",
            "search parameters",
            "recall@10",
            "recall@100",
            "candidates",
            "p50 ms",
            "p99 ms",
            "build s",
        ],
        [
            [r["spec"], "refused at build", "-", "-", "-", "-", "-", "-"]
            if "refused" in r
            else [
                r["spec"],
                json.dumps(r["params"]),
                f"{r['recall@10']:.3f}",
                f"{r['recall@100']:.3f}",
                "-" if r["candidates"] is None else f"{r['candidates']:,.0f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['build_s']:.1f}",
            ]
            for r in rows
        ],
    )
    (args.out / "results.md").write_text(table + "\n", encoding="utf-8")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bundle")
    parser.add_argument("targets", nargs="+", help="SPEC or SPEC@NAME=V1/V2")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=500, help="queries timed one by one")
    parser.add_argument("--build-threads", type=int, default=1)
    parser.add_argument(
        "--hnsw-ef-construction", type=int, default=200, help="ef_construction of the HNSW graphs built"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bundle-index"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bundle = load_bundle(args.bundle)
    cases = split_for(bundle.config.data, bundle.data).eval_cases("valid")
    queries = np.ascontiguousarray(encode_cases(bundle.model, cases).numpy()[: args.queries], np.float32)
    items = np.ascontiguousarray(bundle.item_embeddings, np.float32)
    with threads(args.build_threads):
        truth = exact_top(items, queries)
    log(f"{args.bundle}: {len(items):,} items x {items.shape[1]}, {len(queries):,} validation queries")
    rows = []
    for target in args.targets:
        spec, sweep = parse_target(target)
        name = "bench-" + default_name(spec)
        log(f"building {spec}")
        try:
            with threads(args.build_threads):
                options = {"ef_construction": args.hnsw_ef_construction} if "HNSW" in spec else None
                folder, index, seconds = build_bundle_index(
                    bundle, spec, name, options=options, overwrite=True
                )
        except RecIndexError as refused:
            rows.append({"spec": spec, "refused": str(refused)})
            log(f"  refused: {refused}")
            write_report(args, bundle.bundle_id, len(items), len(queries), rows, started)
            continue
        log(f"  built in {seconds:.1f} s")
        extra = {"view_agreement": index.view_agreement} if hasattr(index, "view_agreement") else {}
        for params in sweep:
            row = {
                "spec": spec,
                "build_s": seconds,
                **extra,
                **measure(index, params, queries, truth, args.single),
            }
            rows.append(row)
            log(f"  {row['params']}: recall@100 {row['recall@100']:.3f}, p50 {row['p50_ms']:.2f} ms")
        del index
        shutil.rmtree(folder, ignore_errors=True)
        write_report(args, bundle.bundle_id, len(items), len(queries), rows, started)  # so far
    print(write_report(args, bundle.bundle_id, len(items), len(queries), rows, started))


if __name__ == "__main__":
    main()
