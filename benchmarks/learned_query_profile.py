"""Where one query of CI's compressed lists spends its time: the stages of a single search, timed apart.

    python benchmarks/learned_query_profile.py                                  # 1M items, about 2 minutes
    python benchmarks/learned_query_profile.py --items 300000 --nprobe 64 --refine 4
    python benchmarks/learned_query_profile.py --nlist 512 --nprobe 32 --refine 2 --gap 0.15

Builds `ci:compress=pq4` (one 4-bit code per dimension, nlist the power of two nearest sqrt(n), no RQ
codes; --nlist to choose) over the index benchmark's synthetic vectors (bench_common.synthetic, d=64),
searched with --nprobe, --refine and CI's probe --gap (0: every one of the nprobe lists); then, on one
thread, times --queries single-query calls of the public `search` (k = 100), and the same queries
through the search's stages one by one:

- route: the coarse scores of the lists and the probes (`CIIndex._route`: one matrix-vector product and
  `probe_until_k`);
- scan: the probed lists' biases (the query against each list's reference) and FAISS's fast-scan over their
  codes, the best k x refine estimates (`FastScanLists.search_one`, the public call's one-query entry,
  where the probed lists hold that many codes; `CompressedPartitions.shortlist` otherwise);
- rescore: the shortlist scored exactly from the float32 rows, top k (`candidates.rescore_top_k`).

The stages are the index's own private steps (a profile has to reach inside); the public call's time
less the stages' sum is the rest: the contract's own work (input checks, parameters, ids; about 20 us
in a line profile at 1M) and what the stages cost more when they run one after another than each in
a loop of its own (the scan's megabyte of codes evicts what the routing and the rescore read). Reports p50
and mean microseconds per stage and each stage's share of the public call, and what the public call
would cost with nothing but the scan (the bound on one query per call). Writes --json if given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from bench_common import synthetic, threads  # noqa: E402 (benchmarks/ is not a package)
from machine import run_info  # noqa: E402

from recindex.index.learned import rescore_top_k  # noqa: E402
from recindex.pipelines.indexes import make_index  # noqa: E402

K = 100


def timed_each(call, queries: np.ndarray) -> np.ndarray:
    """Microseconds of `call(query)` for each query (one (1, d) row at a time)."""
    spent = np.empty(len(queries))
    for i, query in enumerate(queries):
        started = time.perf_counter()
        call(query[None])
        spent[i] = (time.perf_counter() - started) * 1e6
    return spent


BANDS = (0, 3_000, 10_000, 25_000, np.inf)  # codes scanned per query


def by_codes_scanned(scanned: np.ndarray, spent: np.ndarray, result: dict) -> list[str]:
    """The public call's time by how many codes each query scanned (a probe gap makes that vary from
    query to query), and a least-squares line: microseconds = fixed + per code x codes."""
    per_code, fixed = np.polyfit(scanned, spent, 1)
    lines = [
        "",
        "| codes scanned | share of queries | mean us | share of the time |",
        "|---|---|---|---|",
    ]
    bands = []
    for low, high in zip(BANDS[:-1], BANDS[1:], strict=True):
        inside = (scanned >= low) & (scanned < high)
        if inside.any():
            share, mean, time_share = inside.mean(), spent[inside].mean(), spent[inside].sum() / spent.sum()
            lines.append(f"| {low:,.0f} - {high:,.0f} | {share:.0%} | {mean:.0f} | {time_share:.0%} |")
            top = None if np.isinf(high) else high
            bands.append({"from": low, "to": top, "share": share, "mean_us": mean, "time_share": time_share})
    lines.append(f"fit: {fixed:.0f} us + {per_code * 1e3:.2f} ns per code scanned")
    result.update(bands=bands, fixed_us=float(fixed), ns_per_code=float(per_code * 1e3))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--refine", type=int, default=4)
    parser.add_argument("--gap", type=float, default=0.0, help="CI's probe gap, cosine units (0: off)")
    parser.add_argument("--nlist", type=int, default=0, help="lists (0: the power of two nearest sqrt(n))")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the queries; the fastest is kept")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not 10_000 <= args.items <= 2_000_000 or not 10 <= args.queries <= 10_000:
        parser.error("--items must be in 10,000..2,000,000 and --queries in 10..10,000")
    data = synthetic(args.items, args.queries)
    nlist = args.nlist or 2 ** round(np.log2(np.sqrt(args.items)))
    index = make_index(f"ci:compress=pq4,nlist={nlist},levels=0,min_agreement=0", data.items.shape[1])
    with threads(2):
        started = time.perf_counter()
        index.add(np.arange(args.items), data.items)
        build_s = time.perf_counter() - started
    params = {"nprobe": args.nprobe, "fine": "pq4", "refine": args.refine, "gap": args.gap}
    params = {**index.search_params, **params}
    index.search_params = params
    depth = K * args.refine

    def route(q):
        return index._route(q, K, params, None).probes

    lists = index._compressed.lists

    def scan(q):  # as the public call scans: its one-query entry where the probed lists hold the depth
        probes = route(q)
        if lists.sizes[probes].sum() >= depth:
            return lists.search_one(q, depth, probes)
        return index._compressed.shortlist(q, probes, depth, None)

    def search(q):
        return index.search(q, K)

    queries = data.queries
    shortlists = [scan(q[None]) for q in queries]  # the rescore stage is timed on each query's own
    best: dict[str, np.ndarray] = {}
    with threads(1):
        for call in (search, route, scan):
            call(queries[:1])  # warm
        for _ in range(args.rounds):
            rows = {
                "search (public)": timed_each(search, queries),
                "route": timed_each(route, queries),
                "route + scan": timed_each(scan, queries),
            }
            rescore = np.empty(len(queries))
            for i, (query, shortlist) in enumerate(zip(queries, shortlists, strict=True)):
                started = time.perf_counter()
                rescore_top_k(query[None], index.store.rows, shortlist, K)  # its one-query path if full
                rescore[i] = (time.perf_counter() - started) * 1e6
            rows["rescore"] = rescore
            for name, values in rows.items():
                if name not in best or values.mean() < best[name].mean():
                    best[name] = values
    public = best["search (public)"].mean()
    scanned = np.array([index.search(q[None], K).scored[0] for q in queries], np.float64)
    codes = float(scanned.mean())
    scan_alone = best["route + scan"].mean() - best["route"].mean()
    table = {
        "search (public)": best["search (public)"],
        "route": best["route"],
        "scan (list biases + FAISS fast-scan)": best["route + scan"] - best["route"],
        "rescore": best["rescore"],
    }
    rest = public - sum(v.mean() for name, v in table.items() if name != "search (public)")
    result = {
        "items": args.items,
        "nlist": nlist,
        "nprobe": args.nprobe,
        "refine": args.refine,
        "gap": args.gap,
        "codes_scanned_per_query": codes,
        "queries": args.queries,
        "build_s": build_s,
        "stages_us": {n: {"p50": float(np.median(v)), "mean": float(v.mean())} for n, v in table.items()},
        "contract_rest_us": float(rest),
        "scan_only_qps": 1e6 / scan_alone,
        "public_qps": 1e6 / public,
        "machine": run_info(),
    }
    lines = [
        f"ci:compress=pq4 at {args.items:,} items, {nlist} lists, nprobe {args.nprobe}, "
        f"refine {args.refine}, gap {args.gap:g}, k {K}, one query per call, one thread "
        f"({args.queries} queries, fastest of {args.rounds} passes; {codes:,.0f} codes scanned per query)",
        "| stage | p50 us | mean us | share of the public call |",
        "|---|---|---|---|",
    ]
    for name, v in table.items():
        lines.append(f"| {name} | {np.median(v):.0f} | {v.mean():.0f} | {v.mean() / public:.0%} |")
    lines.append(f"| the rest (the contract's own work, caches) | - | {rest:.0f} | {rest / public:.0%} |")
    lines.append(
        f"q/s: {1e6 / public:,.0f} as served; {1e6 / scan_alone:,.0f} if the FAISS scan were all a query cost"
    )
    lines += by_codes_scanned(scanned, best["search (public)"], result)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
