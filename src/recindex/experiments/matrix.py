"""The experiment's matrix expanded into cells: datasets x families x overrides x seeds, each with its
resolved run config and the cell whose bundle it starts from (`init_from`).

A cell's config is, from the bottom: the family's base config file (else the experiment's), the
experiment's `set`, the dataset's [data] settings, the family's `set`, the override's `set`, and the seed
(`train.seed` = 0, 1, ... N-1). Its `init_from` cell is the named family's cell of the same dataset and
seed, under the same override when that family runs it, else under that family's first override.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recindex.config import ExperimentConfig, from_dict
from recindex.errors import RecIndexError
from recindex.experiments.spec import ExperimentSpec, IndexSweep
from recindex.pipelines import FAMILIES
from recindex.pipelines.indexes import check_index


@dataclass(frozen=True)
class Cell:
    dataset: str
    family: str
    override: str
    seed: int
    config: ExperimentConfig  # init_from settings still empty: the runner fills in the bundle's path
    depends_on: str | None  # the id of the cell whose bundle starts this one
    init_setting: str | None  # the setting that names that bundle ("mfli.init_from")
    indexes: tuple[IndexSweep, ...]

    @property
    def id(self) -> str:
        return f"{self.dataset}.{self.family}.{self.override}.s{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.dataset} / {self.family} / {self.override} / seed {self.seed}"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RecIndexError(f"{path}: invalid TOML: {error}") from None


def _overrides_of(spec: ExperimentSpec, family: str) -> list[str]:
    return [name for name, o in spec.overrides.items() if o.families is None or family in o.families]


def expand(
    spec: ExperimentSpec, seeds: int | None = None, *, data_dir: str | None = None, threads: int = 1
) -> list[Cell]:
    """Every cell, dependencies before the cells that start from them."""
    seeds = spec.seeds if seeds is None else seeds
    if seeds < 1:
        raise RecIndexError(f"--seeds must be at least 1, got {seeds}")
    cells: dict[str, Cell] = {}
    for family_name in _family_order(spec):
        family = spec.families[family_name]
        base = _read_toml(family.config or spec.config)
        for dataset, data in spec.datasets.items():
            if family.datasets is not None and dataset not in family.datasets:
                continue
            for override in _overrides_of(spec, family_name):
                raw = deep_merge(base, spec.settings)
                raw = deep_merge(raw, {"data": data})
                raw = deep_merge(raw, family.settings)
                raw = deep_merge(raw, spec.overrides[override].settings)
                raw = deep_merge(raw, {"model": {"kind": family.kind}})
                raw = deep_merge(raw, {"train": {"threads": threads}})
                if data_dir is not None:
                    raw = deep_merge(raw, {"data": {"data_dir": data_dir}})
                depends, setting = _dependency(spec, family_name, dataset, override, cells)
                if setting is not None:
                    section, key = setting.split(".")
                    raw = deep_merge(raw, {section: {key: ""}})  # the runner names the bundle
                where = f"{spec.path} cell {dataset}/{family_name}/{override}"
                indexes = tuple(
                    sweep
                    for sweep in spec.indexes.values()
                    if sweep.families is None or family_name in sweep.families
                )
                for seed in range(seeds):
                    seeded = deep_merge(raw, {"train": {"seed": seed}})
                    config = from_dict(seeded, where, check_index)
                    dep_id = (
                        None
                        if depends is None
                        else f"{dataset}.{spec.families[family.init_from].name}.{depends}.s{seed}"
                    )
                    cell = Cell(dataset, family_name, override, seed, config, dep_id, setting, indexes)
                    cells[cell.id] = cell
    return list(cells.values())


def _family_order(spec: ExperimentSpec) -> list[str]:
    """Families with the ones others start from first (init_from chains, cycles refused)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise RecIndexError(f"{spec.path}: [families] init_from forms a cycle through {name!r}")
        visiting.add(name)
        parent = spec.families[name].init_from
        if parent is not None:
            visit(parent)
        order.append(name)

    for name in spec.families:
        visit(name)
    return order


def _dependency(spec, family_name, dataset, override, cells) -> tuple[str | None, str | None]:
    family = spec.families[family_name]
    if family.init_from is None:
        return None, None
    setting = FAMILIES[family.kind].init_from
    if setting is None:
        raise RecIndexError(
            f"{spec.path}: [families.{family_name}] init_from: a {family.kind!r} run does not start from "
            "another bundle"
        )
    parent = family.init_from
    runs = _overrides_of(spec, parent)
    chosen = override if override in runs else runs[0]
    if f"{dataset}.{parent}.{chosen}.s0" not in cells:
        raise RecIndexError(
            f"{spec.path}: [families.{family_name}] init_from {parent!r}: "
            f"it is not run on dataset {dataset!r}"
        )
    return chosen, setting
