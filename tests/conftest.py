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

# milvus_server(kind): the run's Milvus standalone and Lite servers on loopback (tests/milvus_servers.py)
pytest_plugins = ["milvus_servers"]


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


@pytest.fixture(scope="session")
def family_bundle(tmp_path_factory):
    """family_bundle("uri") -> a loaded bundle of that model family, trained once per session on a small
    synthetic set (a few seconds each, one thread). Families: two_tower, mfli, uri, sci.

    The URI model's d is 8 and SCI's 24 so that their indexes have the contract suite's 24 dimensions
    (a URI index holds 3 x d)."""
    from recindex.config import load_config
    from recindex.pipelines import load_bundle
    from recindex.pipelines.experiment import run_experiment

    dataset = "synthetic:n_users=200,n_items=120,n_attributes=20,seed=8"
    base = [*tiny_settings(dataset), "train.uniform_negatives=32"]
    families = {
        "two_tower": ["train.epochs=2"],
        "mfli": [
            "train.epochs=3",
            'model.kind="mfli"',
            "mfli.codewords=4",
            "mfli.quant_start=0",
            "mfli.level_gap=1",
        ],
        "uri": [
            "model.dim=8",
            "train.epochs=2",
            'model.kind="uri"',
            "uri.k=4",
            "uri.layers=2",
            "uri.layer_epochs=2",
            "uri.batch_size=64",
            "uri.ranker_epochs=1",
        ],
        "sci": ["model.dim=24", "train.epochs=3", "sci.symmetric_weight=1.0"],
    }
    trained = {}

    def train(family: str):
        if family not in families:
            raise KeyError(f"no family {family!r}; choose one of {', '.join(families)}")
        if family not in trained:
            out = tmp_path_factory.mktemp(family) / "bundle"
            run_experiment(load_config(None, [*base, *families[family]]), out, progress=False)
            trained[family] = load_bundle(out)
        return trained[family]

    return train


@pytest.fixture
def serve(tmp_path):
    """serve(bundle, spec, **search_params) -> the bundle's index behind the service, with a write-ahead
    log: a namespace of `http` (a test client; API key "test-key"), `version`, `index` and `restart()`,
    which serves an index built afresh from the bundle with the log replayed, as a restarted service."""
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from recindex.pipelines.indexes import build_bundle_index
    from recindex.serve.app import create_app
    from recindex.serve.items import ItemWriter
    from recindex.serve.recommender import Recommender, ServingVersion
    from recindex.serve.settings import ServiceSettings
    from recindex.serve.wal import WriteAheadLog

    logs = []

    def start(bundle, spec: str, replay: bool = False, **search_params):
        _, index, _, _ = build_bundle_index(bundle, spec, search_params=search_params or None, overwrite=True)
        version = ServingVersion.of(bundle, index)
        logs.append(WriteAheadLog(tmp_path / "items.wal").open())
        writer = ItemWriter(version, logs[-1])
        if replay:
            writer.replay()
        app = create_app(ServiceSettings(api_keys=["test-key"]), Recommender(version), writer)
        http = TestClient(app, raise_server_exceptions=False)

        def restart():
            logs[-1].close()
            return start(bundle, spec, replay=True, **search_params)

        return SimpleNamespace(http=http, version=version, index=index, restart=restart)

    yield start
    for log in logs:
        log.close()
