"""One run end to end: load data, split, train, evaluate on validation and test, write a bundle."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recindex.bundle import Bundle, save_bundle
from recindex.config import ExperimentConfig
from recindex.data.interactions import Interactions
from recindex.data.registry import load_dataset
from recindex.data.splits import Split, make_split
from recindex.errors import RecIndexError
from recindex.eval.evaluate import evaluate_model
from recindex.models.two_tower import TwoTowerModel
from recindex.train.loop import Trainer, TrainResult, seed_everything


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    data: Interactions
    split: Split
    model: TwoTowerModel
    training: TrainResult
    valid: dict[str, float]
    test: dict[str, float]
    bundle_path: Path | None


def split_for(config: ExperimentConfig, data: Interactions) -> Split:
    return make_split(data, config.data.split, cold_share=config.data.cold_share, seed=config.data.split_seed)


def evaluate_split(
    model: TwoTowerModel, split: Split, which: str, config: ExperimentConfig, *, progress: bool = False
) -> dict[str, float]:
    """The protocol's metrics for one split part; training popularity is what 'popularity' refers to."""
    counts = np.bincount(split.train_items, minlength=model.n_items)
    return evaluate_model(
        model,
        split,
        which,
        counts,
        ks=config.eval.ks,
        exclude_seen=config.eval.exclude_seen,
        batch_size=config.eval.batch_size,
        progress=progress,
    ).metrics


def run_experiment(
    config: ExperimentConfig,
    out: Path | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    data: Interactions | None = None,
) -> ExperimentResult:
    data = data if data is not None else load_dataset(
        config.data.dataset, config.data.data_dir, numeric_buckets=config.data.numeric_buckets
    )
    split = split_for(config, data)
    seed_everything(config.train.seed, config.train.threads)  # weight initialisation is part of the run
    model = TwoTowerModel.for_data(data, config.model)
    extra: dict = {}
    if config.mfli.enabled and config.uri.enabled:
        raise RecIndexError("[mfli] and [uri] are both enabled; a run trains one of them")
    symmetric = config.sci.symmetric_weight > 0 or config.sci.consistency_weight > 0
    if symmetric and (config.mfli.enabled or config.uri.enabled):
        raise RecIndexError("[sci] training applies to the plain two-tower model; turn off [mfli] and [uri]")
    if config.uri.enabled:
        from recindex.generative.uri_run import train_uri

        model, extra = train_uri(config, data, split, progress=progress, log=log)
        training = TrainResult(
            best_epoch=extra["ranker"]["best_epoch"],
            epochs_run=extra["ranker"]["epochs_run"],
            seconds=sum(part.get("seconds", 0.0) for part in extra.values()),
            history=extra["ranker"]["history"],
        )
    elif config.mfli.enabled:
        from recindex.mfli.train import MFLITrainer, mfli_model, mfli_train_config, warm_start

        model = mfli_model(model, config.mfli)
        if config.mfli.init_from:
            warm_start(model, config.mfli.init_from, data, config.data, log)
        trainer = MFLITrainer(
            model,
            split,
            config.train,
            config.eval,
            mfli_train_config(config.mfli),
            progress=progress,
            log=log,
        )
    elif symmetric:
        from recindex.sci.train import SymmetricTrainer

        trainer = SymmetricTrainer(
            model, split, config.train, config.eval, config.sci, progress=progress, log=log
        )
    else:
        trainer = Trainer(model, split, config.train, config.eval, progress=progress, log=log)
    if not config.uri.enabled:
        training = trainer.fit()
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
            "seconds": training.seconds,
            "history": training.history,
        },
        "evaluation_seconds": time.perf_counter() - started,
        **({"uri": extra} if extra else {}),
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
    split = split_for(config, bundle.data)
    return evaluate_split(bundle.model, split, which, config, progress=progress)
