"""A finished (or partly finished) run read back from its folder, grouped for the report: each reported
configuration (dataset, family, override, index, setting) with its values per seed, and the pairs each
named comparison compares.

A configuration's setting is the sweep's own parameters (`nprobe=8`) when the index reports every
setting; with a setting chosen per seed on validation (`best`, `target`, `frontier`) it is the rule, and
the settings chosen in each seed are listed beside it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recindex.errors import RecIndexError
from recindex.experiments.spec import EXACT


@dataclass
class Row:
    """One reported configuration over its seeds."""

    dataset: str
    family: str
    override: str
    index: str
    setting: str
    seeds: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> configuration (+ cell)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.dataset, self.family, self.override, self.index, self.setting)

    def values(self, metric: str, split: str = "test") -> dict[int, float]:
        return {
            seed: value
            for seed, c in self.seeds.items()
            if (value := metric_of(c, metric, split)) is not None
        }

    def chosen_params(self) -> list[str]:
        return sorted({params_text(c["params"]) for c in self.seeds.values()})


@dataclass
class Run:
    folder: Path
    record: dict[str, Any]
    cells: list[dict[str, Any]]
    rows: list[Row]

    def ranks(self, row: Row, seed: int) -> np.ndarray:
        configuration = row.seeds[seed]
        with np.load(self.folder / "cells" / f"{configuration['cell_id']}.npz") as stored:
            return stored[configuration["ranks"]]


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(params.items())) or "-"


def metric_of(configuration: dict[str, Any], metric: str, split: str = "test") -> float | None:
    """A metric of one configuration: `recall@10` on the test split, `valid:recall@10` on validation
    (through the index, for an index), a cost (`candidates_scored_per_query`), or `training_seconds`."""
    if metric == "training_seconds":
        return configuration["training_seconds"]
    if metric.startswith("valid:"):
        split, metric = "valid", metric.removeprefix("valid:")
    metrics = configuration.get(split) or {}
    if metric in metrics:
        return float(metrics[metric])
    if metric == "mrr":  # through an index MRR is cut at the index's depth (mrr@100)
        found = [key for key in metrics if key.startswith("mrr@")]
        if found:
            return float(metrics[found[0]])
    cost = configuration.get("cost") or {}
    return float(cost[metric]) if metric in cost else None


def load_run(folder: str | Path) -> Run:
    folder = Path(folder)
    path = folder / "run.json"
    if not path.is_file():
        raise RecIndexError(
            f"{folder} is not a run folder: it has no run.json (made by 'recindex experiment run')"
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for entry in record["cells"]:
        cell_path = folder / "cells" / f"{entry['id']}.json"
        if cell_path.is_file():
            cells.append(json.loads(cell_path.read_text(encoding="utf-8")))
    if not cells:
        raise RecIndexError(f"{folder}: no cell has finished yet (cells/*.json)")
    return Run(folder, record, cells, _rows(cells, record["indexes"]))


def _setting(configuration: dict[str, Any], indexes: dict[str, dict], position: int) -> str:
    name = configuration["index"]
    if name == EXACT:
        return "-"
    sweep = indexes[name]
    if sweep["choose"] == "each":
        swept = {key: value for key, value in configuration["params"].items() if key in sweep["sweep"]}
        return params_text(swept)
    if sweep["choose"] == "frontier":
        return f"frontier #{position + 1}"
    return f"{sweep['choose']} {sweep['select_metric']}" + (
        f" >= {sweep['target']:g}" if sweep["target"] else ""
    )


def _rows(cells: list[dict[str, Any]], indexes: dict[str, dict]) -> list[Row]:
    rows: dict[tuple, Row] = {}
    for result in cells:
        cell = result["cell"]
        positions: dict[str, int] = defaultdict(int)
        for configuration in result["configurations"]:
            setting = _setting(configuration, indexes, positions[configuration["index"]])
            positions[configuration["index"]] += 1
            key = (cell["dataset"], cell["family"], cell["override"], configuration["index"], setting)
            row = rows.setdefault(key, Row(*key))
            row.seeds[cell["seed"]] = {
                **configuration,
                "cell_id": cell["id"],
                "training_seconds": result["training"]["seconds"],
            }
    return list(rows.values())


@dataclass
class Pair:
    """Two configurations a named comparison compares on one dataset."""

    dataset: str
    label: str  # override and setting(s)
    a: Row
    b: Row

    @property
    def seeds(self) -> list[int]:
        return sorted(set(self.a.seeds) & set(self.b.seeds))


def _side_rows(run: Run, side: dict, dataset: str, override: str) -> list[Row]:
    rows = [
        row
        for row in run.rows
        if (row.dataset, row.family, row.override, row.index)
        == (dataset, side["family"], override, side["index"])
    ]
    if side.get("params"):
        wanted = {key: value for key, value in side["params"].items()}
        rows = [
            r
            for r in rows
            if all(c["params"].get(k) == v for c in r.seeds.values() for k, v in wanted.items())
        ]
    return rows


def comparison_pairs(run: Run, comparison: dict) -> tuple[list[Pair], list[str]]:
    """The pairs of one comparison on every dataset, and notes on what could not be paired."""
    a, b = comparison["a"], comparison["b"]
    pairs, notes = [], []
    for dataset in run.record["datasets"]:
        runs_a = {r.override for r in run.rows if (r.dataset, r.family) == (dataset, a["family"])}
        runs_b = {r.override for r in run.rows if (r.dataset, r.family) == (dataset, b["family"])}
        if not runs_a or not runs_b:
            continue
        for override_a, override_b in _override_pairs(a.get("override"), b.get("override"), runs_a, runs_b):
            rows_a = _side_rows(run, a, dataset, override_a)
            rows_b = _side_rows(run, b, dataset, override_b)
            where = override_a if override_a == override_b else f"{override_a} vs {override_b}"
            matched = _match_settings(rows_a, rows_b)
            if not matched:
                notes.append(
                    f"{dataset} ({where}): no settings to pair ({len(rows_a)} vs {len(rows_b)} rows)"
                )
            for row_a, row_b in matched:
                settings = dict.fromkeys(s for s in (row_a.setting, row_b.setting) if s != "-")
                setting = " vs ".join(settings) or "-"
                pairs.append(Pair(dataset, f"{where}, {setting}" if setting != "-" else where, row_a, row_b))
    return pairs, notes


def _override_pairs(fixed_a, fixed_b, runs_a: set[str], runs_b: set[str]) -> list[tuple[str, str]]:
    if fixed_a is None and fixed_b is None:
        return [(o, o) for o in sorted(runs_a & runs_b)]

    def resolve(fixed, other, runs):
        if fixed is not None:
            return fixed
        return other if other in runs else sorted(runs)[0]

    return [(resolve(fixed_a, fixed_b, runs_a), resolve(fixed_b, fixed_a, runs_b))]


def _match_settings(rows_a: list[Row], rows_b: list[Row]) -> list[tuple[Row, Row]]:
    """Equal settings where both sides have several (`nprobe=8` with `nprobe=8`); one side's single
    setting against each of the other's otherwise."""
    by_a = {r.setting: r for r in rows_a}
    by_b = {r.setting: r for r in rows_b}
    common = [s for s in by_a if s in by_b]
    if len(by_a) > 1 and len(by_b) > 1:
        return [(by_a[s], by_b[s]) for s in common]
    if len(by_a) == 1:
        return [(rows_a[0], row) for row in rows_b]
    if len(by_b) == 1:
        return [(row, rows_b[0]) for row in rows_a]
    return []
