"""URI checkpoints and --resume: a URI run killed with SIGKILL in any of its stages (the encoders, the
decoder, the ranker), or just after one ended, continues to exactly the uninterrupted run's index,
weights, losses and metrics; so does a two-stage run killed while its decoder learns fixed codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.conftest import tiny_settings
from tests.integration.killed_train import train_killed_when

from recindex.config import load_config
from recindex.pipelines.experiment import run_experiment

# 300 users in batches of 64: 5 steps an epoch for the encoders and the ranker, so a checkpoint every 3
# steps falls inside each of their epochs; the decoder's epochs are longer and each writes one.
URI = [
    *tiny_settings("synthetic:n_users=300,n_items=120,seed=3", epochs=2),
    "train.patience=100",
    'train.device="cpu"',
    "train.checkpoint_every=3",
    'model.kind="uri"',
    "model.dim=8",
    "uri.k=4",
    "uri.layers=2",
    "uri.layer_epochs=2",
    "uri.batch_size=128",
    'uri.start_from="kmeans"',
    "uri.start_epochs=1",
    "uri.final_epochs=2",
    "uri.ranker_epochs=2",
]
TWO_STAGE = [*URI, 'uri.index="kmeans"', "uri.layer_epochs=3"]
RUNS = {"uri": URI, "two-stage": TWO_STAGE}
# A run whose only checkpoints are the ends of its stages (a resumed run may change checkpoint_every).
STAGE_ENDS_ONLY = "train.checkpoint_every=1000000"


def _written_at(path: Path, stage: str, position: dict | None) -> bool:
    """Whether the checkpoint at `path` was written while `stage` trained, at a decoder `position` if
    one is given (such as {"layer": 1}: the second layer); position None: the checkpoint written at the
    end of the stage before, which holds no position of `stage`'s own."""
    try:
        payload = torch.load(path, weights_only=True)
    except FileNotFoundError:  # not written yet
        return False
    own = "decoder" if stage == "decoder" else "run"  # the decoder's position, or the trainer's
    if payload["uri"]["stage"] != stage:
        return False
    if position is None:
        return own not in payload
    return own in payload and all(payload["decoder"][key] == value for key, value in position.items())


def _killed_at(stage: str, position: dict | None, settings: list[str], out: Path) -> None:
    """SIGKILL `recindex train` once it has written a checkpoint in `stage` (at `position`)."""
    checkpoint = out / "checkpoint.pt"
    train_killed_when(
        out, settings, lambda: _written_at(checkpoint, stage, position), f"a checkpoint in the {stage} stage"
    )
    # the run resumes from there (it did not move on between the look and the kill)
    assert _written_at(checkpoint, stage, position)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run left alone, once per settings."""
    runs = {}

    def run(name: str):
        if name not in runs:
            out = tmp_path_factory.mktemp(name) / "whole"
            runs[name] = run_experiment(load_config(None, RUNS[name]), out, progress=False)
        return runs[name]

    return run


def _losses(history: list[dict]) -> list[tuple]:
    return [(sorted(record), record["loss"]) for record in history]


@pytest.mark.parametrize(
    ("name", "stage", "position"),
    [
        pytest.param("uri", "encoders", {}, id="uri-encoders"),
        # the second layer, once the first's codes are assigned
        pytest.param("uri", "decoder", {"phase": "uri", "layer": 1}, id="uri-decoder-layer2"),
        pytest.param("uri", "decoder", {"phase": "final"}, id="uri-decoder-final-fit"),
        pytest.param("uri", "ranker", {}, id="uri-ranker"),
        pytest.param("uri", "decoder", None, id="uri-after-encoders"),
        pytest.param("uri", "ranker", None, id="uri-after-decoder"),
        pytest.param("two-stage", "decoder", {}, id="two-stage-decoder"),
        pytest.param("two-stage", "decoder", None, id="two-stage-after-encoders"),  # its index fitted
    ],
)
def test_a_uri_run_killed_in_a_stage_resumes_to_the_uninterrupted_runs_metrics(
    name, stage, position, uninterrupted, tmp_path
):
    whole = uninterrupted(name)
    out = tmp_path / "killed"
    _killed_at(stage, position, RUNS[name] if position is not None else [*RUNS[name], STAGE_ENDS_ONLY], out)
    resumed = run_experiment(load_config(None, RUNS[name]), out, progress=False, resume=True)
    assert resumed.test == whole.test
    assert resumed.valid == whole.valid
    weights, expected = resumed.model.state_dict(), whole.model.state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)  # the index's codes too
    record = json.loads((out / "metrics.json").read_text())["uri"]
    whole_record = json.loads((whole.bundle_path / "metrics.json").read_text())["uri"]
    assert record.keys() == whole_record.keys()
    for part in ("decoder", "ranker"):
        assert _losses(record[part]["history"]) == _losses(whole_record[part]["history"])
    assert record["ranker"]["best_epoch"] == whole_record["ranker"]["best_epoch"]
    assert record.get("encoders", {}).get("best_epoch") == whole_record.get("encoders", {}).get("best_epoch")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.bundle_path.iterdir())
