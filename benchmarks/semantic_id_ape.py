"""APE of semantic-ID indexes built from a trained model's item vectors (the URI paper's Table 2 setup).

    python benchmarks/semantic_id_ape.py --bundle runs/bench/beauty [--k 16 32 64] [--layers 2]

For each k: Random, hierarchical K-means, RQ-KMeans and RQ-VAE IDs of the bundle's item vectors; APE at
the leaves with the users' training items as each query's positives (recindex.eval.ape), with the bucket
sizes and collisions beside it (a less balanced index gets a lower APE for free). URI's learned index
joins this table in its own issue. Writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import run_info  # noqa: E402

from recindex.data.splits import split_for  # noqa: E402
from recindex.eval.ape import average_partition_entropy, bucket_report  # noqa: E402
from recindex.pipelines import load_bundle  # noqa: E402
from recindex.quant.semantic_ids import METHODS, build_semantic_ids  # noqa: E402

console = Console(width=160)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--out", default="runs/bench/semantic_ids")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    split = split_for(bundle.config.data, bundle.data)
    rows = []
    for k in args.k:
        for method in METHODS:
            started = time.perf_counter()
            ids = build_semantic_ids(bundle.item_embeddings, method, k, args.layers)
            seconds = time.perf_counter() - started
            leaf_of = ids.leaf_of()
            per_layer = [
                average_partition_entropy(ids.leaf_of(depth), split.train_offsets, split.train_items)
                for depth in range(1, args.layers + 1)
            ]
            rows.append(
                {
                    "k": k,
                    "method": method,
                    "ape": per_layer[-1],
                    "ape_per_layer": per_layer,
                    "collisions": ids.collisions(),
                    "seconds": seconds,
                    **bucket_report(leaf_of, k**args.layers),
                }
            )
            console.print(f"k={k} {method}: APE {rows[-1]['ape']:.3f} ({seconds:.1f} s)")
    table = Table(title=f"APE at the leaves, L={args.layers}, {bundle.bundle_id} (lower is tighter)")
    columns = (
        "k",
        "method",
        "APE per layer",
        "APE",
        "leaves used",
        "empty",
        "size p50",
        "size max",
        "collisions",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["k"]),
            row["method"],
            " / ".join(f"{a:.3f}" for a in row["ape_per_layer"]),
            f"{row['ape']:.3f}",
            f"{row['used']:,.0f}",
            f"{row['empty']:,.0f}",
            f"{row['size_p50']:,.0f}",
            f"{row['size_max']:,.0f}",
            f"{row['collisions']:,}",
        )
    console.print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"bundle": bundle.bundle_id, "layers": args.layers, "rows": rows, "run": run_info()}
    (out / "ape.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
