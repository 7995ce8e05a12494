"""MFLI under torchrun: two gloo processes train the facets and the codebook on tiny data (levels switched
on between epochs, by a k-means fit rank 0 makes for both), and rank 0 writes a bundle whose codebook is
complete, near the one-process run's metrics."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import tiny_settings
from tests.integration.test_distributed_training import _environment, _free_port

from recindex.config import load_config
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import run_experiment

MFLI = [
    'model.kind="mfli"',
    "mfli.quant_start=1",
    "mfli.level_gap=1",
    "mfli.codewords=4",
    'train.device="cpu"',
]


def test_mfli_trains_under_torchrun_with_its_codebook_levels(tmp_path):
    settings = [*tiny_settings("synthetic:n_users=150,n_items=60,seed=1", epochs=3), *MFLI]
    single = run_experiment(load_config(None, [*settings, "train.batch_size=64"]), None, progress=False)
    out = tmp_path / "bundle"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(_free_port()), "-m", "recindex", "train", "--out", str(out), "--quiet",
    ]  # fmt: skip
    overrides = [word for setting in [*settings, "train.batch_size=32"] for word in ("--set", setting)]
    run = subprocess.run(
        [*command, *overrides], env=_environment(), capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["epochs_run"] == single.training.epochs_run
    assert abs(metrics["test"]["recall@10"] - single.test["recall@10"]) <= 0.05
    bundle = load_bundle(out)
    assert int(bundle.model.active_levels) == bundle.model.codebook.shape[0] == 2
