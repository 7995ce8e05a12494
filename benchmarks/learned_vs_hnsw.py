"""The learned indexes with compressed lists against hnswlib, at 1M items, in one run.

    python benchmarks/learned_vs_hnsw.py --quick                       # 50k items, about 2 minutes
    python benchmarks/learned_vs_hnsw.py --items 1000000 --out runs/bench/learned   # about 15 minutes

Data: the index benchmark's synthetic clustered unit vectors (bench_common.synthetic, d=64, seed 0),
with 2 x --queries queries from the same distribution: the first half is the validation draw, the
second the test draw. Ground truth: the exact top-100 by inner product. k = 100 everywhere; every
search runs on one thread (BLAS, FAISS's OpenMP, hnswlib).

Protocol, so that nothing is tuned on the figures reported:
1. every method sweeps its search parameters on the validation queries: recall@100 of a batched call
   and one-query-per-call q/s over --sweep-queries of them;
2. for each target recall (0.95 and 0.99) each method's operating point is the fastest sweep point
   that reached the target on validation;
3. on the test queries, the chosen points of all methods are timed one query per call in alternating
   blocks (bench_common.interleaved_single_queries: a slow phase of the shared machine hits every
   method alike), --rounds passes; their test recall@100, p50/p99 and a batched call (all test queries
   in one call, one thread) are reported, and the ratio of each learned index's q/s to hnswlib's.

Methods: hnswlib M=32 efConstruction=200 (the peer; ef swept); MFLI with 4-bit PQ fast-scan lists and
an exact refine (`mfli:...,storage=pq4`; leaves and refine swept); MFLI with float16 lists (the
previous storage, for the same comparison); CI with fast-scan lists (`ci:compress=pq4`, no RQ codes;
nprobe and refine swept, and the probe gap: all nprobe lists, or only those of them whose centroid's
cosine with the query is within the gap of the nearest one's); the build time of each (two threads).
The code size of the 4-bit lists and CI's number of lists are build parameters: one index per
`--code-dims` value (dimensions per code) and, for CI, per `--ci-lists` value (nlist the power of two
nearest that multiple of sqrt(n): 4 is the index benchmark's float IVF, 2 the recommended FAISS
fast-scan spec's, 1 CI's own default), and the report names, per target, the learned index whose
operating point was fastest on validation.
Writes results.json, results.md and frontier.png to --out.

`--bundle PATH` runs the same protocol on a trained bundle's item vectors instead, with the user
vectors of its validation cases as the queries (the first --queries the validation draw, the next
the test draw; bench_common.bundle_dataset): the neighbours a trained model means, where the synthetic
draw only has the index benchmark's clusters. `--items` is then the bundle's catalogue.

`--peer-cache DIR` keeps the built hnswlib graph between runs (its build takes minutes at 1M); the
report then says the graph was loaded and gives the build time of the run that built it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import hnswlib
import numpy as np
from bench_common import (
    BUILD_THREADS,
    bundle_dataset,
    exact_top,
    interleaved_single_queries,
    log,
    machine_info,
    markdown_table,
    recall_at,
    single_queries,
    synthetic,
    threads,
    timed,
)

from recindex.pipelines.indexes import make_index

K = 100
TARGETS = (0.95, 0.99)
MFLI_SHAPE = "levels=2,codewords=128"


@dataclass
class Method:
    name: str
    sweep: list[dict]
    one: object  # (query (1, d), params) -> anything
    batch: object  # (queries, params) -> (n, k) ids
    build_s: float
    notes: str = ""
    validation: list[dict] = field(default_factory=list)


def hnsw_method(items: np.ndarray, cache: Path | None, quick: bool, source: str = "") -> Method:
    """`source`: what the items are, in the cached graph's name (empty for the synthetic draw)."""
    n, dim = items.shape
    index = hnswlib.Index(space="ip", dim=dim)
    path = cache / f"hnswlib-M32-ef200-{source}{n}.bin" if cache else None
    notes = ""
    if path and path.is_file():
        index.load_index(str(path), max_elements=n)
        build_s = json.loads(path.with_suffix(".json").read_text())["build_s"]
        notes = f"graph loaded from {path}; build time of the run that built it"
    else:
        index.init_index(max_elements=n, M=32, ef_construction=200, random_seed=100)
        build_s, _ = timed(lambda: index.add_items(items, np.arange(n), num_threads=BUILD_THREADS))
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            index.save_index(str(path))
            path.with_suffix(".json").write_text(json.dumps({"build_s": build_s}))
    index.set_num_threads(1)

    def one(q, params):
        index.set_ef(params["ef"])  # hnswlib searches with max(ef, k)
        return index.knn_query(q, k=K, num_threads=1)

    def batch(q, params):
        index.set_ef(params["ef"])
        return index.knn_query(q, k=K, num_threads=1)[0].astype(np.int64)

    # up to 4,096: on a trained bundle's vectors the graph needs far more than on the synthetic draw
    # (0.914 at ef 768 on runs/bench/synthetic-1m-trained). 136-152 and 320-352: on the synthetic draw
    # the 0.95 point falls between 128 and 160, and the 0.99 point near 384; steps as fine as the
    # learned indexes' sweep has there, so that the peer is not read at a recall well past the target
    full = [64, 100, 128, 136, 144, 152, 160, 192, 256, 320, 352, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
    efs = [100, 160, 256, 512] if quick else full
    return Method("hnswlib M32", [{"ef": e} for e in efs], one, batch, build_s, notes)


def learned_method(name: str, spec: str, items: np.ndarray, sweep: list[dict]) -> Method:
    index = make_index(spec, items.shape[1])
    with threads(BUILD_THREADS):
        build_s, _ = timed(lambda: index.add(np.arange(len(items)), items))
    defaults = index.search_params

    def one(q, params):
        index.search_params = params  # the serving path: parameters set on the index, none per call
        return index.search(q, K)

    def batch(q, params):
        index.search_params = params
        return index.search(q, K).ids

    resolved = [{**defaults, **p} for p in sweep]
    return Method(name, resolved, one, batch, build_s)


GAPS = (0.05, 0.1, 0.125, 0.15, 0.2)  # 0.125: the 0.95 point fell between 0.1 and 0.15


def sweeps(quick: bool) -> tuple[list[dict], list[dict], list[dict]]:
    leaves = [32, 64, 128] if quick else [32, 48, 64, 96, 128, 192, 256, 384, 512]
    # one 4-bit code per dimension needs far less refine than one per two; 3 and the in-between probe
    # counts (24, 40) because CI's 0.95 point fell between 2 and 4, and between 16 and 32 or 32 and 48
    refines = (2, 3, 4, 8, 16)
    pq4 = [{"leaves": leaf, "refine": r, "candidates": 10**7} for leaf in leaves for r in refines]
    fp16 = [{"leaves": leaf, "candidates": 10**7} for leaf in leaves]
    # 8 and 12: a trained bundle's vectors reach 0.95 at nprobe 16 already
    probes = [8, 16, 32] if quick else [8, 12, 16, 24, 32, 40, 48, 64, 96, 128, 192, 256]
    ci = [{"nprobe": p, "refine": r} for p in probes for r in refines]
    # CI's gap (cosine units): of the nprobe lists, only those whose centroid is about as near the query
    # as the nearest one's; it spends the probes where a query's neighbours are spread over many lists
    gaps, gap_probes = ((0.1,), [16, 32]) if quick else (GAPS, [16, 24, 32, 40, 48, 64, 96, 128, 192])
    ci += [{"nprobe": p, "refine": r, "gap": g} for g in gaps for p in gap_probes for r in (2, 3, 4)]
    return pq4, fp16, ci


def validate(method: Method, queries: np.ndarray, truth: np.ndarray, timed_queries: int) -> None:
    for params in method.sweep:
        recall = recall_at(method.batch(queries, params), truth)
        timing = single_queries(lambda q, p=params: method.one(q, p), queries[:timed_queries], rounds=1)
        method.validation.append({"params": params, "recall": recall, "qps": timing.qps})
        log(f"  validation {method.name} {params}: recall {recall:.4f}, {timing.qps:,.0f} q/s")


def chosen(method: Method, target: float) -> dict | None:
    reaching = [row for row in method.validation if row["recall"] >= target]
    return max(reaching, key=lambda row: row["qps"]) if reaching else None


def best_on_validation(methods: list[Method]) -> dict[str, str | None]:
    """Per target, the learned index (family and code size) whose operating point was fastest on the
    validation queries: the one the bar is read on, chosen without the test figures."""
    best = {}
    for target in TARGETS:
        picks = [(m.name, chosen(m, target)) for m in methods if not m.name.startswith("hnswlib")]
        picks = [(name, row["qps"]) for name, row in picks if row is not None]
        best[str(target)] = max(picks, key=lambda pick: pick[1])[0] if picks else None
    return best


def test_at(target, methods, queries, truth, rounds: int, block: int) -> list[dict]:
    picks = [(m, chosen(m, target)) for m in methods]
    picks = [(m, row) for m, row in picks if row is not None]
    fns = [lambda q, m=m, p=row["params"]: m.one(q, p) for m, row in picks]
    timings = interleaved_single_queries(fns, queries, rounds, block)
    out = []
    for (method, row), timing in zip(picks, timings, strict=True):
        params = row["params"]
        batch_s, ids = timed(lambda m=method, p=params: m.batch(queries, p))
        out.append(
            {
                "target": target,
                "method": method.name,
                "params": params,
                "validation_recall": row["recall"],
                "test_recall": recall_at(ids, truth),
                "qps": timing.qps,
                "p50_ms": timing.percentile_ms(50),
                "p99_ms": timing.percentile_ms(99),
                "batched_qps": len(queries) / batch_s,
            }
        )
        log(f"  test@{target} {method.name}: {out[-1]}")
    peer = next((r for r in out if r["method"].startswith("hnswlib")), None)
    for row in out:
        row["qps_vs_hnswlib"] = row["qps"] / peer["qps"] if peer else None
        row["batched_vs_hnswlib"] = row["batched_qps"] / peer["batched_qps"] if peer else None
    missing = [
        m.name for m, row in zip(methods, [chosen(m, target) for m in methods], strict=True) if not row
    ]
    for name in missing:
        out.append(
            {"target": target, "method": name, "params": None, "note": "target not reached on validation"}
        )
    return out


def report(result: dict) -> str:
    headers = [
        "target",
        "method",
        "chosen on validation",
        "val. recall",
        "test recall@100",
        "q/s (1 per call)",
        "vs hnswlib",
        "p50 ms",
        "p99 ms",
        "batched q/s",
        "vs hnswlib",
    ]
    rows = []
    for r in result["test"]:
        if r.get("params") is None:
            rows.append(
                [f"{r['target']}", r["method"], "not reached", "-", "-", "-", "-", "-", "-", "-", "-"]
            )
            continue
        params = {k: v for k, v in r["params"].items() if k not in ("candidates", "beam")}
        rows.append(
            [
                f"{r['target']}",
                r["method"],
                json.dumps(params),
                f"{r['validation_recall']:.4f}",
                f"{r['test_recall']:.4f}",
                f"{r['qps']:,.0f}",
                _ratio(r["qps_vs_hnswlib"]),
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['batched_qps']:,.0f}",
                _ratio(r["batched_vs_hnswlib"]),
            ]
        )
    builds = markdown_table(
        ["method", "build s (2 threads)", "notes"],
        [[m, f"{b['build_s']:.1f}", b["notes"]] for m, b in result["builds"].items()],
    )
    return "\n\n".join(
        [
            f"# Learned indexes vs hnswlib at {result['items']:,} items of {result.get('data', 'synthetic')}"
            " (d=64, top-100, one thread)",
            f"Command: `{result['command']}`; machine: {json.dumps(result['machine'])}",
            markdown_table(headers, rows),
            "Best learned index per target, chosen on validation q/s: "
            + ", ".join(f"{t}: {name}" for t, name in result["best_learned_on_validation"].items()),
            builds,
        ]
    )


def _ratio(value: float | None) -> str:
    """A q/s ratio to hnswlib's at the same target; '-' where hnswlib did not reach the target."""
    return "-" if value is None else f"{value:.2f}x"


def plot(validation: dict[str, list[dict]], path: Path) -> None:
    """Each method's recall/q-s frontier on the validation queries (its best q/s at each recall over
    all its search parameters), every sweep point faint behind it; one colour and marker per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.get_cmap("tab10").colors
    for n, (name, rows) in enumerate(validation.items()):
        colour, marker = colours[n % len(colours)], "os^vDP*X"[n % 8]
        ax.scatter([r["recall"] for r in rows], [r["qps"] for r in rows], color=colour, s=6, alpha=0.25)
        front = _frontier(rows)
        ax.plot(
            [r["recall"] for r in front],
            [r["qps"] for r in front],
            color=colour,
            marker=marker,
            ms=4,
            label=name,
            lw=2 if name.startswith("hnswlib") else 1.2,
        )
    for target in TARGETS:
        ax.axvline(target, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("recall@100 (validation queries)")
    ax.set_ylabel("queries/s, one per call, one thread")
    ax.set_yscale("log")
    ax.set_xlim(left=max(0.5, min(r["recall"] for rows in validation.values() for r in rows) - 0.01))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _frontier(rows: list[dict]) -> list[dict]:
    """The points no other point beats on both recall and q/s, by recall."""
    ordered = sorted(rows, key=lambda r: (-r["recall"], -r["qps"]))
    front, best_qps = [], 0.0
    for row in ordered:
        if row["qps"] > best_qps:
            front.append(row)
            best_qps = row["qps"]
    return front[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000, help="per draw (validation and test)")
    parser.add_argument("--sweep-queries", type=int, default=300, help="validation queries timed per point")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peer-cache", type=Path)
    parser.add_argument("--bundle", type=Path, help="a trained bundle's vectors, not the synthetic draw")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/learned"))
    parser.add_argument(
        "--code-dims",
        type=lambda text: [int(d) for d in text.split(",")],
        default=[1, 2],
        help="dimensions per 4-bit code of the pq4 lists, one index each (default 1,2)",
    )
    parser.add_argument(
        "--ci-lists",
        type=lambda text: [float(m) for m in text.split(",")],
        default=[4.0],
        help="CI's nlist as multiples of sqrt(n), one index each (default 4; e.g. 1,2,4)",
    )
    parser.add_argument("--replot", type=Path, help="only redraw frontier.png beside this results.json")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text())["validation"], args.replot.parent / "frontier.png")
        return
    if args.quick:
        args.items, args.queries, args.sweep_queries, args.rounds = 50_000, 200, 100, 1
    if not 1000 <= args.items <= 5_000_000 or not 100 <= args.queries <= 10_000:
        parser.error("--items must be in 1,000..5,000,000 and --queries in 100..10,000")
    started = time.time()
    if args.bundle and not (args.bundle / "manifest.json").is_file():
        parser.error(f"{args.bundle} is not a bundle (no manifest.json; see make_load_bundles.sh 1m-trained)")
    if args.bundle:
        data = bundle_dataset(str(args.bundle), 2 * args.queries)
        if len(data.queries) < 2 * args.queries:
            parser.error(f"{args.bundle}: {len(data.queries)} validation users; --queries at most half")
    else:
        data = synthetic(args.items, 2 * args.queries)
    items, validation, test = data.items, data.queries[: args.queries], data.queries[args.queries :]
    log(f"{len(items):,} items; exact top-{K} of {2 * args.queries} queries")
    truth_val, truth_test = exact_top(items, validation, K), exact_top(items, test, K)
    pq4, fp16, ci = sweeps(args.quick)
    source = f"{data.name}-" if args.bundle else ""
    methods = [hnsw_method(items, args.peer_cache, args.quick, source)]
    for d in args.code_dims:  # the code size is a build parameter: one index per value
        spec = f"mfli:{MFLI_SHAPE},storage=pq4,code_dims={d}"
        methods.append(learned_method(f"mfli pq4 {d}d", spec, items, pq4))
    methods.append(learned_method("mfli fp16", f"mfli:{MFLI_SHAPE},storage=fp16", items, fp16))
    for d in args.code_dims:
        for multiple in args.ci_lists:
            nlist = 2 ** round(np.log2(multiple * np.sqrt(len(items))))
            spec = f"ci:compress=pq4,code_dims={d},nlist={nlist},levels=0,min_agreement=0"
            name = f"ci pq4 {d}d" if len(args.ci_lists) == 1 else f"ci pq4 {d}d {nlist} lists"
            methods.append(learned_method(name, spec, items, ci))
    for m in methods:
        log(f"built {m.name} in {m.build_s:.1f} s {m.notes}")
    with threads(1):
        for m in methods:
            validate(m, validation, truth_val, args.sweep_queries)
        tested = [
            row for t in TARGETS for row in test_at(t, methods, test, truth_test, args.rounds, args.block)
        ]
    given = [(k, v) for k, v in vars(args).items() if v not in (None, False)]
    result = {
        "data": data.name,
        "items": len(items),
        "queries": args.queries,
        "command": "python benchmarks/learned_vs_hnsw.py "
        + " ".join(f"--{k.replace('_', '-')} {_shown(v)}" for k, v in given),
        "machine": machine_info(),
        "builds": {m.name: {"build_s": m.build_s, "notes": m.notes} for m in methods},
        "validation": {m.name: m.validation for m in methods},
        "test": tested,
        "best_learned_on_validation": best_on_validation(methods),
        "wall_s": time.time() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    text = report(result)
    (args.out / "results.md").write_text(text + "\n")
    plot({m.name: m.validation for m in methods}, args.out / "frontier.png")
    print(text)


def _shown(value) -> str:
    """An option's value as it is typed: lists comma-separated, 4.0 as 4."""
    if isinstance(value, list):
        return ",".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
