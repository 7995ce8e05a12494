"""`recindex report RUN_DIR`: the run's tables (mean +- 95% CI over seeds of every metric the experiment
asks for, on the test split), its validation operating points, each named comparison with its paired
tests and verdict, its plots, and where it ran (machine, commit, exact command), as Markdown and as one
self-contained HTML page."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from recindex.experiments import plots
from recindex.experiments.render import Document, markdown, page
from recindex.experiments.results import Run, comparison_pairs, load_run, params_text
from recindex.experiments.stats import paired_seeds, paired_users, per_user_metric, spread

COST_COLUMNS = (
    ("candidates / query", "candidates_scored_per_query", 0),
    ("ms / query", "batched_ms_per_query", 3),
)


def write_report(run_dir: str | Path, out: Path | None = None) -> tuple[Path, Path]:
    """Write report.md (with its PNGs) and report.html into `out` (default RUN_DIR/report)."""
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    document = build(run, out)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(markdown(document, out), encoding="utf-8")
    html_path.write_text(page(document, f"recindex experiment {run.record['experiment']}"), encoding="utf-8")
    return md_path, html_path


def build(run: Run, out: Path) -> Document:
    record = run.record
    document = Document()
    document.heading(f"Experiment {record['experiment']}", 1)
    if record.get("description"):
        document.paragraph(record["description"])
    _provenance(document, run)
    datasets = [d for d in record["datasets"] if any(r.dataset == d for r in run.rows)]
    for dataset in datasets:
        _results_table(document, run, dataset)
        _operating_points(document, run, dataset, out)
    if record["comparisons"]:
        document.heading("Comparisons")
        document.paragraph(
            "Each difference is A - B on the test split, paired by seed (the mean and its 95% CI over seeds, "
            "a paired t-test) and, for per-user metrics, by user (a bootstrap over users of each user's "
            "difference averaged over the seeds). A verdict names a winner only at p < 0.05."
        )
        for comparison in record["comparisons"]:
            _comparison(document, run, comparison)
    for dataset in datasets:
        figures = [
            (plots.training_plot(run, dataset, out), "training curves"),
            (plots.cold_plot(run, dataset, out), "cold items"),
        ]
        for path, caption in figures:
            if path is not None:
                document.heading(f"{dataset}: {caption}", 3)
                document.image(path, f"{dataset}: {caption}")
    document.heading("Experiment file")
    document.paragraph(f"`{record['spec_file']}` as it was when the run started:")
    document.code(record["spec_text"].rstrip())
    return document


def _provenance(document: Document, run: Run) -> None:
    record = run.record
    machine, git = record["machine"], record["git"]
    dirty = f" (uncommitted changes in {len(git['dirty'])} file(s))" if git.get("dirty") else ""
    wall = record.get("wall_seconds")
    items = [
        f"command: `{record['command']}` (in {record['cwd']})",
        f"commit: {git.get('commit') or 'unknown'}{dirty}",
        f"machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), {machine['platform']}, "
        f"Python {machine['python']}; " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
        f"started {record['started']}"
        + (
            f", finished {record['finished']}, wall time {wall:.1f} s"
            if wall is not None
            else " (not finished)"
        ),
        f"seeds: {record['seeds']} (train.seed = 0..{record['seeds'] - 1}); {record['jobs']} job(s) of "
        f"{record['threads_per_job']} thread(s)",
        f"cells: {len(run.cells)} of {len(record['cells'])} finished"
        + (
            f"; trained in this run {record['trained']}, read from the cache {record['from_cache']}"
            if "trained" in record
            else ""
        ),
    ]
    earlier = record.get("invocations", [])[:-1]
    for invocation in earlier:
        items.append(
            f"earlier on this folder: `{invocation['command']}` at {invocation['started']}: "
            f"{invocation['wall_seconds']:.1f} s, {invocation['trained']} cell(s) trained, "
            f"{invocation['from_cache']} read from the cache"
        )
    for cell, error in (record.get("failed") or {}).items():
        items.append(f"FAILED {cell}: {error}")
    document.heading("Run")
    document.bullets(items)


def _results_table(document: Document, run: Run, dataset: str) -> None:
    metrics = run.record["metrics"]
    rows = [row for row in run.rows if row.dataset == dataset]
    seeds = max(len(row.seeds) for row in rows)
    document.heading(f"{dataset}: test split, mean ± 95% CI over {seeds} seed(s)")
    chosen = any(not row.setting or row.setting.startswith(("best", "target", "frontier")) for row in rows)
    headers = [
        "family",
        "override",
        "index",
        "setting",
        *(["chosen per seed"] if chosen else []),
        "seeds",
        *metrics,
        *(name for name, _, _ in COST_COLUMNS),
        "training s",
    ]
    table = []
    for row in rows:
        line = [row.family, row.override, row.index, row.setting]
        if chosen:
            line.append(", ".join(row.chosen_params()) if row.index != "exact" else "-")
        line.append(str(len(row.seeds)))
        line += [spread(row.values(metric).values()).text() for metric in metrics]
        for _, key, digits in COST_COLUMNS:
            line.append(spread(row.values(key).values()).text(digits))
        line.append(spread(row.values("training_seconds").values()).text(0))
        table.append(line)
    document.table(headers, table)
    missed = [row for row in rows if any(not c.get("reached", True) for c in row.seeds.values())]
    for row in missed:
        document.paragraph(
            f"{row.family} + {row.index}: no setting of the sweep reached the target on validation "
            "in some seed; the best one is reported."
        )


def _operating_points(document: Document, run: Run, dataset: str, out: Path) -> None:
    grouped: dict[tuple[str, str, str], dict[str, list]] = {}
    for result in run.cells:
        cell = result["cell"]
        if cell["dataset"] != dataset:
            continue
        for index, sweep in result["operating_points"].items():
            settings = grouped.setdefault((cell["family"], cell["override"], index), {})
            for number, point in enumerate(sweep["points"]):
                entry = settings.setdefault(params_text(point["params"]), [[], [], 0])
                entry[0].append(point["quality"])
                entry[1].append(point["cost"])
                entry[2] += number in sweep["chosen"]
    if not grouped:
        return
    document.heading(f"{dataset}: validation operating points", 3)
    indexes = run.record["indexes"]
    table = []
    for (family, override, index), settings in grouped.items():
        sweep = indexes[index]
        for params, (quality, cost, chosen) in settings.items():
            table.append(
                [
                    f"{family} ({override})",
                    index,
                    params,
                    spread(quality).text(),
                    f"{spread(cost).text(3)} {'ms' if sweep['cost'] == 'time' else 'cand.'}",
                    f"{chosen} of {len(quality)}",
                ]
            )
    document.paragraph(
        "Each index's sweep on the validation split (quality: its select_metric; cost: batched ms per "
        "query or candidates scored), mean over seeds; 'chosen' counts the seeds in which the setting was "
        "read on test."
    )
    document.table(["cell", "index", "params", "quality", "cost", "chosen"], table)
    for path in plots.frontier_plots(run, dataset, out):
        document.image(path, path.stem.replace("_", " "))


def _side_name(side: dict) -> str:
    name = side["family"] if side["index"] == "exact" else f"{side['family']}+{side['index']}"
    return f"{name} ({side['override']})" if side.get("override") else name


def _comparison(document: Document, run: Run, comparison: dict) -> None:
    name_a, name_b = _side_name(comparison["a"]), _side_name(comparison["b"])
    if name_a == name_b:
        name_a, name_b = f"A ({name_a})", f"B ({name_b})"
    document.heading(f"{comparison['name']}: A = {name_a}, B = {name_b}", 3)
    pairs, notes = comparison_pairs(run, comparison)
    table = []
    for pair in pairs:
        seeds = pair.seeds
        for metric in comparison["metrics"]:
            a_values, b_values = pair.a.values(metric), pair.b.values(metric)
            paired = [s for s in seeds if s in a_values and s in b_values]
            if not paired:
                continue
            a = [a_values[s] for s in paired]
            b = [b_values[s] for s in paired]
            test = paired_seeds(a, b, name_a, name_b)
            users = _users(run, pair, paired, metric, name_a, name_b)
            table.append(
                [
                    pair.dataset,
                    pair.label,
                    metric,
                    spread(a).text(),
                    spread(b).text(),
                    test.difference.text(),
                    "-" if math.isnan(test.p_value) else f"{test.p_value:.3g}",
                    users[0],
                    test.verdict,
                    users[1],
                ]
            )
    if table:
        document.table(
            [
                "dataset",
                "pair",
                "metric",
                "A",
                "B",
                "A - B",
                "paired t p",
                "users: A - B [95% CI], p",
                "verdict (seeds)",
                "verdict (users)",
            ],
            table,
        )
    else:
        document.paragraph("No configurations of this run to pair.")
    for note in notes:
        document.paragraph(f"Not paired: {note}.")


def _users(run: Run, pair, seeds: list[int], metric: str, name_a: str, name_b: str) -> tuple[str, str]:
    try:
        a = [per_user_metric(run.ranks(pair.a, s), metric) for s in seeds]
        b = [per_user_metric(run.ranks(pair.b, s), metric) for s in seeds]
    except (OSError, KeyError):
        return "-", "ranks not stored"
    if a[0] is None or any(len(x) != len(a[0]) for x in (*a, *b)):
        return "-", "not a per-user metric"
    test = paired_users(np.stack(a), np.stack(b), name_a, name_b)
    return f"{test.difference:+.4f} [{test.low:+.4f}, {test.high:+.4f}], p={test.p_value:.3g}", test.verdict


def chosen_counts(run: Run) -> Counter:
    """How many configurations of each index were read on test (a check that the test split was read
    once per chosen configuration)."""
    return Counter(c["index"] for result in run.cells for c in result["configurations"])
