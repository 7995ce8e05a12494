"""Checkpoints and --resume: a run killed with SIGKILL continues to the same final metrics, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import tiny_settings
from tests.integration.killed_train import train_killed_when

from recindex.config import load_config
from recindex.errors import BundleError, RecIndexError
from recindex.pipelines.experiment import run_experiment

# 600 users in batches of 64: 10 steps an epoch, so a checkpoint every 4 steps falls inside epochs
SETTINGS = [
    *tiny_settings("synthetic:n_users=600,n_items=150,seed=3", epochs=6),
    "train.patience=100",
    'train.device="cpu"',
    "train.checkpoint_every=4",
]


def _killed_after_first_checkpoint(out: Path) -> None:
    """SIGKILL `recindex train` as soon as it has written a checkpoint."""
    checkpoint = out / "checkpoint.pt"
    train_killed_when(out, SETTINGS, checkpoint.exists, "a checkpoint written")


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_runs_metrics(tmp_path):
    uninterrupted = run_experiment(load_config(None, SETTINGS), tmp_path / "whole", progress=False)
    out = tmp_path / "killed"
    _killed_after_first_checkpoint(out)
    with pytest.raises(BundleError, match="checkpoint of an unfinished run; pass --resume"):
        run_experiment(load_config(None, SETTINGS), out, progress=False)
    resumed = run_experiment(load_config(None, SETTINGS), out, progress=False, resume=True)
    assert resumed.test == uninterrupted.test
    assert resumed.valid == uninterrupted.valid
    losses = [record["loss"] for record in resumed.training.history]
    assert losses == [record["loss"] for record in uninterrupted.training.history]
    assert resumed.training.best_epoch == uninterrupted.training.best_epoch
    # the bundle replaced the folder, checkpoint included
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert json.loads((out / "metrics.json").read_text())["test"] == uninterrupted.test


def test_resume_refuses_other_settings_and_a_folder_without_checkpoint(tmp_path):
    out = tmp_path / "run"
    short = [*SETTINGS[:-1], "train.checkpoint_every=2", "train.epochs=1"]
    run_experiment(load_config(None, short), out, progress=False)  # a finished run: no checkpoint left
    with pytest.raises(RecIndexError, match="does not exist"):
        run_experiment(load_config(None, short), out, progress=False, resume=True)
    # a checkpoint of another run's settings
    from recindex.train.checkpoint import Checkpoints

    Checkpoints(out, 2, settings=json.dumps({"train": {"lr": 0.5}})).save({})
    with pytest.raises(RecIndexError, match=r"other settings \(.*train.lr"):
        run_experiment(load_config(None, short), out, progress=False, resume=True)
