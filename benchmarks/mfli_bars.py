"""The MFLI bars: serving quality on Beauty and Sports, cold items, cost at 1M items, real-time inserts,
ablations. Prints one table per part and a PASS/FAIL line per bar; writes JSON (and Markdown) to --out.

    python benchmarks/mfli_bars.py compare --mfli runs/mfli/beauty --two-tower runs/bench/beauty
    python benchmarks/mfli_bars.py compare --mfli runs/mfli/beauty-cold --two-tower runs/bench/beauty-cold
    python benchmarks/mfli_bars.py synthetic --items 1000000
    python benchmarks/mfli_bars.py ablations --full runs/mfli/beauty --run "1 facet=runs/mfli/abl-1facet"

`benchmarks/mfli_bars.sh` trains every bundle these need and runs them all. Every figure printed here is
measured in this run from the bundles given (their training is the bundle's own record); search
parameters are chosen on the validation cases, and the test cases are read once.

compare: MFLI served from its own index (no ANN, no scan of the catalogue) against the two-tower model
of the same split served by exact search, FAISS HNSW and FAISS IVF (IVF with as many lists as MFLI has
leaves in a facet, probing as many lists as MFLI walks in all its facets, so both scan a similar number
of candidates), with the protocol's metrics, cold-item recall on a cold-item split, coverage and
popularity of what is recommended, candidates scored, latency, the APE of each partition (users'
training items as each query's positives, see recindex.eval.ape) and what the facets carry.

synthetic: clustered unit vectors (benchmarks/bench_common.synthetic), d=64, top-100, one thread: MFLI's
recall against exact search and its speed against hnswlib (M=32) over a sweep of each one's search
parameter, one query per call and in batches; full code reassignment (a rebuild) of every item; single
inserts; and 10,000 items inserted one by one after the build against the same items in the build.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import exact_top, recall_at, single_queries, synthetic, threads  # noqa: E402
from machine import run_info  # noqa: E402

from recindex.data.splits import split_for  # noqa: E402
from recindex.eval.ape import average_partition_entropy, bucket_report  # noqa: E402
from recindex.eval.index_eval import evaluate_index  # noqa: E402
from recindex.eval.partition_report import partitions_of  # noqa: E402
from recindex.eval.report import partition_table  # noqa: E402
from recindex.pipelines import load_bundle  # noqa: E402
from recindex.pipelines.indexes import (  # noqa: E402
    item_attributes,
    make_index,  # noqa: E402
    mfli_options,
)

console = Console(width=220)
K = 100
BAR_RECALL = 0.95


def log(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]NOT MET[/red]"


# ---- compare: MFLI against the two-tower pipelines on one data set -----------------------------------


def mfli_index(bundle, params: dict | None = None, **options):
    """The bundle's MFLI index built in memory (`build_bundle_index` would also write it to disk)."""
    index = make_index(
        "mfli",
        bundle.item_embeddings.shape[1],
        search_params=params,
        options={**mfli_options(bundle), **options},
    )
    started = time.perf_counter()
    index.add(
        np.arange(bundle.model.n_items), bundle.item_embeddings, attributes=item_attributes(bundle.data)
    )
    return index, time.perf_counter() - started


def two_tower_index(bundle, spec: str):
    index = make_index(spec, bundle.item_embeddings.shape[1])
    started = time.perf_counter()
    index.add(
        np.arange(bundle.model.n_items), bundle.item_embeddings, attributes=item_attributes(bundle.data)
    )
    return index, time.perf_counter() - started


def choose_on_validation(bundle, index, sweep: list[dict], target: float) -> tuple[dict, list[dict]]:
    """The cheapest parameters (first in `sweep`) whose validation Recall@10 through the index is at least
    `target` x exact search's, else the last; with the whole validation sweep for the record."""
    rows = []
    for params in sweep:
        result = evaluate_index(bundle, index, "valid", params=params, single_queries=0)
        ratio = result.index["recall@10"] / max(result.exact["recall@10"], 1e-12)
        rows.append(
            {
                **params,
                "valid_recall@10": result.index["recall@10"],
                "exact_valid_recall@10": result.exact["recall@10"],
                "ratio": ratio,
                "candidates": result.cost["candidates_scored_per_query"],
            }
        )
        if ratio >= target:
            return params, rows
    return sweep[-1], rows


def ape_of(bucket_of: np.ndarray, split) -> float:
    return average_partition_entropy(bucket_of, split.train_offsets, split.train_items)


def compare(args) -> dict:
    from recindex.mfli.diagnostics import facet_report

    mfli = load_bundle(args.mfli)
    base = load_bundle(args.two_tower)
    if mfli.data.fingerprint() != base.data.fingerprint() or mfli.config.data != base.config.data:
        raise SystemExit("the MFLI and two-tower bundles must come from the same data and split")
    split = split_for(mfli.config.data, mfli.data)
    name = f"{mfli.config.data.dataset} ({mfli.config.data.split})"
    log(f"compare on {name}: MFLI {mfli.bundle_id} vs two-tower {base.bundle_id}")

    index, build_s = mfli_index(mfli)
    leaves_per_facet = [int(len(s)) for s in index.leaf_sizes()]
    sweep = [{"leaves": n} for n in (2, 4, 8, 16, 32, 64, 128)]
    chosen, valid_sweep = choose_on_validation(mfli, index, sweep, args.valid_target)
    log(f"MFLI: {leaves_per_facet} leaves per facet, built in {build_s:.1f} s; chose {chosen} on validation")
    results: dict[str, dict] = {}
    evaluation = evaluate_index(mfli, index, "test", params=chosen)
    results["MFLI (its index)"] = {**evaluation.index, **evaluation.cost, "build_s": build_s}
    results["MFLI (exact search)"] = dict(evaluation.exact)
    candidates = evaluation.cost["candidates_scored_per_query"]

    exact, _ = two_tower_index(base, "exact")
    evaluation = evaluate_index(base, exact, "test")
    results["two-tower + exact"] = {**evaluation.index, **evaluation.cost}
    hnsw, hnsw_s = two_tower_index(base, "faiss:HNSW32")
    evaluation = evaluate_index(base, hnsw, "test", params={"ef": 128})
    results["two-tower + HNSW32 (ef 128)"] = {**evaluation.index, **evaluation.cost, "build_s": hnsw_s}
    # IVF with as many lists as MFLI has leaves in a facet, and the probe count chosen on validation as the
    # smallest whose candidates reach MFLI's: the same budget of candidates scored
    nlist = int(np.mean(leaves_per_facet))
    ivf, ivf_s = two_tower_index(base, f"faiss:IVF{nlist},Flat")
    probe = next(
        (
            p
            for p in (1, 2, 4, 8, 16, 32, 64, 128, 256)
            if evaluate_index(base, ivf, "valid", params={"nprobe": p}, single_queries=0).cost[
                "candidates_scored_per_query"
            ]
            >= candidates
        ),
        256,
    )
    evaluation = evaluate_index(base, ivf, "test", params={"nprobe": probe})
    results[f"two-tower + IVF{nlist} (nprobe {probe})"] = {
        **evaluation.index,
        **evaluation.cost,
        "build_s": ivf_s,
    }

    # partitions: APE over users' training items, with bucket sizes beside it
    partitions = {}
    for facet, facet_name in enumerate(mfli.model.facets):
        leaf_of = index.leaves_of_items(facet)
        partitions[f"MFLI leaves, facet {facet_name}"] = {
            "ape": ape_of(leaf_of, split),
            **bucket_report(leaf_of),
        }
    ivf_of = partitions_of(ivf)["IVF lists"]
    partitions[f"two-tower IVF{nlist} lists"] = {"ape": ape_of(ivf_of, split), **bucket_report(ivf_of, nlist)}
    random_of = np.random.default_rng(0).integers(0, nlist, mfli.model.n_items)
    partitions[f"random, {nlist} buckets"] = {
        "ape": ape_of(random_of, split),
        **bucket_report(random_of, nlist),
    }

    facets = facet_report(mfli.model, split, "valid")
    report = {
        "data": name,
        "mfli_bundle": mfli.bundle_id,
        "two_tower_bundle": base.bundle_id,
        "mfli_training": mfli.metrics.get("training", {}),
        "chosen_on_validation": chosen,
        "validation_sweep": valid_sweep,
        "leaves_per_facet": leaves_per_facet,
        "test": results,
        "partitions": partitions,
        "facets": facets,
    }
    print_compare(report, cold=len(split.cold_items) > 0)
    bars = []
    mfli_r10 = results["MFLI (its index)"]["recall@10"]
    exact_r10 = results["MFLI (exact search)"]["recall@10"]
    if mfli.config.data.dataset == "beauty" and not len(split.cold_items):
        bars.append(
            (
                "Beauty test Recall@10 served from the MFLI index >= 0.075",
                f"{mfli_r10:.4f}",
                mfli_r10 >= 0.075,
            )
        )
        bars.append(
            (
                "... within 3% of exact search over the same embeddings",
                f"{mfli_r10:.4f} vs {exact_r10:.4f} ({100 * (mfli_r10 / exact_r10 - 1):+.1f}%)",
                mfli_r10 >= 0.97 * exact_r10,
            )
        )
    if len(split.cold_items):
        ours = results["MFLI (its index)"]["cold_recall@50"]
        theirs = results["two-tower + HNSW32 (ef 128)"]["cold_recall@50"]
        gain = ours / theirs - 1 if theirs else float("inf")
        bars.append(
            (
                "cold-item Recall@50, MFLI vs two-tower + HNSW: >= +20%",
                f"{ours:.4f} vs {theirs:.4f} ({100 * gain:+.1f}%)",
                gain >= 0.20,
            )
        )
    report["bars"] = [{"bar": b, "measured": m, "met": ok} for b, m, ok in bars]
    for bar, measured, ok in bars:
        console.print(f"{verdict(ok)}  {bar}: {measured}")
    return report


def print_compare(report: dict, cold: bool) -> None:
    keys = ["recall@10", "recall@50", "recall@100", "ndcg@10"]
    if cold:
        keys += ["cold_recall@50"]
    keys += ["coverage@100", "popularity@10"]
    costs = ["candidates_scored_per_query", "single_query_p50_ms", "single_query_p99_ms", "index_recall@10"]
    table = Table(title=f"{report['data']}: test split")
    table.add_column("method")
    for key in keys + costs:
        table.add_column(key.replace("_per_query", "").replace("single_query_", ""), justify="right")
    for method, row in report["test"].items():
        cells = [f"{row[k]:.4f}" if k in row else "-" for k in keys]
        cells += [
            (f"{row[k]:,.0f}" if k.startswith("candidates") else f"{row[k]:.3f}") if k in row else "-"
            for k in costs
        ]
        table.add_row(method, *cells)
    console.print(table)
    console.print(
        partition_table(report["partitions"], "partitions: APE (users' training items as positives)")
    )
    facets = report["facets"]
    table = Table(title="what the facets carry (validation; exact search per facet)")
    table.add_column("facet")
    table.add_column("Recall@10", justify="right")
    table.add_column("Recall@50", justify="right")
    for name, row in facets["per_facet"].items():
        table.add_row(name, f"{row['recall@10']:.4f}", f"{row['recall@50']:.4f}")
    console.print(table)
    pairs = ", ".join(
        f"{pair}: CKA {facets['cka'][pair]:.2f}, top-10 overlap {facets['top10_overlap'][pair]:.2f}"
        for pair in facets["cka"]
    )
    console.print(f"between facets (1.00 would be a copy): {pairs}")


# ---- synthetic: cost at 1M items ---------------------------------------------------------------------


def qps_at(rows: list[dict], recall: float, key: str) -> float | None:
    """Queries/s at `recall`, linearly interpolated between the sweep points around it."""
    rows = sorted(rows, key=lambda r: r["recall"])
    for low, high in zip(rows, rows[1:], strict=False):
        if low["recall"] <= recall <= high["recall"]:
            if high["recall"] == low["recall"]:
                return high[key]
            share = (recall - low["recall"]) / (high["recall"] - low["recall"])
            return low[key] + share * (high[key] - low[key])
    return None


def timed_batches(fn, queries: np.ndarray, repeats: int = 3) -> float:
    """Queries/s over the whole batch in one call, best of `repeats` (the machine is shared)."""
    fn(queries[:50])
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn(queries)
        best = min(best, time.perf_counter() - started)
    return len(queries) / best


def synthetic_bench(args) -> dict:
    import hnswlib

    n, q = args.items, args.queries
    # 2q queries are drawn: the first q are the validation set the default spec was chosen on (leaf
    # count and codewords, from recall against candidates scored), the last q are measured here
    data = synthetic(n, 2 * q, seed=args.seed)
    items, queries = data.items, np.ascontiguousarray(data.queries[q:])
    log(f"{n:,} items x {items.shape[1]}, {q} queries; exact top-{K}")
    truth = exact_top(items, queries, K)
    ids = np.arange(n)
    report: dict = {"items": n, "queries": q, "dataset": data.meta}

    with threads(1):
        started = time.perf_counter()
        index = make_index(args.spec, items.shape[1])
        index.add(ids, items)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        rebuild = index.rebuild()
        reassign_s = time.perf_counter() - started
    sizes = index.leaf_sizes()[0]
    log(f"MFLI {args.spec}: build {build_s:.1f} s, full reassignment {reassign_s:.1f} s, {len(sizes)} leaves")
    report["mfli"] = {
        "spec": args.spec,
        "build_s": build_s,
        "full_reassignment_s": reassign_s,
        "rebuild": rebuild,
        "leaves": int(len(sizes)),
        "leaf_size_p50": float(np.median(sizes)),
        "leaf_size_max": int(sizes.max()),
    }

    mfli_rows = []
    with threads(1):
        for leaves in args.leaves:
            params = {"leaves": leaves, "beam": max(32, leaves), "candidates": 10**9}
            found = index.search(queries, K, params=params)
            recall = recall_at(found.ids, truth)
            one = single_queries(lambda x, p=params: index.search(x, K, params=p), queries, 1)
            batch = timed_batches(lambda x, p=params: index.search(x, K, params=p), queries)
            mfli_rows.append(
                {
                    "leaves": leaves,
                    "recall": recall,
                    "candidates": float(np.mean(found.scored)),
                    "qps_one": one.qps,
                    "p50_ms": one.percentile_ms(50),
                    "p99_ms": one.percentile_ms(99),
                    "qps_batch": batch,
                }
            )
            log(
                f"MFLI leaves={leaves}: recall {recall:.4f}, {mfli_rows[-1]['candidates']:,.0f} scored, "
                f"{one.qps:,.0f} q/s one per call, {batch:,.0f} q/s batched"
            )
            if recall >= 0.995:
                break

    log("hnswlib M=32, efConstruction=200 (2 build threads)")
    hnsw = hnswlib.Index(space="ip", dim=items.shape[1])
    hnsw.init_index(max_elements=n, M=32, ef_construction=200, random_seed=100)
    started = time.perf_counter()
    hnsw.add_items(items, ids, num_threads=2)
    hnsw_build = time.perf_counter() - started
    hnsw_rows = []
    with threads(1):
        for ef in args.ef:
            hnsw.set_ef(ef)
            found, _ = hnsw.knn_query(queries, k=K, num_threads=1)
            recall = recall_at(found.astype(np.int64), truth)
            one = single_queries(lambda x: hnsw.knn_query(x, k=K, num_threads=1), queries, 1)
            batch = timed_batches(lambda x: hnsw.knn_query(x, k=K, num_threads=1), queries)
            hnsw_rows.append(
                {
                    "ef": ef,
                    "recall": recall,
                    "qps_one": one.qps,
                    "p50_ms": one.percentile_ms(50),
                    "p99_ms": one.percentile_ms(99),
                    "qps_batch": batch,
                }
            )
            log(
                f"hnswlib ef={ef}: recall {recall:.4f}, {one.qps:,.0f} q/s one per call, "
                f"{batch:,.0f} q/s batched"
            )
    report["mfli_sweep"], report["hnswlib_sweep"], report["hnswlib_build_s"] = (
        mfli_rows,
        hnsw_rows,
        hnsw_build,
    )

    report["inserts"] = insert_bench(args, items, index_spec=args.spec)
    print_synthetic(report)
    bars = []
    for mode in ("one", "batch"):
        ours, theirs = (
            qps_at(mfli_rows, BAR_RECALL, f"qps_{mode}"),
            qps_at(hnsw_rows, BAR_RECALL, f"qps_{mode}"),
        )
        ratio = ours / theirs if ours and theirs else None
        label = "one query per call" if mode == "one" else "batches of all queries"
        measured = (
            f"MFLI {ours:,.0f} q/s vs hnswlib {theirs:,.0f} q/s = {ratio:.2f}x"
            if ratio
            else f"MFLI {ours} vs hnswlib {theirs} (a sweep did not bracket recall {BAR_RECALL})"
        )
        bars.append(
            (
                f"1M, recall {BAR_RECALL}, one thread, {label}: >= 2x hnswlib M=32",
                measured,
                bool(ratio and ratio >= 2),
            )
        )
    bars.append(("full code reassignment of every item <= 30 s", f"{reassign_s:.1f} s", reassign_s <= 30))
    inserts = report["inserts"]
    bars.append(
        (
            "single insert p99 <= 1 ms in process",
            f"{inserts['insert_p99_ms']:.3f} ms",
            inserts["insert_p99_ms"] <= 1,
        )
    )
    ratio = inserts["recall50_inserted"] / inserts["recall50_built"]
    bars.append(
        (
            "items inserted one by one found as well as built ones (Recall@50 within 10%)",
            f"{inserts['recall50_inserted']:.4f} vs {inserts['recall50_built']:.4f} "
            f"({100 * (ratio - 1):+.1f}%)",
            ratio >= 0.9,
        )
    )
    report["bars"] = [{"bar": b, "measured": m, "met": ok} for b, m, ok in bars]
    for bar, measured, ok in bars:
        console.print(f"{verdict(ok)}  {bar}: {measured}")
    return report


def insert_bench(args, items: np.ndarray, index_spec: str) -> dict:
    """Hold out `--inserted` items, build without them, insert them one by one (timed), and compare the
    Recall@50 of queries aimed at them with an index that had them in its build."""
    n = len(items)
    rng = np.random.default_rng(args.seed + 1)
    held = rng.choice(n, args.inserted, replace=False)
    kept = np.setdiff1d(np.arange(n), held)
    # a query aimed at an item: the item's vector with noise, so that finding it is not trivial
    targets = held[: args.targeted]
    dim = items.shape[1]
    noisy = items[targets] + args.noise * rng.standard_normal((len(targets), dim)).astype(
        np.float32
    ) / np.sqrt(dim)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    params = {"leaves": args.insert_leaves, "beam": max(32, args.insert_leaves), "candidates": 10**9}
    with threads(1):
        delta = make_index(index_spec, items.shape[1])
        delta.add(kept, items[kept])
        latencies = np.empty(len(held))
        clock = time.perf_counter
        for i, item in enumerate(held.tolist()):
            vector = items[item : item + 1]
            started = clock()
            delta.add(np.array([item]), vector)
            latencies[i] = clock() - started
        found_delta = delta.search(noisy, 50, params=params).ids
        built = make_index(index_spec, items.shape[1])
        built.add(np.arange(n), items)
        found_built = built.search(noisy, 50, params=params).ids
    exact = exact_top(items, noisy, 50)

    def hit(found):
        return float(np.mean((found == targets[:, None]).any(1)))

    result = {
        "inserted": int(len(held)),
        "targeted_queries": int(len(targets)),
        "noise": args.noise,
        "leaves": args.insert_leaves,
        "insert_p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "insert_p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "insert_max_ms": float(latencies.max() * 1e3),
        "recall50_inserted": hit(found_delta),
        "recall50_built": hit(found_built),
        "recall50_exact": hit(exact),
        "placed_since_rebuild": int(delta.placed_since_rebuild),
    }
    log(
        f"inserts: p50 {result['insert_p50_ms']:.3f} ms, p99 {result['insert_p99_ms']:.3f} ms; Recall@50 of "
        f"aimed queries {result['recall50_inserted']:.4f} inserted vs {result['recall50_built']:.4f} built "
        f"(exact {result['recall50_exact']:.4f})"
    )
    return result


def print_synthetic(report: dict) -> None:
    table = Table(title=f"{report['items']:,} synthetic items, d=64, top-{K}, one thread")
    for column in (
        "method",
        "param",
        "recall@100",
        "scored",
        "q/s one per call",
        "p50 ms",
        "p99 ms",
        "q/s batched",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in report["mfli_sweep"]:
        table.add_row(
            "MFLI",
            f"leaves={row['leaves']}",
            f"{row['recall']:.4f}",
            f"{row['candidates']:,.0f}",
            f"{row['qps_one']:,.0f}",
            f"{row['p50_ms']:.3f}",
            f"{row['p99_ms']:.3f}",
            f"{row['qps_batch']:,.0f}",
        )
    for row in report["hnswlib_sweep"]:
        table.add_row(
            "hnswlib M32",
            f"ef={row['ef']}",
            f"{row['recall']:.4f}",
            "-",
            f"{row['qps_one']:,.0f}",
            f"{row['p50_ms']:.3f}",
            f"{row['p99_ms']:.3f}",
            f"{row['qps_batch']:,.0f}",
        )
    console.print(table)
    mfli = report["mfli"]
    console.print(
        f"MFLI build {mfli['build_s']:.1f} s (codebook fit + codes + split-and-merge), full reassignment "
        f"{mfli['full_reassignment_s']:.1f} s, {mfli['leaves']:,} leaves "
        f"(p50 {mfli['leaf_size_p50']:.0f} items, "
        f"max {mfli['leaf_size_max']:,}); hnswlib build {report['hnswlib_build_s']:.1f} s on 2 threads"
    )


# ---- ablations: bundles trained with one part of the recipe removed ----------------------------------


def ablations(args) -> dict:
    """Each bundle served from its own index at the same search parameters; "no split-and-merge" is the
    full recipe's bundle indexed with the rebalancing bounds opened (min_leaf 1, max_leaf unbounded)."""
    full = load_bundle(args.full)
    variants = [("full recipe", full, {}), ("no split-and-merge", full, {"min_leaf": 1, "max_leaf": 10**9})]
    for item in args.run:
        label, _, path = item.partition("=")
        variants.append((label, load_bundle(path), {}))
    rows = {}
    facets = len(full.model.facets)
    for label, bundle, options in variants:
        index, _ = mfli_index(bundle, **options)
        # the same number of leaves walked in all, so a model with fewer facets scans as many items
        leaves = args.leaves * facets // len(bundle.model.facets)
        evaluation = evaluate_index(bundle, index, "test", params={"leaves": leaves}, single_queries=0)
        split = split_for(bundle.config.data, bundle.data)
        leaf_of = index.leaves_of_items(0)
        rows[label] = {
            **evaluation.index,
            "candidates": evaluation.cost["candidates_scored_per_query"],
            "index_recall@10": evaluation.cost["index_recall@10"],
            "exact_recall@10": evaluation.exact["recall@10"],
            "ape_facet0": ape_of(leaf_of, split),
            "leaves_facet0": int(len(index.leaf_sizes()[0])),
            "leaves_walked_per_facet": leaves,
            "best_epoch": bundle.metrics.get("training", {}).get("best_epoch"),
        }
        log(
            f"{label}: test Recall@10 {rows[label]['recall@10']:.4f} "
            f"(its exact search {rows[label]['exact_recall@10']:.4f})"
        )
    table = Table(
        title=f"MFLI ablations, Beauty test split, each model served by its index ({args.leaves} leaves per "
        f"facet for {facets} facets, as many in all for fewer facets)"
    )
    columns = ("variant", "Recall@10", "Recall@50", "NDCG@10", "vs full", "scored", "index recall@10")
    for column in columns + ("exact Recall@10", "APE (facet 0)", "leaves"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    reference = rows["full recipe"]["recall@10"]
    for label, row in rows.items():
        table.add_row(
            label,
            f"{row['recall@10']:.4f}",
            f"{row['recall@50']:.4f}",
            f"{row['ndcg@10']:.4f}",
            f"{100 * (row['recall@10'] / reference - 1):+.1f}%",
            f"{row['candidates']:,.0f}",
            f"{row['index_recall@10']:.4f}",
            f"{row['exact_recall@10']:.4f}",
            f"{row['ape_facet0']:.3f}",
            f"{row['leaves_facet0']:,}",
        )
    console.print(table)
    return {"leaves": args.leaves, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench/mfli", help="folder for the JSON reports")
    parts = parser.add_subparsers(dest="part", required=True)
    p = parts.add_parser("compare", help="MFLI vs two-tower + exact/HNSW/IVF on one data set and split")
    p.add_argument("--mfli", required=True, help="MFLI bundle")
    p.add_argument("--two-tower", required=True, help="two-tower bundle of the same data and split")
    p.add_argument("--valid-target", type=float, default=0.99, help="validation Recall@10 ratio to reach")
    p = parts.add_parser("synthetic", help="cost at 1M synthetic items against hnswlib")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spec", default="mfli:levels=2,codewords=128,storage=fp16")
    p.add_argument("--leaves", type=int, nargs="+", default=[64, 128, 192, 256, 320, 384, 512])
    p.add_argument("--ef", type=int, nargs="+", default=[64, 100, 128, 160, 192, 256])
    p.add_argument("--inserted", type=int, default=10_000)
    p.add_argument("--targeted", type=int, default=1000)
    p.add_argument("--noise", type=float, default=0.5, help="norm of the noise on a query aimed at an item")
    p.add_argument("--insert-leaves", type=int, default=256)
    p = parts.add_parser("ablations", help="Beauty bundles trained with a part of the recipe removed")
    p.add_argument("--full", required=True, help="the bundle of the full recipe")
    p.add_argument("--run", action="append", default=[], help="LABEL=BUNDLE, repeatable")
    p.add_argument("--leaves", type=int, default=16)
    args = parser.parse_args()

    report = {"compare": compare, "synthetic": synthetic_bench, "ablations": ablations}[args.part](args)
    report["run"] = run_info()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.part if args.part != "compare" else f"compare-{Path(args.mfli).name}"
    (out / f"{tag}.json").write_text(json.dumps(report, indent=2, default=float), encoding="utf-8")
    log(f"wrote {out / f'{tag}.json'}")


if __name__ == "__main__":
    main()
