"""Data-parallel training on the CPU: two gloo processes against one process with the same global batch.

The ranks run as subprocesses with torchrun's environment (one thread each), so the tests run where CI
runs: no GPU, two cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import tiny_settings
from tests.integration.distributed_setup import PER_RANK_BATCH, train_tiny

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        **(extra or {}),
    }


def _two_ranks(out: Path, gather: bool) -> list[dict]:
    environment = _environment({"WORLD_SIZE": "2"})
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), "1" if gather else "0"],
            env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for rank in ranks:
        _, errors = rank.communicate(timeout=600)  # ~10 s on two idle cores; generous for busy ones
        assert rank.returncode == 0, errors[-3000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def _timeless(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def test_two_gloo_ranks_train_as_one_process_with_their_global_batch(tmp_path):
    zero, one = _two_ranks(tmp_path, gather=True)
    # DDP keeps the replicas equal, every rank computes the same (sharded, gathered) validation, and
    # every rank holds the same logQ estimate
    assert all(torch.equal(zero["weights"][name], one["weights"][name]) for name in zero["weights"])
    assert _timeless(zero["history"]) == _timeless(one["history"])
    assert torch.equal(zero["interval"], one["interval"])
    trainer, single = train_tiny(2 * PER_RANK_BATCH, gather=True)
    # the gathered candidates are the global batch's positives, and the estimate of their chance to be
    # among them is the one process's, exactly (the global batches are the same)
    assert torch.equal(zero["interval"], trainer.frequency.interval)
    losses = [record["loss"] for record in zero["history"]]
    assert losses == pytest.approx([record["loss"] for record in single.history], rel=0.02)
    assert abs(zero["best_valid"]["recall@10"] - single.best_valid["recall@10"]) <= 0.05


def test_torchrun_trains_and_rank_zero_alone_writes_the_bundle(tmp_path):
    from recindex.config import load_config
    from recindex.pipelines.experiment import run_experiment

    settings = tiny_settings("synthetic:n_users=300,n_items=120,seed=1", epochs=2)
    single = run_experiment(
        load_config(None, [*settings, "train.batch_size=64", 'train.device="cpu"']), None, progress=False
    )
    out = tmp_path / "bundle"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(_free_port()), "-m", "recindex", "train", "--out", str(out), "--quiet",
    ]  # fmt: skip
    overrides = [word for setting in settings for word in ("--set", setting)]
    # each rank scores its own share of the batch (the other path of the negatives)
    local = ["train.batch_size=32", 'train.device="cpu"', "train.gather_negatives=false"]
    local = [word for setting in local for word in ("--set", setting)]
    run = subprocess.run(
        [*command, *overrides, *local], env=_environment(), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("bundle:") == 1  # one rank reports
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bundle"]  # no second or stray copy
    metrics = json.loads((out / "metrics.json").read_text())
    assert abs(metrics["test"]["recall@10"] - single.test["recall@10"]) <= 0.05
    assert metrics["training"]["epochs_run"] == single.training.epochs_run

