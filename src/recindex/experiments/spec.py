"""An experiment file (TOML) read into typed parts, every mistake named by file and key.

    [experiment]           name, description, config (a base run config, relative to this file),
                           seeds, metrics (reported: `recall@10` on test, `valid:recall@10` on
                           validation, a cost such as `candidates_scored_per_query`, or
                           `training_seconds`), set (settings of every cell, config-shaped)
    [datasets.NAME]        [data] settings of one dataset (dataset = "ml-100k", split = "cold_item", ...)
    [families.NAME]        kind (a model.kind; default: NAME), config, set, init_from (another family
                           whose bundle of the same dataset and seed starts this one), datasets
    [overrides.NAME]       set, families (the families it applies to; default: all)
    [indexes.NAME]         spec (as `recindex index build --backend`), families, sweep (param -> values),
                           params (fixed), choose (each | frontier | best | target), target,
                           select_metric, cost (time | candidates), single_queries;
                           spec = "popularity": the popularity baseline (no sweep)
    [[comparisons]]        name, a and b ({family, override, index, params}), metrics

Settings tables (`set`) have the shape of a run config: `set.train.epochs = 5`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from recindex.config import MODEL_KINDS
from recindex.errors import RecIndexError

Choose = Literal["each", "frontier", "best", "target"]
Cost = Literal["time", "candidates"]
EXACT = "exact"  # the index name of exact search over the bundle's vectors (always evaluated)
POPULARITY = "popularity"  # the index spec of the popularity baseline (most popular training items)


@dataclass(frozen=True)
class FamilySpec:
    name: str
    kind: str
    config: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    datasets: tuple[str, ...] | None = None  # None: every dataset


@dataclass(frozen=True)
class OverrideSpec:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    families: tuple[str, ...] | None = None  # None: every family


@dataclass(frozen=True)
class IndexSweep:
    name: str
    spec: str
    families: tuple[str, ...] | None = None
    sweep: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    choose: Choose = "each"
    target: float | None = None
    select_metric: str = "recall@10"
    cost: Cost = "time"
    single_queries: int = 0  # single-query latency sample per point (0: batched time only)

    def points(self) -> list[dict[str, Any]]:
        """Every search-parameter setting of the sweep (the fixed params in each)."""
        points: list[dict[str, Any]] = [dict(self.params)]
        for key, values in self.sweep.items():
            points = [{**point, key: value} for point in points for value in values]
        return points


@dataclass(frozen=True)
class Side:
    family: str
    override: str | None = None  # None: paired on every override both sides run
    index: str = EXACT
    params: dict[str, Any] | None = None  # restrict to these search parameters


@dataclass(frozen=True)
class Comparison:
    name: str
    a: Side
    b: Side
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class ExperimentSpec:
    path: Path
    name: str
    description: str
    config: Path | None
    seeds: int
    metrics: tuple[str, ...]
    settings: dict[str, Any]
    datasets: dict[str, dict[str, Any]]
    families: dict[str, FamilySpec]
    overrides: dict[str, OverrideSpec]
    indexes: dict[str, IndexSweep]
    comparisons: tuple[Comparison, ...]


class _Reader:
    """Typed access to one table, with errors that say `FILE [table] key: what was expected`."""

    def __init__(self, path: Path, where: str, table: Any, known: tuple[str, ...]):
        self.path, self.where = path, where
        if not isinstance(table, dict):
            self.fail(f"expected a table, got {table!r}")
        unknown = sorted(set(table) - set(known))
        if unknown:
            self.fail(f"unknown key(s) {unknown}; valid keys: {sorted(known)}")
        self.table = table

    def fail(self, message: str, key: str | None = None):
        at = f"{self.where} {key}" if key else self.where
        raise RecIndexError(f"{self.path}: {at}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False):
        if key not in self.table:
            if required:
                self.fail("is required", key)
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(f"expected {names}, got {value!r}", key)
        return value

    def names(self, key: str, choices: dict | None, what: str) -> tuple[str, ...] | None:
        values = self.get(key, list)
        if values is None:
            return None
        for value in values:
            if not isinstance(value, str) or (choices is not None and value not in choices):
                known = ", ".join(sorted(choices or ()))
                self.fail(f"{value!r} is not a {what} of this experiment (known: {known})", key)
        return tuple(values)

    def choice(self, key: str, literal: Any, default: str) -> str:
        value = self.get(key, str, default)
        if value not in get_args(literal):
            self.fail(f"{value!r} is not one of {', '.join(get_args(literal))}", key)
        return value

    def file(self, key: str) -> Path | None:
        value = self.get(key, str)
        if value is None:
            return None
        resolved = (self.path.parent / value).resolve()
        if not resolved.is_file():
            self.fail(f"{value!r} does not exist (read relative to the experiment file: {resolved})", key)
        return resolved


def load_spec(path: str | Path) -> ExperimentSpec:
    path = Path(path)
    if not path.is_file():
        raise RecIndexError(f"experiment file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RecIndexError(f"{path}: invalid TOML: {error}") from None
    top = _Reader(
        path, "top level", raw, ("experiment", "datasets", "families", "overrides", "indexes", "comparisons")
    )
    head = _Reader(
        path,
        "[experiment]",
        top.get("experiment", dict, required=True),
        ("name", "description", "config", "seeds", "metrics", "set"),
    )
    name = head.get("name", str, required=True)
    seeds = head.get("seeds", int, 3)
    if seeds < 1:
        head.fail(f"expected at least 1, got {seeds}", "seeds")
    metrics = tuple(head.get("metrics", list, ["recall@10", "ndcg@10"]))
    datasets = _datasets(path, top.get("datasets", dict, required=True))
    families = _families(path, top.get("families", dict, required=True), datasets)
    overrides = _overrides(path, top.get("overrides", dict, {}), families)
    indexes = _indexes(path, top.get("indexes", dict, {}), families)
    comparisons = tuple(
        _comparison(path, i, table, families, overrides, indexes, metrics)
        for i, table in enumerate(top.get("comparisons", list, []))
    )
    return ExperimentSpec(
        path.resolve(),
        name,
        head.get("description", str, ""),
        head.file("config"),
        seeds,
        metrics,
        head.get("set", dict, {}),
        datasets,
        families,
        overrides,
        indexes,
        comparisons,
    )


def _named_tables(path: Path, section: str, tables: dict) -> dict[str, dict]:
    if not tables:
        raise RecIndexError(f"{path}: [{section}] needs at least one [{section}.NAME] table")
    for name in tables:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise RecIndexError(f"{path}: [{section}.{name}]: use letters, digits, '-' and '_' in names")
    return tables


def _datasets(path: Path, tables: dict) -> dict[str, dict[str, Any]]:
    out = {}
    for name, table in _named_tables(path, "datasets", tables).items():
        reader = _Reader(
            path,
            f"[datasets.{name}]",
            table,
            ("dataset", "split", "cold_share", "split_seed", "numeric_buckets"),
        )
        reader.get("dataset", str, required=True)
        out[name] = dict(table)
    return out


def _families(path: Path, tables: dict, datasets: dict) -> dict[str, FamilySpec]:
    out = {}
    for name, table in _named_tables(path, "families", tables).items():
        reader = _Reader(
            path, f"[families.{name}]", table, ("kind", "config", "set", "init_from", "datasets")
        )
        kind = reader.get("kind", str, name)
        if kind not in MODEL_KINDS:
            reader.fail(f"{kind!r} is not a model.kind ({', '.join(MODEL_KINDS)})", "kind")
        out[name] = FamilySpec(
            name,
            kind,
            reader.file("config"),
            reader.get("set", dict, {}),
            reader.get("init_from", str),
            reader.names("datasets", datasets, "dataset"),
        )
    for family in out.values():
        if family.init_from is not None and family.init_from not in out:
            raise RecIndexError(
                f"{path}: [families.{family.name}] init_from: {family.init_from!r} is not a family of this "
                f"experiment (known: {', '.join(out)})"
            )
        if family.init_from == family.name:
            raise RecIndexError(
                f"{path}: [families.{family.name}] init_from: a family cannot start from itself"
            )
    return out


def _overrides(path: Path, tables: dict, families: dict) -> dict[str, OverrideSpec]:
    if not tables:
        return {"default": OverrideSpec("default")}
    out = {}
    for name, table in _named_tables(path, "overrides", tables).items():
        reader = _Reader(path, f"[overrides.{name}]", table, ("set", "families"))
        out[name] = OverrideSpec(
            name, reader.get("set", dict, {}), reader.names("families", families, "family")
        )
    return out


def _indexes(path: Path, tables: dict, families: dict) -> dict[str, IndexSweep]:
    out = {}
    for name, table in tables.items():
        if name == EXACT:
            raise RecIndexError(
                f"{path}: [indexes.{EXACT}]: exact search is always evaluated; use another name"
            )
        reader = _Reader(
            path,
            f"[indexes.{name}]",
            table,
            (
                "spec",
                "families",
                "sweep",
                "params",
                "choose",
                "target",
                "select_metric",
                "cost",
                "single_queries",
            ),
        )
        sweep = reader.get("sweep", dict, {})
        for key, values in sweep.items():
            if not isinstance(values, list) or not values:
                reader.fail(f"sweep.{key}: expected a non-empty list of values, got {values!r}", "sweep")
        choose = reader.choice("choose", Choose, "each")
        target = reader.get("target", float)
        if (choose == "target") != (target is not None):
            reader.fail('target is set exactly when choose = "target"', "target")
        single = reader.get("single_queries", int, 0)
        if not 0 <= single <= 10_000:
            reader.fail(f"expected 0 to 10000, got {single}", "single_queries")
        if table.get("spec") == POPULARITY and (sweep or table.get("params") or choose != "each"):
            reader.fail("the popularity baseline has no search parameters to sweep, fix or choose", "spec")
        out[name] = IndexSweep(
            name,
            reader.get("spec", str, required=True),
            reader.names("families", families, "family"),
            {key: tuple(values) for key, values in sweep.items()},
            reader.get("params", dict, {}),
            choose,
            target,
            reader.get("select_metric", str, "recall@10"),
            reader.choice("cost", Cost, "time"),
            single,
        )
    return out


def _comparison(path, number, table, families, overrides, indexes, metrics) -> Comparison:
    reader = _Reader(path, f"[[comparisons]] #{number + 1}", table, ("name", "a", "b", "metrics"))
    name = reader.get("name", str, required=True)
    reader.where = f"[[comparisons]] {name!r}"
    sides = []
    for key in ("a", "b"):
        side = _Reader(
            path,
            f"{reader.where} {key}",
            reader.get(key, dict, required=True),
            ("family", "override", "index", "params"),
        )
        family = side.get("family", str, required=True)
        if family not in families:
            side.fail(
                f"{family!r} is not a family of this experiment (known: {', '.join(families)})", "family"
            )
        override = side.get("override", str)
        if override is not None and override not in overrides:
            side.fail(f"{override!r} is not an override (known: {', '.join(overrides)})", "override")
        index = side.get("index", str, EXACT)
        if index != EXACT and index not in indexes:
            side.fail(f"{index!r} is not an index (known: {', '.join([EXACT, *indexes])})", "index")
        if index != EXACT and indexes[index].families and family not in indexes[index].families:
            side.fail(f"index {index!r} is not evaluated for family {family!r}", "index")
        sides.append(Side(family, override, index, side.get("params", dict)))
    return Comparison(name, sides[0], sides[1], tuple(reader.get("metrics", list, [metrics[0]])))
