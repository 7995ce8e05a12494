"""One cell of an experiment: its bundle (trained, or read back from the cache), exact search on the
validation and test splits, and each index of the cell: the sweep on validation, the chosen settings
once on test. The results and the per-case ranks of every test configuration go to the cache
atomically; what is returned is the results."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recindex.bundle import Bundle
from recindex.data.interactions import Interactions
from recindex.data.registry import load_dataset
from recindex.data.splits import split_for
from recindex.eval.evaluate import evaluate_model
from recindex.eval.index_eval import evaluate_index
from recindex.experiments.cache import CellFiles, write_json_atomic, write_npz_atomic
from recindex.experiments.matrix import Cell
from recindex.experiments.measures import (
    case_subsets,
    partition_measures,
    popularity_configuration,
    subset_recalls,
)
from recindex.experiments.operating_points import choose, measure
from recindex.experiments.spec import EXACT, POPULARITY, IndexSweep
from recindex.index.base import BaseIndex
from recindex.index.item_attributes import item_attributes
from recindex.pipelines import load_bundle, make_index, run_experiment
from recindex.pipelines.indexes import bundle_material


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable: it crosses to another process)."""

    cell: Cell
    files: CellFiles
    init_bundle: Path | None  # the bundle the cell starts from, when it has one


def data_key(config) -> tuple:
    return (config.data.dataset, config.data.data_dir, config.data.numeric_buckets)


_DATA: dict[tuple, Interactions] = {}  # per process: a dataset is read once however many cells use it


def dataset_of(config) -> Interactions:
    key = data_key(config)
    if key not in _DATA:
        _DATA[key] = load_dataset(config.data.dataset, config.data.data_dir, numeric_buckets=key[2])
    return _DATA[key]


def run_cell(task: CellTask) -> dict[str, Any]:
    files, cell = task.files, task.cell
    started = time.perf_counter()
    config = cell.config
    if cell.init_setting is not None:
        section, key = cell.init_setting.split(".")
        part = dataclasses.replace(getattr(config, section), **{key: str(task.init_bundle)})
        config = dataclasses.replace(config, **{section: part})
    trained = not files.has_bundle()
    if trained:
        log_path = files.root / "train.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            run_experiment(
                config,
                files.bundle,
                progress=False,
                overwrite=True,
                data=dataset_of(config),
                log=lambda line: print(line, file=log, flush=True),
            )
    bundle = load_bundle(files.bundle)
    train_seconds = time.perf_counter() - started
    subsets = case_subsets(bundle)
    ks = config.eval.ks
    configurations, ranks = [_exact(bundle)], {}
    ranks["c0"] = configurations[0]["ranks"]
    configurations[0]["ranks"] = "c0"  # the arrays go to the .npz file, their names stay here
    configurations[0]["test"].update(subset_recalls(ranks["c0"], subsets, ks))
    operating: dict[str, Any] = {}
    for sweep in cell.indexes:
        if sweep.spec == POPULARITY:  # a baseline, not an index: nothing to sweep
            baseline = popularity_configuration(bundle, sweep.name)
            name = f"c{len(configurations)}"
            ranks[name] = baseline["ranks"]
            baseline["test"].update(subset_recalls(ranks[name], subsets, ks))
            configurations.append({**baseline, "ranks": name})
            continue
        index = bundle_index(bundle, sweep.spec)
        partitions = partition_measures(bundle, index)  # the same for every search setting
        points = measure(bundle, index, sweep)
        chosen = choose(points, sweep)
        operating[sweep.name] = {"points": [p.to_dict() for p in points], "chosen": [n for n, _ in chosen]}
        for number, reached in chosen:
            test = evaluate_index(
                bundle, index, "test", params=points[number].params, single_queries=sweep.single_queries
            )
            name = f"c{len(configurations)}"
            ranks[name] = test.ranks.astype(np.int32)
            configurations.append(
                {
                    "index": sweep.name,
                    "spec": sweep.spec,
                    "params": points[number].params,
                    "valid": points[number].metrics,
                    "test": {**test.index, **subset_recalls(test.ranks, subsets, ks)},
                    "cost": {**test.cost, **partitions},
                    "reached": reached,
                    "ranks": name,
                }
            )
    training = bundle.metrics["training"]
    result = {
        "cell": {
            "id": cell.id,
            "dataset": cell.dataset,
            "family": cell.family,
            "override": cell.override,
            "seed": cell.seed,
            "kind": config.model.kind,
            "depends_on": cell.depends_on,
        },
        "key": files.root.name,
        "evaluation_key": files.evaluation,
        "trained": trained,
        "config": config.to_dict(),
        "dataset": bundle.manifest["dataset"],
        "bundle_id": bundle.bundle_id,
        "training": {
            key: training[key] for key in ("seconds", "epochs_run", "best_epoch", "stopped", "history")
        },
        "configurations": configurations,
        "operating_points": operating,
        "seconds": {"train_or_load": train_seconds, "cell": time.perf_counter() - started},
    }
    write_npz_atomic(files.ranks, ranks)
    write_json_atomic(files.results, result)
    return result


def _exact(bundle: Bundle) -> dict[str, Any]:
    """Exact search: validation as the training run measured it, test read here with its ranks."""
    config = bundle.config
    split = split_for(config.data, bundle.data)
    counts = np.bincount(split.train_items, minlength=bundle.model.n_items)
    test = evaluate_model(
        bundle.model,
        split,
        "test",
        counts,
        ks=config.eval.ks,
        exclude_seen=config.eval.exclude_seen,
        batch_size=config.eval.batch_size,
    )
    n_items = float(bundle.model.n_items)
    return {
        "index": EXACT,
        "spec": EXACT,
        "params": {},
        "valid": bundle.metrics["valid"],
        "test": test.metrics,
        "cost": {"candidates_scored_per_query": n_items, "catalogue_size": n_items, "index_recall@10": 1.0},
        "reached": True,
        "ranks": test.ranks.astype(np.int32),
    }


def bundle_index(bundle: Bundle, spec: str) -> BaseIndex:
    """The bundle's items in an index of `spec`, built in memory with the material a learned backend
    takes from the bundle (what `recindex index build` would write to disk)."""
    material, defaults = bundle_material(bundle, spec, {})
    embedding = bundle.manifest["embedding"]
    index = make_index(
        spec, embedding["dim"], embedding["metric"], search_params=defaults or None, options=material
    )
    index.add(
        np.arange(len(bundle.item_embeddings)),
        bundle.item_embeddings,
        attributes=item_attributes(bundle.data),
    )
    return index


def read_results(files: CellFiles) -> dict[str, Any]:
    return json.loads(files.results.read_text(encoding="utf-8"))


def sweep_names(indexes: tuple[IndexSweep, ...]) -> list[str]:
    return [EXACT, *(sweep.name for sweep in indexes)]
