"""The URI bars: APE of URI's learned index against fixed indexes, Recall/NDCG of URI against the same
decoder trained on fixed indexes (two-stage), Recall@10 against the number of candidates, ablations,
and the serving cost beside exact search. Prints one table per part and a PASS / NOT MET line per bar;
writes JSON to --out.

    python benchmarks/uri_bars.py ape --two-tower runs/bench/beauty --uri runs/uri/beauty-k16 \\
        --uri runs/uri/beauty --uri runs/uri/beauty-k64
    python benchmarks/uri_bars.py compare --uri runs/uri/beauty \\
        --two-stage "k-means=runs/uri/beauty-two-stage-kmeans" --two-stage "RQ-KMeans=..."
    python benchmarks/uri_bars.py curve --run "k=32,L=2=runs/uri/beauty" --run "k=16,L=2=..."
    python benchmarks/uri_bars.py ablations --full runs/uri/beauty --run "w/o adaptive weight=..."

`benchmarks/uri_bars.sh` trains every bundle these need and runs them all. Every figure is measured in
this run from the bundles given. The beam (20) and k, L are the paper's settings, not tuned here; the
test cases are read once per configuration.

ape: APE (users' training items as each query's positives, recindex.eval.ape) at the leaves (L = 2) and at
the first layer, for Random, K-means, RQ-KMeans and RQ-VAE ids built from the two-tower model's item
vectors (plain and, for the k-means methods, balanced like URI's assignment: at most ceil(n/k) items
per token under each parent), and for URI's learned index; with bucket sizes, since APE only compares
indexes of similar balance.

compare: every bundle served by the `uri` index on the test split. URI: beam search to 20 leaves, the
ranker scores their items. Two-stage baselines: the decoder ranks items itself (TIGER's item token,
beam 20), and, for reference, its 20 leaves scored by the same kind of ranker. Exact search over the
ranker's vectors and the time per query (one thread, one query per call) beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bar_report import console, labelled, log, verdict, write_report  # noqa: E402
from bench_common import threads  # noqa: E402

from recindex.data.splits import split_for  # noqa: E402
from recindex.eval.ape import average_partition_entropy, bucket_report  # noqa: E402
from recindex.eval.index_eval import evaluate_index  # noqa: E402
from recindex.pipelines import load_bundle  # noqa: E402
from recindex.pipelines.indexes import (  # noqa: E402
    item_attributes,
    make_index,  # noqa: E402
    uri_options,
)
from recindex.quant.semantic_ids import build_semantic_ids  # noqa: E402

# TIGER's published Recall@10 (arXiv 2305.05065, Table 1) under the same leave-one-out protocol
TIGER_RECALL10 = {"beauty": 0.0648, "sports": 0.0400}
TARGET_RECALL10 = {"beauty": 0.075}  # the two-tower bar, set for Beauty only
FIXED = ("random", "kmeans", "kmeans_balanced", "rq_kmeans", "rq_kmeans_balanced", "rq_vae")


def uri_index(bundle, params: dict | None = None):
    """The bundle's `uri` index built in memory (`recindex index build` would also write it to disk)."""
    index = make_index(
        "uri", bundle.item_embeddings.shape[1], search_params=params, options=uri_options(bundle)
    )
    index.add(
        np.arange(bundle.model.n_items), bundle.item_embeddings, attributes=item_attributes(bundle.data)
    )
    return index


def leaf_numbers(codes: np.ndarray, k: int, depth: int) -> np.ndarray:
    radix = k ** np.arange(depth - 1, -1, -1, dtype=np.int64)
    return (codes[:, :depth].astype(np.int64) * radix).sum(1)


# ---- ape -------------------------------------------------------------------------------------------------


def ape(args) -> dict:
    two_tower = load_bundle(args.two_tower)
    split = split_for(two_tower.config.data, two_tower.data)
    runs = [load_bundle(path) for path in args.uri]
    for run in runs:
        if run.data.fingerprint() != two_tower.data.fingerprint():
            raise SystemExit(f"{run.path}: other data than {two_tower.path}")
    report: dict = {"two_tower": str(two_tower.path), "rows": []}
    ks = sorted({run.config.uri.k for run in runs} | set(args.k))
    for k in ks:
        for method in FIXED:
            ids = build_semantic_ids(two_tower.item_embeddings, method, k, 2, seed=0)
            report["rows"].append(_ape_row(method, k, ids.codes, split))
            log(f"k={k} {method}: APE {report['rows'][-1]['ape']:.4f}")
        for run in runs:
            if run.config.uri.k == k and run.config.uri.layers == 2:
                codes = run.model.item_codes[:, :2].numpy()
                report["rows"].append(_ape_row("URI", k, codes, split, str(run.path)))
    table = Table(title=f"APE at L = 2 (leaves), Beauty; lower is tighter ({two_tower.path})")
    table.add_column("k")
    for method in (*FIXED, "URI"):
        table.add_column(method, justify="right")
    bars = []
    for k in ks:
        row = {r["method"]: r for r in report["rows"] if r["k"] == k}
        table.add_row(
            str(k),
            *[
                f"{row[m]['ape']:.3f} (1st {row[m]['ape_layer1']:.3f}, max {row[m]['size_max']:.0f})"
                if m in row
                else "-"
                for m in (*FIXED, "URI")
            ],
        )
        if "URI" in row:
            others = min(row[m]["ape"] for m in FIXED)
            bars.append(
                {"k": k, "uri": row["URI"]["ape"], "best_other": others, "pass": row["URI"]["ape"] < others}
            )
    console.print(table)
    console.print("cells: APE at the leaves (APE at the first layer, largest leaf)")
    for bar in bars:
        console.print(
            f"k={bar['k']}: URI {bar['uri']:.4f} vs the best other {bar['best_other']:.4f}: "
            + verdict(bar["pass"])
        )
    report["bars"] = bars
    return report


def _ape_row(method: str, k: int, codes: np.ndarray, split, source: str | None = None) -> dict:
    leaves = leaf_numbers(codes, k, 2)
    return {
        "method": method,
        "k": k,
        "source": source,
        "ape": average_partition_entropy(leaves, split.train_offsets, split.train_items),
        "ape_layer1": average_partition_entropy(codes[:, 0], split.train_offsets, split.train_items),
        **bucket_report(leaves),
        "collisions": int(len(leaves) - len(np.unique(leaves))),
    }


# ---- compare ---------------------------------------------------------------------------------------------


def evaluate(bundle, params: dict, which: str = "test", single_queries: int = 200) -> dict:
    index = uri_index(bundle)
    result = evaluate_index(bundle, index, which, params=params, single_queries=single_queries)
    return {"index": result.index, "exact": result.exact, "cost": result.cost, "params": params}


def one_thread():
    """Serving cost is reported on one thread: torch, BLAS and FAISS pools limited to one."""
    import torch

    torch.set_num_threads(1)
    return threads(1)


def exact_cost(bundle, queries: int = 200) -> dict:
    """Time per query of exact search over the same (ranker) vectors, one thread, one query per call."""
    index = make_index("exact", bundle.item_embeddings.shape[1])
    index.add(np.arange(bundle.model.n_items), bundle.item_embeddings)
    result = evaluate_index(bundle, index, "test", single_queries=queries)
    return result.cost


def compare(args) -> dict:
    uri = load_bundle(args.uri)
    report: dict = {"uri": str(uri.path), "rows": {}}
    beam = {"beam": args.beam}
    log("URI: beam search + ranker")
    report["rows"]["URI"] = evaluate(uri, {**beam, "rank": "ranker"})
    for label, path in labelled(args.two_stage):
        bundle = load_bundle(path)
        log(f"{label}: the decoder ranks items; and its leaves scored by the ranker")
        if len(bundle.model.decoder.sizes) > bundle.config.uri.layers:
            report["rows"][f"{label} (two-stage)"] = evaluate(bundle, {**beam, "rank": "decoder"})
        report["rows"][f"{label} leaves + ranker"] = evaluate(bundle, {**beam, "rank": "ranker"})
    report["exact"] = {"metrics": report["rows"]["URI"]["exact"], "cost": exact_cost(uri)}
    dataset = uri.config.data.dataset
    report["dataset"] = dataset
    table = Table(title=f"{dataset} test split, beam {args.beam}; one thread")
    for column in ("run", "R@10", "N@10", "R@20", "N@20", "candidates", "p50 ms", "batched ms"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for label, row in report["rows"].items():
        m, c = row["index"], row["cost"]
        table.add_row(
            label,
            f"{m['recall@10']:.4f}",
            f"{m['ndcg@10']:.4f}",
            f"{m['recall@20']:.4f}",
            f"{m['ndcg@20']:.4f}",
            f"{c['candidates_scored_per_query']:.0f}",
            f"{c['single_query_p50_ms']:.2f}",
            f"{c['batched_ms_per_query']:.3f}",
        )
    e, ec = report["exact"]["metrics"], report["exact"]["cost"]
    table.add_row(
        "URI's ranker, exact search",
        f"{e['recall@10']:.4f}",
        f"{e['ndcg@10']:.4f}",
        f"{e['recall@20']:.4f}",
        f"{e['ndcg@20']:.4f}",
        f"{ec['catalogue_size']:.0f}",
        f"{ec['single_query_p50_ms']:.2f}",
        f"{ec['batched_ms_per_query']:.3f}",
    )
    console.print(table)
    ours = report["rows"]["URI"]["index"]["recall@10"]
    bars = []
    for label in ("k-means", "RQ-KMeans"):
        key = f"{label} (two-stage)"
        if key in report["rows"]:
            theirs = report["rows"][key]["index"]["recall@10"]
            ok = ours >= 1.10 * theirs
            bars.append({"bar": f"URI >= 1.10 x {label} two-stage", "uri": ours, "other": theirs, "pass": ok})
            console.print(
                f"URI R@10 {ours:.4f} vs {label} two-stage {theirs:.4f} ({ours / theirs - 1:+.0%}): "
                + verdict(ok)
            )
    if dataset in TIGER_RECALL10:
        published = TIGER_RECALL10[dataset]
        bars.append({"bar": f"TIGER's {published}", "uri": ours, "pass": ours >= published})
        console.print(f"URI R@10 {ours:.4f} vs TIGER's published {published}: " + verdict(ours >= published))
    if dataset in TARGET_RECALL10:
        target = TARGET_RECALL10[dataset]
        bars.append({"bar": f"target {target}", "uri": ours, "pass": ours >= target})
        console.print(f"... and the target {target}: {verdict(ours >= target)}")
    report["bars"] = bars
    return report


# ---- curve -----------------------------------------------------------------------------------------------


def curve(args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report: dict = {"beams": args.beams, "runs": {}}
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, path in labelled(args.run):
        bundle = load_bundle(path)
        points = []
        for beam in args.beams:
            row = evaluate(bundle, {"beam": beam, "rank": "ranker"}, single_queries=0)
            points.append(
                {
                    "beam": beam,
                    "candidates": row["cost"]["candidates_scored_per_query"],
                    "recall@10": row["index"]["recall@10"],
                }
            )
            log(
                f"{label} beam {beam}: {points[-1]['candidates']:.0f} candidates, "
                f"R@10 {points[-1]['recall@10']:.4f}"
            )
        report["runs"][label] = {"bundle": path, "points": points}
        axis.plot(
            [p["candidates"] for p in points], [p["recall@10"] for p in points], marker="o", label=label
        )
    axis.set_xlabel("# candidate items")
    axis.set_ylabel("Recall@10")
    axis.set_title("Beauty test: Recall@10 against candidates (beam sweep)")
    axis.legend()
    figure.tight_layout()
    png = Path(args.out) / "recall_vs_candidates.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=120)
    console.print(f"plot: {png}")
    report["png"] = str(png)
    return report


# ---- ablations -------------------------------------------------------------------------------------------


def ablations(args) -> dict:
    rows = {"URI": evaluate(load_bundle(args.full), {"beam": args.beam, "rank": "ranker"}, single_queries=0)}
    for label, path in labelled(args.run):
        rows[label] = evaluate(load_bundle(path), {"beam": args.beam, "rank": "ranker"}, single_queries=0)
    for label, path in [("URI", args.full), *labelled(args.run)]:
        bundle = load_bundle(path)
        codes = bundle.model.item_codes[:, : bundle.config.uri.layers].numpy()
        split = split_for(bundle.config.data, bundle.data)
        rows[label]["partition"] = _ape_row(label, bundle.config.uri.k, codes, split, path)
    table = Table(title=f"ablations, Beauty test split, beam {args.beam}")
    for column in ("variant", "R@10", "vs URI", "N@10", "ranker exact R@10", "APE leaves", "APE layer 1"):
        table.add_column(column)
    full = rows["URI"]["index"]["recall@10"]
    for label, row in rows.items():
        r = row["index"]["recall@10"]
        table.add_row(
            label,
            f"{r:.4f}",
            f"{r / full - 1:+.1%}",
            f"{row['index']['ndcg@10']:.4f}",
            f"{row['exact']['recall@10']:.4f}",
            f"{row['partition']['ape']:.3f}",
            f"{row['partition']['ape_layer1']:.3f}",
        )
    console.print(table)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench/uri", help="folder for the JSON reports and the plot")
    parts = parser.add_subparsers(dest="part", required=True)
    p = parts.add_parser("ape", help="APE of URI's index against fixed indexes at L = 2")
    p.add_argument("--two-tower", required=True, help="the two-tower bundle the fixed indexes are built from")
    p.add_argument("--uri", action="append", default=[], help="a URI bundle (k from its config), repeatable")
    p.add_argument("--k", type=int, nargs="*", default=[16, 32, 64])
    p = parts.add_parser("compare", help="URI against two-stage decoders on fixed indexes")
    p.add_argument("--uri", required=True)
    p.add_argument("--two-stage", action="append", default=[], help="LABEL=BUNDLE, repeatable")
    p.add_argument("--beam", type=int, default=20)
    p = parts.add_parser("curve", help="Recall@10 against candidates over a beam sweep (PNG)")
    p.add_argument("--run", action="append", default=[], help="LABEL=BUNDLE, repeatable")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 2, 5, 10, 20, 40, 80])
    p = parts.add_parser("ablations", help="URI with a part removed")
    p.add_argument("--full", required=True)
    p.add_argument("--run", action="append", default=[], help="LABEL=BUNDLE, repeatable")
    p.add_argument("--beam", type=int, default=20)
    args = parser.parse_args()
    with one_thread():
        report = {"ape": ape, "compare": compare, "curve": curve, "ablations": ablations}[args.part](args)
    write_report(report, args.out, args.part)


if __name__ == "__main__":
    main()
