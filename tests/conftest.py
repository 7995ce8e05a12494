"""Shared fixtures. Tests that need the real benchmark data skip with a reason when it is absent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED_DATA = Path(os.environ.get("RECINDEX_DATA_DIR", ROOT.parent / "shared" / "data"))

torch.set_num_threads(1)  # tests run in parallel workers; one thread each keeps them from fighting


def require_shared(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.is_dir():
        pytest.skip(f"benchmark data {path} is not present (set RECINDEX_DATA_DIR to the shared data folder)")
    return path


@pytest.fixture
def tiny_synthetic():
    from recindex.data.synthetic import SyntheticConfig, generate

    return generate(SyntheticConfig(n_users=300, n_items=120, n_clusters=6, n_attributes=20, seed=1))


try:  # FAISS sizes its OpenMP team per process; two test workers on two cores must not spin four threads
    import faiss

    faiss.omp_set_num_threads(1)
except ImportError:
    pass


def tiny_settings(dataset: str, epochs: int = 1) -> list[str]:
    """Settings that train a two-tower model on a small synthetic dataset in about a second."""
    return [
        f'data.dataset="{dataset}"',
        "model.dim=16",
        "model.max_len=10",
        f"train.epochs={epochs}",
        "train.batch_size=64",
        "train.threads=1",
        "train.uniform_negatives=16",
    ]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """tiny_bundle("synthetic:n_users=120,n_items=50,seed=5") -> path of a bundle trained on it (cached)."""
    from recindex.config import load_config
    from recindex.pipelines.experiment import run_experiment

    trained: dict[str, Path] = {}

    def train(dataset: str) -> Path:
        if dataset not in trained:
            out = tmp_path_factory.mktemp("tiny") / "bundle"
            run_experiment(load_config(None, tiny_settings(dataset)), out, progress=False)
            trained[dataset] = out
        return trained[dataset]

    return train
