"""`train.max_seconds` / `recindex train --max-time`: training stops when the time is up and keeps the
best epoch so far, in the two-tower trainer and in the trainers built on it (MFLI, SCI)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from recindex.cli import app, parse_duration
from recindex.config import EvalConfig, ModelConfig, TrainConfig, load_config
from recindex.data.splits import leave_one_out
from recindex.errors import RecIndexError
from recindex.models.two_tower import TwoTowerModel
from recindex.pipelines.experiment import run_experiment
from recindex.train import loop
from recindex.train.batches import n_batches, sequence_examples
from recindex.train.loop import Trainer, seed_everything

DATASET = "synthetic:n_users=150,n_items=60,n_attributes=10,seed=7"


class BatchClock:
    """Stands in for the `time` module of the training loop: one second passes per training batch."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class TimedTrainer(Trainer):
    clock: BatchClock

    def _loss(self, batch):
        self.clock.now += 1.0
        return super()._loss(batch)


def _fit(data, epochs: int, max_seconds: float, clock: BatchClock):
    split = leave_one_out(data)
    seed_everything(0, 1)
    model = TwoTowerModel.for_data(data, ModelConfig(dim=16, max_len=10))
    config = TrainConfig(
        epochs=epochs, batch_size=64, uniform_negatives=16, patience=50, threads=1, max_seconds=max_seconds
    )
    trainer = TimedTrainer(model, split, config, EvalConfig(), progress=False)
    trainer.clock = clock
    return model, trainer.fit(), trainer


def test_the_time_limit_stops_mid_epoch_and_keeps_the_best_epoch(tiny_synthetic, monkeypatch):
    clock = BatchClock()
    monkeypatch.setattr(loop, "time", clock)
    steps = n_batches(sequence_examples(leave_one_out(tiny_synthetic), tiny_synthetic.n_users,
                                        tiny_synthetic.n_items, 10), 64)
    # Time runs out one batch into the second epoch.
    model, result, _ = _fit(tiny_synthetic, epochs=10, max_seconds=steps + 0.5, clock=clock)
    assert (result.stopped, result.epochs_run, result.best_epoch) == ("time", 1, 1)
    assert [int(r["epoch"]) for r in result.history] == [1]
    once, full, _ = _fit(tiny_synthetic, epochs=1, max_seconds=0.0, clock=BatchClock())
    assert full.stopped == "epochs"
    for name, value in once.state_dict().items():  # the weights are epoch 1's, not the half-epoch's
        torch.testing.assert_close(model.state_dict()[name], value)


def test_without_a_limit_training_runs_every_epoch(tiny_synthetic, monkeypatch):
    clock = BatchClock()
    monkeypatch.setattr(loop, "time", clock)
    _, result, _ = _fit(tiny_synthetic, epochs=3, max_seconds=0.0, clock=clock)
    assert (result.stopped, result.epochs_run) == ("epochs", 3)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ['model.kind="mfli"', "mfli.codewords=4", "mfli.quant_start=0", "mfli.level_gap=0"],
        ["sci.symmetric_weight=0.1"],
    ],
    ids=["two_tower", "mfli", "sci"],
)
def test_every_trainer_stops_for_time_and_the_bundle_says_so(extra, tmp_path):
    settings = [
        f'data.dataset="{DATASET}"',
        "model.dim=16",
        "model.max_len=10",
        "train.epochs=20",
        "train.patience=50",
        "train.batch_size=64",
        "train.threads=1",
        "train.uniform_negatives=16",
        "train.max_seconds=0.000001",
        *extra,
    ]
    result = run_experiment(load_config(None, settings), tmp_path / "bundle", progress=False)
    assert (result.training.stopped, result.training.epochs_run, result.training.best_epoch) == ("time", 1, 1)
    metrics = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    assert metrics["training"]["stopped"] == "time"


def test_max_time_on_the_command_line(tmp_path):
    assert [parse_duration(t, "--max-time") for t in ("45", "90s", "30m", "1.5h")] == [45, 90, 1800, 5400]
    for bad in ("0", "-3m", "10 minutes", "m", ""):
        with pytest.raises(RecIndexError, match="--max-time"):
            parse_duration(bad, "--max-time")
    args = ["train", "--out", str(tmp_path / "b"), "--quiet", "--max-time", "0.000001s"]
    for setting in [f'data.dataset="{DATASET}"', "model.dim=16", "model.max_len=10", "train.epochs=20",
                    "train.threads=1", "train.uniform_negatives=16"]:
        args += ["--set", setting]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best epoch 1 of 1 (stopped by --max-time)" in result.output
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["training"]["stopped"] == "time"
