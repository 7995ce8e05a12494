"""The two-tower bars: Beauty Recall@10 / NDCG@10, training time, reproducibility, other datasets, cold items.

    python benchmarks/two_tower_bars.py [--data-dir ../shared/data] [--out runs/bench] [--skip sports]

Prints one table per part and a PASS/FAIL line per bar. Every figure is measured in this run; nothing is
read from earlier runs. Settings come from configs/beauty_two_tower.toml (chosen on validation); the
other datasets use the same recipe with only the dataset changed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from recindex.config import load_config
from recindex.data.registry import load_dataset
from recindex.eval.metrics import ranking_report
from recindex.eval.report import metrics_table
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import evaluate_bundle, run_experiment, split_for

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "beauty_two_tower.toml"
console = Console(width=200)


def popularity_baseline(config, data) -> dict[str, float]:
    """Most popular training items, history masked, on the test cases of the same split."""
    split = split_for(config.data, data)
    counts = np.bincount(split.train_items, minlength=data.n_items)
    ranking = np.argsort(-counts, kind="stable")
    position = np.empty_like(ranking)
    position[ranking] = np.arange(len(ranking))
    cases = split.test
    k = max(config.eval.ks)
    ranks = np.empty(len(cases), np.int64)
    top = np.empty((len(cases), k), np.int64)
    for case in range(len(cases)):
        seen = np.unique(cases.history(case))
        target = cases.targets[case]
        # Items of the history ranked above the target are removed from the ranking (masked).
        ranks[case] = position[target] - np.count_nonzero(position[seen] < position[target])
        mask = np.ones(len(ranking), bool)
        mask[position[seen]] = False
        top[case] = ranking[mask][:k]
    cold = np.isin(cases.targets, split.cold_items) if len(split.cold_items) else None
    return ranking_report(ranks, top, counts, config.eval.ks, cold)


def run(name: str, overrides: list[str], out: Path, data_dir: str | None) -> dict:
    settings = list(overrides)
    if data_dir:
        settings.append(f"data.data_dir={json.dumps(data_dir)}")
    config = load_config(RECIPE, settings)
    console.rule(f"{name}: {' '.join(overrides) or 'recipe as committed'}")
    data = load_dataset(config.data.dataset, config.data.data_dir)
    result = run_experiment(config, out / name, progress=False, log=console.print, overwrite=True, data=data)
    return {"config": config, "data": data, "result": result}


def bar(label: str, ok: bool, detail: str) -> None:
    console.print(f"[{'green' if ok else 'red'}]{'PASS' if ok else 'FAIL'}[/] {label}: {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sports", "ml-100k", "cold"])
    args = parser.parse_args()
    console.print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; started {time.strftime('%Y-%m-%d %H:%M')}"
    )

    beauty = run("beauty", [], args.out, args.data_dir)
    result = beauty["result"]
    console.print(
        metrics_table(
            {"valid": result.valid, "test": result.test},
            "Beauty, leave-one-out, full ranking, history masked",
        )
    )
    reloaded = evaluate_bundle(load_bundle(result.bundle_path), "test")
    summary = {"beauty": result}

    others = {}
    if "sports" not in args.skip:
        others["sports"] = run("sports", ['data.dataset="sports"'], args.out, args.data_dir)["result"]
    if "ml-100k" not in args.skip:
        others["ml-100k"] = run("ml-100k", ['data.dataset="ml-100k"'], args.out, args.data_dir)["result"]
    if others:
        console.print(
            metrics_table(
                {name: r.test for name, r in others.items()}, "Same recipe, other datasets (test split)"
            )
        )
        for name, r in others.items():
            console.print(f"{name}: training {r.training.seconds:.0f}s, best epoch {r.training.best_epoch}")
    cold = None
    if "cold" not in args.skip:
        cold = run("beauty-cold", ['data.split="cold_item"'], args.out, args.data_dir)
        popularity = popularity_baseline(cold["config"], cold["data"])
        cold_result = cold["result"]
        console.print(
            metrics_table(
                {"two-tower": cold_result.test, "popularity": popularity},
                "Beauty cold-item split (10% of items unseen in training), test",
                keys=("recall@10", "recall@50", "ndcg@10"),
            )
        )

    console.rule("bars")
    test = result.test
    bar("Beauty Recall@10 >= 0.075", test["recall@10"] >= 0.075, f"{test['recall@10']:.4f}")
    bar("Beauty NDCG@10 >= 0.042", test["ndcg@10"] >= 0.042, f"{test['ndcg@10']:.4f}")
    bar(
        "Beauty training wall time <= 15 min",
        result.training.seconds <= 900,
        f"{result.training.seconds / 60:.1f} min ({result.training.epochs_run} epochs, best "
        f"{result.training.best_epoch})",
    )
    bar(
        "reloaded bundle reproduces test metrics exactly",
        reloaded == test,
        "identical" if reloaded == test else "differs",
    )
    if cold is not None:
        ours, theirs = cold["result"].test.get("cold_recall@50", 0.0), popularity.get("cold_recall@50", 0.0)
        bar("cold-item Recall@50 above popularity", ours > theirs, f"{ours:.4f} vs {theirs:.4f}")
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                name: {"test": r.test, "valid": r.valid, "training_seconds": r.training.seconds}
                for name, r in {**summary, **others}.items()
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
