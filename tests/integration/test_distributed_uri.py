"""URI under torchrun: two gloo processes (one thread each) train the decoder, its learned index and the
ranker on tiny data, against one process with their global batch.

Both ranks must end with the same model: the same decoder and ranker weights and the same item codes,
which rank 0's balanced assignment gives every rank at the end of each layer. The two-process run must
also learn what one process learns: from the same two-tower start, its decoder losses follow the one
process's while both hold the same index, and its retrieval metrics are near."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import tiny_settings
from tests.integration.test_distributed_training import _environment, _timeless

from recindex.config import load_config
from recindex.pipelines.experiment import run_experiment

WORKER = Path(__file__).with_name("uri_distributed_worker.py")
DATASET = "synthetic:n_users=150,n_items=80,n_attributes=10,seed=3"
URI = [
    'model.kind="uri"',
    'train.device="cpu"',
    "uri.k=4",
    "uri.layers=2",
    "uri.layer_epochs=2",
    'uri.start_from="kmeans"',  # each layer starts on balanced k-means tokens: a fit rank 0 makes for both
    "uri.start_epochs=1",
    "uri.final_epochs=1",
    "uri.ranker_epochs=2",
    "uri.beam=4",
]
PER_RANK = ["train.batch_size=32", "uri.batch_size=32"]  # two ranks of 32: one process's batch of 64
GLOBAL = ["train.batch_size=64", "uri.batch_size=64"]


def _two_ranks(out: Path, settings: list[str]) -> list[dict]:
    environment = _environment({"WORLD_SIZE": "2"})
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), *settings],
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


def test_two_gloo_ranks_train_uri_as_one_model_near_one_process(tmp_path, tiny_bundle):
    settings = [*tiny_settings(DATASET), *URI, f'uri.init_from="{tiny_bundle(DATASET)}"']
    zero, one = _two_ranks(tmp_path, [*settings, *PER_RANK])
    codes = zero["weights"]["item_codes"]
    assert codes.shape == (80, 2) and codes.min() >= 0  # every item has its codes
    # one model on both ranks: rank 0's assignment and k-means on every rank, DDP's averaged gradients
    assert torch.equal(codes, one["weights"]["item_codes"])
    assert zero["weights"].keys() == one["weights"].keys()
    weights = zero["weights"]
    different = [name for name in weights if not torch.equal(weights[name], one["weights"][name])]
    assert not different, f"the ranks ended with different {different}"
    assert _timeless(zero["history"]) == _timeless(one["history"])  # the ranker's epochs, alike
    assert zero["test"] == one["test"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bundle", "rank0.pt", "rank1.pt"]

    single = run_experiment(load_config(None, [*settings, *GLOBAL]), tmp_path / "single", progress=False)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("bundle", "single")]
    two, one_process = ([r for r in m["uri"]["decoder"]["history"] if r["layer"] == 1.0] for m in metrics)
    # the first layer, before any assignment could tell the runs apart: each epoch's losses are the one
    # process's up to float sums and the last batch's unequal shares
    assert len(two) == len(one_process) == 3  # the k-means start's epoch, then URI's two
    for ours, theirs in zip(two, one_process, strict=True):
        assert ours.keys() == theirs.keys()
        for term in ours.keys() - {"seconds", "layer", "epoch"}:
            assert ours[term] == pytest.approx(theirs[term], rel=1e-4), term
    assert abs(zero["test"]["recall@10"] - single.test["recall@10"]) <= 0.05
    assert abs(zero["test"]["ndcg@10"] - single.test["ndcg@10"]) <= 0.05
