"""Helpers of the index benchmark (`index_bench.py`): the peers (hnswlib, usearch), data sets, exact ground
truth, thread limits, single-query timing, machine info, and the Markdown / JSON / plot report.

Our own backends and the raw FAISS twin are set up and measured in `index_bench.py`.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hnswlib
import numpy as np
from machine import run_info  # benchmarks/ is on the path when a script here runs
from usearch.index import Index as UsearchIndex

K = 100  # top-k everywhere
BAR_RECALL = 0.95
BAR_OVERHEAD = 10.0  # percent
BUILD_THREADS = 2
EF_SWEEP = [100, 128, 192, 256, 384]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- methods ---------------------------------------------------------------------------------------------


@dataclass
class Method:
    """One built index and how to search it.

    one(q, params): a (1, d) query, timed; batch(Q, params) -> ids (Q, k), timed; count(Q, params) ->
    candidates scored per query or None, untimed (counting may cost something, so it is kept apart).
    """

    name: str
    family: str  # ours | raw | hnswlib | usearch
    sweep: list[dict]
    one: Callable
    batch: Callable
    build_s: float
    memory: int
    count: Callable | None = None
    prepare: Callable | None = None  # prepare(params, single): set ef / threads before timing
    single_queries: int | None = None  # None: all queries
    peer: Method | None = None  # raw FAISS twin, timed interleaved with this one
    per_call: Callable | None = None  # ours with the parameters passed on each call, timed with the rest
    notes: dict = field(default_factory=dict)
    index: object = None


def build_hnswlib(data: Dataset, ef_sweep: list[int]) -> Method:
    n, dim = data.items.shape
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=32, ef_construction=200, random_seed=100)
    build_s, _ = timed(lambda: index.add_items(data.items, np.arange(n), num_threads=BUILD_THREADS))

    def one(q, params):
        return index.knn_query(q, k=K, num_threads=1)

    def batch(q, params):
        return index.knn_query(q, k=K, num_threads=BUILD_THREADS)[0].astype(np.int64)

    def prepare(params, single):
        index.set_ef(params["ef"])  # hnswlib searches with max(ef, k)
        index.set_num_threads(1 if single else BUILD_THREADS)

    memory = int(index.index_file_size())
    return Method(
        "hnswlib M32", "hnswlib", [{"ef": e} for e in ef_sweep], one, batch, build_s, memory, prepare=prepare
    )


def build_usearch(data: Dataset, ef_sweep: list[int]) -> Method:
    n, dim = data.items.shape
    index = UsearchIndex(ndim=dim, metric="ip", dtype="f32")  # connectivity 16, expansion_add 128
    build_s, _ = timed(lambda: index.add(np.arange(n), data.items, threads=BUILD_THREADS))

    def one(q, params):
        return index.search(q[0], K, threads=1)

    def batch(q, params):
        return index.search(q, K, threads=BUILD_THREADS).keys.astype(np.int64)

    def count(q, params):
        return np.full(len(q), index.search(q, K, threads=BUILD_THREADS).computed_distances / len(q))

    def prepare(params, single):
        index.expansion_search = params["ef"]  # usearch searches with max(expansion, k)

    name = f"usearch f32 M{index.connectivity}"
    return Method(
        name,
        "usearch",
        [{"ef": e} for e in ef_sweep],
        one,
        batch,
        build_s,
        int(index.serialized_length),
        count=count,
        prepare=prepare,
    )


# ---- data -----------------------------------------------------------------------------------------

CENTRES = 1_000
SUBSPACE_RANK = 16
WITHIN_CENTRE = 0.2  # spread around a centre inside the rank-16 subspace (norm of the offset)
FULL_RANK_NOISE = 0.6  # isotropic noise over all d dimensions (norm), before normalisation


@dataclass
class Dataset:
    name: str
    items: np.ndarray  # (n, d) float32, L2-normalised
    queries: np.ndarray  # (q, d) float32
    note: str = ""
    meta: dict = field(default_factory=dict)


def synthetic_drawer(dim: int, seed: int) -> Callable[[np.ndarray], None]:
    """`synthetic()`'s generator: a function that fills any (m, dim) float32 array (a memory map too)
    with the next m clustered unit vectors of the seeded stream."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, SUBSPACE_RANK)))  # (d, r) orthonormal columns
    centres = rng.standard_normal((CENTRES, SUBSPACE_RANK)) / np.sqrt(SUBSPACE_RANK)
    popularity = 1.0 / np.arange(1, CENTRES + 1)  # Zipf, exponent 1, over a random order of centres
    popularity = (popularity / popularity.sum())[rng.permutation(CENTRES)]

    def draw_into(out: np.ndarray) -> None:
        for start in range(0, len(out), 100_000):  # in chunks, to bound the float64 temporaries
            size = min(100_000, len(out) - start)
            which = rng.choice(CENTRES, size, p=popularity)
            z = centres[which] + WITHIN_CENTRE * rng.standard_normal((size, SUBSPACE_RANK)) / np.sqrt(
                SUBSPACE_RANK
            )
            x = z @ basis.T + FULL_RANK_NOISE * rng.standard_normal((size, dim)) / np.sqrt(dim)
            out[start : start + size] = x / np.linalg.norm(x, axis=1, keepdims=True)

    return draw_into


def synthetic(n: int, n_queries: int, dim: int = 64, seed: int = 0) -> Dataset:
    """Clustered unit vectors: a Zipf-weighted Gaussian mixture in a rank-16 subspace plus full-rank noise.

    Seeded: the basis, the centres, their popularity, the items and the queries all come from one
    `default_rng(seed)` drawn in that order, so a size's items do not depend on the number of queries.
    """
    draw_into = synthetic_drawer(dim, seed)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        draw_into(out)
        return out

    items = draw(n)
    queries = draw(n_queries)
    meta = {
        "seed": seed,
        "centres": CENTRES,
        "subspace_rank": SUBSPACE_RANK,
        "within_centre": WITHIN_CENTRE,
        "full_rank_noise": FULL_RANK_NOISE,
        "zipf_exponent": 1.0,
    }
    return Dataset(f"synthetic-{n // 1000}k", items, queries, "synthetic clustered, L2-normalised", meta)


def bundle_dataset(path: str, n_queries: int) -> Dataset:
    """A trained bundle's item vectors, with the user vectors of its validation cases as queries."""
    from recindex.data.splits import split_for
    from recindex.eval.evaluate import encode_cases
    from recindex.pipelines import load_bundle

    bundle = load_bundle(path)
    split = split_for(bundle.config.data, bundle.data)
    cases = split.eval_cases("valid")
    users = encode_cases(bundle.model, cases).numpy().astype(np.float32)[:n_queries]
    items = np.ascontiguousarray(bundle.item_embeddings, dtype=np.float32)
    name = f"bundle-{os.path.basename(os.path.normpath(path))}"
    meta = {"path": str(path), "bundle_id": bundle.bundle_id, "valid_cases": len(cases)}
    return Dataset(name, items, np.ascontiguousarray(users), "bundle item vectors, validation users", meta)


# ---- ground truth and recall ------------------------------------------------------------------------


def exact_top(items: np.ndarray, queries: np.ndarray, k: int, block: int = 64) -> np.ndarray:
    """Ids of each query's k largest inner products (numpy GEMM + argpartition, in blocks of queries)."""
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), block):
        scores = queries[start : start + block] @ items.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of `truth` that appears in the same row of `found`."""
    k = truth.shape[1]
    hits = [np.intersect1d(f[f >= 0], t, assume_unique=False).size for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k)


# ---- threads ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def threads(n: int):
    """BLAS and OpenMP pools of this thread (numpy, FAISS) limited to n threads for the block."""
    import faiss
    from threadpoolctl import threadpool_limits

    before = faiss.omp_get_max_threads()
    with threadpool_limits(limits=n):
        faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)


# ---- timing -------------------------------------------------------------------------------------------


@dataclass
class Timing:
    seconds: np.ndarray  # per-query latency, seconds, every query timed
    block_seconds: np.ndarray  # total time of each block (interleaved runs only)

    @property
    def qps(self) -> float:
        return float(len(self.seconds) / self.seconds.sum())

    def percentile_ms(self, p: float) -> float:
        return float(np.percentile(self.seconds, p) * 1e3)


@contextlib.contextmanager
def _no_gc():
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def single_queries(fn: Callable[[np.ndarray], object], queries: np.ndarray, rounds: int) -> Timing:
    """Time one query per call, `rounds` passes over the queries, after a warm-up of 100 queries."""
    for q in queries[:100]:
        fn(q[None, :])
    clock = time.perf_counter
    seconds = np.empty(rounds * len(queries))
    with _no_gc():
        i = 0
        for _ in range(rounds):
            for q in queries:
                t0 = clock()
                fn(q[None, :])
                seconds[i] = clock() - t0
                i += 1
    return Timing(seconds, np.array([seconds.sum()]))


def interleaved_single_queries(
    fns: Sequence[Callable[[np.ndarray], object]], queries: np.ndarray, rounds: int, block: int
) -> list[Timing]:
    """Time one query per call for each function, in alternating blocks of the same queries.

    Within a block every function runs the same queries one after the other, so that slow phases of a
    shared machine hit all of them alike. Whoever runs a block later finds the caches warmer, so the
    order cycles through every permutation of the functions: each pair runs in each order equally
    often (use a number of blocks that is a multiple of len(fns)!). One warm-up block is not counted.
    """
    for fn in fns:
        for q in queries[:block]:
            fn(q[None, :])
    orders = list(itertools.permutations(range(len(fns))))
    seconds: list[list[float]] = [[] for _ in fns]
    blocks: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter
    with _no_gc():
        turn = 0
        for _ in range(rounds):
            for start in range(0, len(queries), block):
                chunk = queries[start : start + block]
                for f in orders[turn % len(orders)]:
                    fn, times = fns[f], seconds[f]
                    block_start = clock()
                    for q in chunk:
                        t0 = clock()
                        fn(q[None, :])
                        times.append(clock() - t0)
                    blocks[f].append(clock() - block_start)
                turn += 1
    return [Timing(np.array(s), np.array(b)) for s, b in zip(seconds, blocks, strict=True)]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# ---- reporting ----------------------------------------------------------------------------------------


def machine_info() -> dict:
    import faiss
    import hnswlib  # noqa: F401
    import usearch

    try:
        from importlib.metadata import version

        hnsw_version = version("hnswlib")
    except Exception:  # noqa: BLE001
        hnsw_version = "?"
    return {
        **run_info(),
        "versions": {
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "hnswlib": hnsw_version,
            "usearch": usearch.__version__,
        },
    }


def fmt(value, spec: str = ",.0f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return none
    return format(value, spec)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def plot_recall_qps(rows: list[dict], title: str, path) -> None:
    """Recall@100 (x) against one-thread QPS (y, log), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 6))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = plt.get_cmap("tab20").colors
    markers = "osD^v<>phX*"
    for number, method in enumerate(methods):
        points = sorted((r["recall"], r["qps_1t"]) for r in rows if r["method"] == method and r["qps_1t"])
        if not points:
            continue
        colour, marker = colours[number % len(colours)], markers[number % len(markers)]
        # Every point as a marker; the line joins the Pareto front (no point both faster and more exact).
        front = [p for p in points if not any(o[0] >= p[0] and o[1] > p[1] for o in points if o != p)]
        ax.plot(
            *zip(*front, strict=True),
            "--" if method.startswith("raw ") else "-",
            color=colour,
            marker=marker,
            markersize=5,
            label=method,
        )
        ax.plot(*zip(*points, strict=True), linestyle="none", color=colour, marker=marker, markersize=5)
    ax.set_yscale("log")
    ax.set_xlabel("recall@100 (vs exact top-100)")
    ax.set_ylabel("queries / s, one query per call, 1 thread")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- the report ---------------------------------------------------------------------------------------


def params_text(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "-"


HEADERS = [
    "method",
    "params",
    "recall@100",
    "1T QPS",
    "p50 ms",
    "p99 ms",
    "batched QPS",
    "build s",
    "memory MB",
    "cand./query",
    "overhead vs raw FAISS (serving / per-call params)",
]


def table(result: dict) -> str:
    rows = []
    for r in result["rows"]:
        overhead = "-"
        if r["overhead_pct"] is not None:
            overhead = f"{r['overhead_pct']:+.1f}% / {r['overhead_per_call_pct']:+.1f}%"
        build = "(same)" if r["family"] == "raw" else fmt(r["build_s"], ".1f")
        rows.append(
            [
                r["method"],
                params_text(r["params"]),
                f"{r['recall']:.4f}",
                fmt(r["qps_1t"]),
                fmt(r["p50_ms"], ".3f"),
                fmt(r["p99_ms"], ".3f"),
                fmt(r["qps_batch"]),
                build,
                fmt(r["memory_mb"], ".1f"),
                fmt(r["candidates"]),
                overhead,
            ]
        )
    return markdown_table(HEADERS, rows)


def best_at_bar(rows: list[dict], name: str) -> dict | None:
    ok = [r for r in rows if r["method"] == name and r["recall"] >= BAR_RECALL]
    return max(ok, key=lambda r: r["qps_1t"]) if ok else None


def summary(result: dict) -> list[str]:
    rows = result["rows"]
    names = list(dict.fromkeys(r["method"] for r in rows if r["family"] == "ours" and "faiss" in r["method"]))
    hnsw = best_at_bar(rows, "hnswlib M32")
    lines = [f"Best one-thread QPS at recall@100 >= {BAR_RECALL} ({result['name']}):", ""]
    for name in [*names, "hnswlib M32"]:
        best = best_at_bar(rows, name)
        if best is None:
            lines.append(f"- {name}: does not reach recall@100 {BAR_RECALL} in its sweep")
            continue
        vs = f" ({best['qps_1t'] / hnsw['qps_1t']:.2f}x hnswlib)" if hnsw and name != "hnswlib M32" else ""
        lines.append(
            f"- {name}: {best['qps_1t']:,.0f} q/s at {params_text(best['params'])}, "
            f"recall {best['recall']:.4f}{vs}"
        )
    return lines


def bars(results: list[dict]) -> list[str]:
    def reaches(result, word):
        return [
            r
            for r in result["rows"]
            if r["family"] == "ours" and word in r["method"] and r["recall"] >= BAR_RECALL
        ]

    lines = []
    big = [r for r in results if r["name"] == "synthetic-1000k"]
    largest = max(
        (r for r in results if r["name"].startswith("synthetic")), key=lambda r: r["items"], default=None
    )
    for label, word in (("FAISS HNSW", "HNSW"), ("FAISS IVF", "IVF")):
        bar = f"{label} reaches recall@100 >= {BAR_RECALL} at 1M"
        if big:
            hits = reaches(big[0], word)
            best = max(hits, key=lambda r: r["qps_1t"]) if hits else None
            detail = (
                f"{best['method']} {params_text(best['params'])}: recall {best['recall']:.4f} at "
                f"{best['qps_1t']:,.0f} q/s"
                if best
                else "no configuration of its sweep does"
            )
            lines.append(f"{'PASS' if best else 'FAIL'} {bar}: {detail}")
        elif largest:
            hits = reaches(largest, word)
            lines.append(
                f"SKIP {bar}: 1M not in --sizes (at {largest['name']}: "
                f"{'reached' if hits else 'not reached'})"
            )
    checks = (
        ("overhead_pct", "serving path", 0.0, True),
        ("overhead_pct", f"serving path, configs at recall@100 >= {BAR_RECALL}", BAR_RECALL, False),
        ("overhead_per_call_pct", "per-call params", 0.0, False),
    )
    for key, label, min_recall, is_bar in checks:
        overheads = [
            (r[key], r["method"], params_text(r["params"]), res["name"], r[key.replace("pct", "us")])
            for res in results
            for r in res["rows"]
            if r.get(key) is not None and r["recall"] >= min_recall
        ]
        if not overheads:
            continue
        worst = max(overheads)
        verdict = ("PASS" if worst[0] <= BAR_OVERHEAD else "FAIL") if is_bar else "INFO"
        lines.append(
            f"{verdict} FAISS wrapper overhead <= {BAR_OVERHEAD:.0f}% ({label}; max over configs: "
            f"{worst[0]:.1f}% = {worst[4]:.1f} us/query, {worst[1]} {worst[2]} on {worst[3]})"
        )
    return lines


def write_report(results: list[dict], info: dict, args, out: Path) -> str:
    parts = [
        "# Index benchmark: recall@100 vs speed",
        "",
        f"- date: {info['date']}",
        f"- command: `{info['command']}`",
        f"- machine: {info['cpu_count']} CPUs ({info['cpu_model']}), {info['platform']}, "
        f"Python {info['python']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- code: commit {info['git'].get('commit', '?')[:12]}"
        + (
            f", uncommitted changes in {', '.join(info['git']['dirty_src'])}"
            if info["git"].get("dirty_src")
            else ""
        ),
        f"- k = {K}; 1T = one query per call, one library thread, each method alone, {args.rounds} round(s) "
        "over the queries; "
        f"batched = all queries in one call, {BUILD_THREADS} threads; recall from the batched call",
        "- memory: FAISS serialize_index bytes (ours without its 8 B/item id table), hnswlib "
        "index_file_size(), usearch serialized_length, exact: stored matrix",
        "- overhead: ours vs raw FAISS on the same object and parameter chain, median over blocks of "
        f"{args.block} single queries run by each variant in turn (order cycling through all permutations, "
        f"{args.overhead_rounds} passes) of (ours block time / raw block time) - 1; serving = search "
        "params configured on the index, none per call (also how the 1T columns of ours are measured); "
        "per-call = the same params passed on every call",
        "",
    ]
    for result in results:
        parts += [
            f"## {result['name']}: {result['items']:,} items x {result['dim']}, "
            f"{result['queries']:,} queries ({result['note']})",
            "",
        ]
        if result["exact_single_queries"] < result["queries"]:
            parts += [
                f"Exact backends: 1T figures over the first {result['exact_single_queries']} queries.",
                "",
            ]
        parts += [
            table(result),
            "",
            *summary(result),
            "",
            f"Ground truth {result['ground_truth_s']:.1f} s; this data set took {result['seconds']:.0f} s.",
            "",
            f"![recall vs QPS](recall_qps_{result['name']}.png)",
            "",
        ]
        plot_recall_qps(
            result["rows"],
            f"{result['name']}: recall@100 vs 1-thread QPS",
            out / f"recall_qps_{result['name']}.png",
        )
    parts += ["## Bars", "", *[f"- {line}" for line in bars(results)], ""]
    text = "\n".join(parts)
    (out / "results.md").write_text(text, encoding="utf-8")
    return text
