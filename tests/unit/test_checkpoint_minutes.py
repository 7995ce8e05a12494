"""Checkpoints by minutes (`train.checkpoint_minutes`), with a fake clock: one is written after the first
step that ends that many minutes after the last checkpoint (or the start of training)."""

from __future__ import annotations

import torch

from recindex.config import EvalConfig, ModelConfig, TrainConfig
from recindex.data.splits import leave_one_out
from recindex.models.two_tower import TwoTowerModel
from recindex.train.checkpoint import Checkpoints
from recindex.train.loop import Trainer, seed_everything


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_checkpoint_is_due_once_the_minutes_have_passed_since_the_last(tmp_path):
    clock = FakeClock()
    checkpoints = Checkpoints(tmp_path, minutes=1.5, clock=clock)
    checkpoints.saved()
    clock.now = 89.0
    assert not checkpoints.time_due()
    clock.now = 90.0
    assert checkpoints.time_due()
    checkpoints.saved()
    clock.now = 179.0
    assert not checkpoints.time_due()
    assert not Checkpoints(tmp_path, every=5, clock=clock).time_due()  # steps only: never by time


def test_training_writes_a_checkpoint_every_time_the_minutes_pass(tmp_path, tiny_synthetic):
    seed_everything(0, 1)
    model = TwoTowerModel.for_data(tiny_synthetic, ModelConfig(dim=8, max_len=10))
    clock = FakeClock()
    config = TrainConfig(epochs=2, batch_size=64, negatives="in_batch", threads=1, device="cpu", patience=5)
    checkpoints = Checkpoints(tmp_path, minutes=1.0, clock=clock)
    trainer = Trainer(
        model,
        leave_one_out(tiny_synthetic),
        config,
        EvalConfig(ks=(10,)),
        progress=False,
        checkpoints=checkpoints,
    )
    steps, saved = [], []
    train_step, save = trainer.train_step, trainer._save

    def timed_step(batch, optimizer):  # every step takes 25 s of the fake clock
        clock.now += 25.0
        steps.append(len(steps) + 1)
        return train_step(batch, optimizer)

    def recorded_save(optimizer, run):
        saved.append(run.step)
        save(optimizer, run)

    trainer.train_step, trainer._save = timed_step, recorded_save
    trainer.fit()
    # 25, 50, 75 s: the third step is the first a minute after the start; then every third again
    assert len(steps) >= 6
    assert saved == list(range(3, len(steps) + 1, 3))
    payload = torch.load(checkpoints.path, weights_only=True)
    assert payload["run"]["step"] == saved[-1]
