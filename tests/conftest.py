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
