"""A warm-started MFLI run keeps what its start knew: trained from a two-tower bundle on data whose
batches repeat their positives many times (long sequences over a small, Zipf-popular catalogue, as
ML-100K), it ends on validation at or above the model it started as, and its trained epochs hold
that level rather than fall below it."""

import numpy as np
import torch

from recindex.config import load_config
from recindex.data.registry import load_dataset
from recindex.data.splits import split_for
from recindex.eval.evaluate import evaluate_model
from recindex.mfli.train import mfli_model, warm_start
from recindex.models.two_tower import TwoTowerModel
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import run_experiment

DATASET = "synthetic:n_users=400,n_items=150,n_attributes=20,mean_length=40,min_length=10,seed=3"
BASE = [
    f'data.dataset="{DATASET}"',
    "model.dim=32",
    "model.max_len=30",
    "model.dropout=0.2",
    "model.id_dropout=0.2",
    "train.batch_size=64",
    "train.threads=1",
    "train.patience=100",
    "train.lr=0.002",
]
MFLI = [
    'model.kind="mfli"',
    "mfli.codewords=4",
    "mfli.quant_start=1",
    "mfli.level_gap=1",
    'mfli.quant_gradient="codebook"',
    'train.negatives="mixed"',
    "train.uniform_negatives=64",
    "train.epochs=5",
]


def test_a_warm_started_mfli_ends_at_or_above_its_start(tmp_path):
    two_tower = load_config(None, [*BASE, 'train.negatives="full"', "train.epochs=10"])
    towers = run_experiment(two_tower, tmp_path / "tt", progress=False)
    config = load_config(None, [*BASE, *MFLI, f'mfli.init_from="{towers.bundle_path}"'])

    # The start, measured apart from the trainer: the MFLI model around the bundle's towers, untrained.
    data = load_dataset(config.data.dataset, None)
    split = split_for(config.data, data)
    start_model = mfli_model(TwoTowerModel.for_data(data, config.model), config.mfli)
    warm_start(start_model, load_bundle(towers.bundle_path), data, config.data)
    start_model.set_trained_items(split.train_item_mask(data.n_items))
    counts = np.bincount(split.train_items, minlength=data.n_items)
    with torch.no_grad():
        start = evaluate_model(start_model, split, "valid", counts, ks=(10,)).metrics["recall@10"]

    result = run_experiment(config, None, progress=False, data=data)
    assert result.valid["recall@10"] >= start
    trained = [r["valid_recall@10"] for r in result.training.history if r["epoch"] > 0]
    # Training itself holds what the start knew (not only the fallback to the start): 0.02 is 8 of
    # the 400 validation users.
    assert max(trained) >= start - 0.02, (start, trained)
