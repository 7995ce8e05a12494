"""Negative sampling on Beauty, chosen on validation: in-batch, mixed (in-batch + uniform), full softmax.

    python benchmarks/negatives_ablation.py [--epochs 15] [--data-dir ../shared/data]

Each variant starts from the committed recipe and changes only `train.negatives` (and the logQ switch);
the table gives validation Recall@10 / NDCG@10 after the same number of epochs and seconds per epoch.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from recindex.config import load_config
from recindex.data.registry import load_dataset
from recindex.pipelines.experiment import run_experiment

VARIANTS = {
    "in-batch, logQ": ['train.negatives="in_batch"'],
    "in-batch, no logQ": ['train.negatives="in_batch"', "train.logq_correction=false"],
    "mixed 2048, logQ": ['train.negatives="mixed"', "train.uniform_negatives=2048"],
    "mixed 2048 + 10 hard": [
        'train.negatives="mixed"',
        "train.uniform_negatives=2048",
        "train.hard_negatives=10",
    ],
    "full softmax": ['train.negatives="full"'],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--only", nargs="*", default=None, help="Run only these variants (by name).")
    args = parser.parse_args()
    console = Console(width=200)
    common = [f"train.epochs={args.epochs}", f"train.patience={args.epochs}"]
    if args.data_dir:
        common.append(f"data.data_dir={json.dumps(args.data_dir)}")
    base = load_config("configs/beauty_two_tower.toml", common)
    data = load_dataset(base.data.dataset, base.data.data_dir)
    table = Table(title=f"Beauty validation after {args.epochs} epochs (best epoch kept)")
    for column in ("negatives", "valid R@10", "valid N@10", "best epoch", "s / epoch"):
        table.add_column(column, justify="left" if column == "negatives" else "right")
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        config = load_config("configs/beauty_two_tower.toml", [*common, *overrides])
        result = run_experiment(config, None, progress=False, data=data)
        seconds = result.training.seconds / max(1, result.training.epochs_run)
        table.add_row(
            name,
            f"{result.valid['recall@10']:.4f}",
            f"{result.valid['ndcg@10']:.4f}",
            str(result.training.best_epoch),
            f"{seconds:.1f}",
        )
        console.print(f"{name}: valid R@10 {result.valid['recall@10']:.4f}")
    console.print(table)


if __name__ == "__main__":
    main()
