"""One run end to end: load data, split, train the family `model.kind` names, evaluate on validation
and test, write a bundle."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from recindex.bundle import Bundle, save_bundle
from recindex.config import ExperimentConfig
from recindex.data.interactions import Interactions
from recindex.data.registry import load_dataset
from recindex.data.splits import Split, split_for
from recindex.eval.evaluate import evaluate_split
from recindex.models.two_tower import TwoTowerModel
from recindex.pipelines.families import family_of_config, start_loader
from recindex.train.loop import TrainResult, seed_everything
from recindex.train.request import TrainRequest


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    data: Interactions
    split: Split
    model: torch.nn.Module
    training: TrainResult
    valid: dict[str, float]
    test: dict[str, float]
    bundle_path: Path | None


def run_experiment(
    config: ExperimentConfig,
    out: Path | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    data: Interactions | None = None,
) -> ExperimentResult:
    family = family_of_config(config)
    load_start = start_loader(config, family)
    data = data if data is not None else load_dataset(
        config.data.dataset, config.data.data_dir, numeric_buckets=config.data.numeric_buckets
    )
    split = split_for(config.data, data)
    seed_everything(config.train.seed, config.train.threads)  # weight initialisation is part of the run
    base = TwoTowerModel.for_data(data, config.model)
    trained = family.train(TrainRequest(config, data, split, base, load_start, progress, log))
    model, training = trained.model, trained.training
    started = time.perf_counter()
    valid = evaluate_split(model, split, "valid", config, progress=progress)
    test = evaluate_split(model, split, "test", config, progress=progress)
    metrics = {
        "valid": valid,
        "test": test,
        "exclude_seen": config.eval.exclude_seen,
        "split": config.data.split,
        "training": {
            "best_epoch": training.best_epoch,
            "epochs_run": training.epochs_run,
            "stopped": training.stopped,
            "seconds": training.seconds,
            "history": training.history,
        },
        "evaluation_seconds": time.perf_counter() - started,
        **({family.kind: trained.extra} if trained.extra else {}),
    }
    path = save_bundle(out, model, data, config, metrics, overwrite=overwrite) if out is not None else None
    return ExperimentResult(config, data, split, model, training, valid, test, path)


def evaluate_bundle(
    bundle: Bundle, which: str = "test", exclude_seen: bool | None = None, *, progress: bool = False
) -> dict[str, float]:
    """Re-run the protocol on a loaded bundle's own data and split."""
    config = bundle.config
    if exclude_seen is not None and exclude_seen != config.eval.exclude_seen:
        config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, exclude_seen=exclude_seen))
    split = split_for(config.data, bundle.data)
    return evaluate_split(bundle.model, split, which, config, progress=progress)
