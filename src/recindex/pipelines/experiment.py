"""One run end to end: load data, split, train the family `model.kind` names, evaluate on validation
and test, write a bundle.

Under torchrun (`train.distributed`) every process runs this: each trains on its share of the data, the
evaluation is sharded over them, and rank 0 alone writes the bundle. With `train.checkpoint_every` the
run's checkpoints go into the `--out` folder, and `resume` continues from the last one there."""

from __future__ import annotations

import dataclasses
import json
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
from recindex.errors import BundleError, RecIndexError
from recindex.eval.evaluate import evaluate_split
from recindex.models.devices import resolve_device
from recindex.models.two_tower import TwoTowerModel
from recindex.pipelines.families import family_of_config, start_loader
from recindex.pipelines.sharded_data import ShardedData, open_sharded
from recindex.train import distributed
from recindex.train.checkpoint import CHECKPOINT_NAME, Checkpoints
from recindex.train.distributed import CaseShards, Distributed
from recindex.train.loop import TrainResult, seed_everything
from recindex.train.request import TrainRequest

# Settings a resumed run may change: they do not change what it computes (on one machine), only how fast
# or how long, or where its data lie.
RESUMABLE_CHANGES = (
    "train.threads",
    "train.max_seconds",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.device",
    "data.data_dir",
)


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    data: Interactions  # with data.shard_users, the ids and features alone (the sequences stay in shards)
    split: Split | None  # None with data.shard_users: each shard was split on its own
    model: torch.nn.Module
    training: TrainResult
    valid: dict[str, float]
    test: dict[str, float]
    bundle_path: Path | None
    main: bool = True  # False on the other ranks under torchrun (rank 0 writes the bundle and reports)


def run_experiment(
    config: ExperimentConfig,
    out: Path | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    data: Interactions | None = None,
    resume: bool = False,
) -> ExperimentResult:
    """`resume`: continue the run whose checkpoint is in `out` (see `train.checkpoint`). With
    `data.shard_users` the split, the evaluation and the bundle's data go one user shard at a time
    (`pipelines.sharded_data`)."""
    context = distributed.from_environment()
    device = resolve_device(config.train.device, context.local_rank if context.active else None)
    checkpoints = _checkpoints(config, out, overwrite, resume)
    distributed.start(context, device)
    try:
        return _run(config, out, context, checkpoints, progress, log, overwrite, data)
    finally:
        distributed.stop(context)


def _run(
    config: ExperimentConfig,
    out: Path | None,
    context: Distributed,
    checkpoints: Checkpoints | None,
    progress: bool,
    log: Callable[[str], None] | None,
    overwrite: bool,
    data: Interactions | None,
) -> ExperimentResult:
    if not context.main:  # one rank reports
        progress, log = False, None
    if config.data.shard_users:
        if data is not None:
            raise RecIndexError("data.shard_users reads data.dataset from disk: pass no data to the run")
        sharded = open_sharded(config, context)
        try:
            skeleton = sharded.shards.skeleton
            return _run_on(config, out, context, checkpoints, progress, log, overwrite, skeleton, sharded)
        finally:
            sharded.close()
    data = (
        data
        if data is not None
        else load_dataset(
            config.data.dataset, config.data.data_dir, numeric_buckets=config.data.numeric_buckets
        )
    )
    return _run_on(config, out, context, checkpoints, progress, log, overwrite, data, None)


def _run_on(
    config: ExperimentConfig,
    out: Path | None,
    context: Distributed,
    checkpoints: Checkpoints | None,
    progress: bool,
    log: Callable[[str], None] | None,
    overwrite: bool,
    data: Interactions,
    sharded: ShardedData | None,
) -> ExperimentResult:
    family = family_of_config(config)
    load_start = start_loader(config, family)
    split = split_for(config.data, data) if sharded is None else None  # shards are split one by one
    seed_everything(config.train.seed, config.train.threads)  # weight initialisation is part of the run
    base = TwoTowerModel.for_data(data, config.model)
    request = TrainRequest(config, data, split, base, load_start, progress, log, context, checkpoints)
    request.sharded = sharded.batches if sharded is not None else None
    trained = family.train(request)
    model, training = trained.model, trained.training
    started = time.perf_counter()
    shard = CaseShards(context, _device_of(model)) if context.active else None
    if sharded is None:
        valid = evaluate_split(model, split, "valid", config, progress=progress, shard=shard)
        test = evaluate_split(model, split, "test", config, progress=progress, shard=shard)
    else:
        valid = sharded.evaluate(model, "valid", config, progress=progress, shard=shard)
        test = sharded.evaluate(model, "test", config, progress=progress, shard=shard)
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
    path = None
    if out is not None and context.main:
        # a checkpoint left in `out` was checked when the run began: the bundle replaces it
        stored = data if sharded is None else sharded.shards  # written shard by shard
        replace = overwrite or checkpoints is not None
        path = save_bundle(out, model, stored, config, metrics, overwrite=replace)
    distributed.barrier(context)
    model.cpu()
    return ExperimentResult(config, data, split, model, training, valid, test, path, context.main)


def _device_of(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _checkpoints(
    config: ExperimentConfig, out: Path | None, overwrite: bool, resume: bool
) -> Checkpoints | None:
    """Where the run's checkpoints go (None: nowhere), after checking `out` before any training: a
    folder that holds something (a bundle, or an unfinished run's checkpoint) is refused unless the run
    overwrites or resumes it."""
    if resume and out is None:
        raise RecIndexError("--resume continues the run in an --out folder; none was given")
    if resume and overwrite:
        raise RecIndexError("--resume and --overwrite contradict each other: choose one")
    if out is None:
        return None
    out = Path(out)
    if not resume and not overwrite and out.exists() and any(out.iterdir()):
        unfinished = (out / CHECKPOINT_NAME).is_file()
        raise BundleError(
            f"{out} holds the checkpoint of an unfinished run; pass --resume to continue it or --overwrite "
            "to start again"
            if unfinished
            else f"{out} already exists and is not empty; choose another --out or pass --overwrite"
        )
    every, minutes = config.train.checkpoint_every, config.train.checkpoint_minutes
    if every < 0 or minutes < 0:
        raise RecIndexError(
            f"train.checkpoint_every (steps) and train.checkpoint_minutes must be >= 0, "
            f"got {every} and {minutes}"
        )
    if every == 0 and minutes == 0 and not resume:
        return None
    settings = json.dumps(config.to_dict(), sort_keys=True)
    return Checkpoints(out, every, resume, settings, RESUMABLE_CHANGES, minutes=minutes)


def evaluate_bundle(
    bundle: Bundle, which: str = "test", exclude_seen: bool | None = None, *, progress: bool = False
) -> dict[str, float]:
    """Re-run the protocol on a loaded bundle's own data and split."""
    config = bundle.config
    if exclude_seen is not None and exclude_seen != config.eval.exclude_seen:
        config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, exclude_seen=exclude_seen))
    split = split_for(config.data, bundle.data)
    return evaluate_split(bundle.model, split, which, config, progress=progress)
