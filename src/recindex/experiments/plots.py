"""The report's figures, as PNG files: per dataset, the validation operating points of each index
(quality against queries per second and against candidates scored, mean over seeds), the training
curves (validation Recall@10 per epoch, one line per seed), and cold-item recall where a split has
cold items."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recindex.experiments.results import Run, params_text  # noqa: E402
from recindex.experiments.stats import spread  # noqa: E402


def _operating_curves(run: Run, dataset: str) -> dict[str, list[tuple[float, float, float]]]:
    """label -> [(quality, queries/s, candidates)] averaged over seeds per setting, cheapest first."""
    points: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for result in run.cells:
        cell = result["cell"]
        if cell["dataset"] != dataset:
            continue
        for index, sweep in result["operating_points"].items():
            label = f"{cell['family']} ({cell['override']}) + {index}"
            for point in sweep["points"]:
                points[(label, index)][params_text(point["params"])].append(point)
    curves = {}
    for (label, _), settings in points.items():
        rows = []
        for measured in settings.values():
            ms = np.mean([p["index_cost"]["batched_ms_per_query"] for p in measured])
            rows.append(
                (
                    float(np.mean([p["quality"] for p in measured])),
                    1000.0 / ms if ms > 0 else float("nan"),
                    float(np.mean([p["index_cost"]["candidates_scored_per_query"] for p in measured])),
                )
            )
        curves[label] = sorted(rows, key=lambda row: row[2])
    return curves


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def frontier_plots(run: Run, dataset: str, out: Path) -> list[Path]:
    curves = _operating_curves(run, dataset)
    if not curves:
        return []
    metric = next(iter(run.record["indexes"].values()))["select_metric"]
    made = []
    for x_name, column, filename in (
        ("queries / s (batched, validation)", 1, f"frontier_qps_{dataset}.png"),
        ("candidates scored per query", 2, f"recall_candidates_{dataset}.png"),
    ):
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for label, rows in curves.items():
            rows = sorted(rows, key=lambda row: row[column])  # a line from left to right
            axis.plot([r[column] for r in rows], [r[0] for r in rows], marker="o", label=label)
        axis.set_xscale("log")
        axis.set_xlabel(x_name)
        axis.set_ylabel(f"{metric} (validation)")
        axis.set_title(f"{dataset}: {metric} against {x_name.split(' (')[0]}, mean over seeds")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
        made.append(_save(figure, out / filename))
    return made


def training_plot(run: Run, dataset: str, out: Path) -> Path | None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab10").colors
    labels: dict[str, int] = {}
    for result in sorted(run.cells, key=lambda r: r["cell"]["id"]):
        cell = result["cell"]
        if cell["dataset"] != dataset:
            continue
        history = [
            (r["epoch"], r["valid_recall@10"])
            for r in result["training"]["history"]
            if "valid_recall@10" in r and "epoch" in r
        ]
        if not history:
            continue
        label = f"{cell['family']} ({cell['override']})"
        colour = colours[labels.setdefault(label, len(labels)) % len(colours)]
        first = cell["seed"] == min(
            r["cell"]["seed"] for r in run.cells if r["cell"]["family"] == cell["family"]
        )
        axis.plot(
            *zip(*history, strict=True), color=colour, alpha=0.8, linewidth=1, label=label if first else None
        )
    if not labels:
        plt.close(figure)
        return None
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation Recall@10")
    axis.set_title(f"{dataset}: training curves (one line per seed)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, out / f"training_{dataset}.png")


def cold_plot(run: Run, dataset: str, out: Path) -> Path | None:
    """Cold-item Recall@K (the deepest K measured) of every configuration, mean +- 95% CI."""
    rows = [row for row in run.rows if row.dataset == dataset]
    keys = sorted(
        {k for row in rows for c in row.seeds.values() for k in c["test"] if k.startswith("cold_recall@")},
        key=lambda k: int(k.split("@")[1]),
    )
    if not keys:
        return None
    metric = keys[-1]
    labels, means, errors = [], [], []
    for row in rows:
        summary = spread(row.values(metric).values())
        if summary.n:
            labels.append(f"{row.family} ({row.override})\n{row.index} {row.setting}".strip())
            means.append(summary.mean)
            errors.append(0.0 if np.isnan(summary.half_width) else summary.half_width)
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4.5))
    axis.bar(range(len(labels)), means, yerr=errors, capsize=4, color="tab:blue")
    axis.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30, ha="right")
    axis.set_ylabel(f"{metric} (test)")
    axis.set_title(f"{dataset}: cold items, mean ± 95% CI over seeds")
    return _save(figure, out / f"cold_{dataset}.png")
