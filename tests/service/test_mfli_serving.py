"""An MFLI bundle behind the service: its own index answers, a new item known only by its content is
coded in real time and found by the next query, and similar items come from the item's leaves."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recindex.config import load_config
from recindex.pipelines import load_bundle
from recindex.pipelines.experiment import run_experiment
from recindex.pipelines.indexes import build_bundle_index
from recindex.serve.app import create_app
from recindex.serve.items import ItemWriter
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.settings import ServiceSettings
from recindex.serve.wal import WriteAheadLog

KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    overrides = [
        'data.dataset="synthetic:n_users=200,n_items=120,n_attributes=20,seed=8"',
        "model.dim=16",
        "model.max_len=10",
        "train.epochs=3",
        "train.batch_size=64",
        "train.threads=1",
        "train.uniform_negatives=32",
        'model.kind="mfli"',
        "mfli.codewords=4",
        "mfli.quant_start=0",
        "mfli.level_gap=1",
    ]
    out = tmp_path_factory.mktemp("mfli") / "bundle"
    run_experiment(load_config(None, overrides), out, progress=False)
    return load_bundle(out)


def test_the_service_answers_from_the_mfli_index_and_takes_new_items(bundle, tmp_path):
    _, index, _ = build_bundle_index(bundle, "mfli", search_params={"leaves": 64}, overwrite=True)
    version = ServingVersion.of(bundle, index)
    writer = ItemWriter(version, WriteAheadLog(tmp_path / "items.wal").open())
    app = create_app(ServiceSettings(api_keys=["test-key"]), Recommender(version), writer)
    http = TestClient(app, raise_server_exceptions=False)

    answer = http.post("/v1/recommend", json={"user_id": str(bundle.data.user_ids[0]), "k": 5}).json()
    assert len(answer["items"]) == 5 and answer["fallback"] is None

    names = bundle.data.item_features.names
    tokens = [names[t] for t in bundle.data.item_features.of(3)]
    put = http.put("/v1/items", json={"items": [{"item_id": "fresh", "features": tokens}]}, headers=KEY)
    assert put.status_code == 200, put.text
    vector = bundle.model.content_vectors([list(bundle.data.item_features.of(3))]).detach().numpy()[0]
    top = http.post("/v1/recommend", json={"vector": vector.tolist(), "k": 1}).json()["items"][0]
    assert top["item_id"] == "fresh"
    assert top["score"] == pytest.approx(float(vector @ vector), rel=1e-4)

    similar = http.post("/v1/similar-items", json={"item_ids": ["fresh"], "k": 5})
    assert similar.status_code == 200, similar.text
    assert "fresh" not in [item["item_id"] for item in similar.json()["items"]]
    assert np.isfinite([item["score"] for item in similar.json()["items"]]).all()


def test_similar_items_come_from_the_trigger_items_leaves(bundle, tmp_path):
    _, index, _ = build_bundle_index(bundle, "mfli", overwrite=True)
    version = ServingVersion.of(bundle, index)
    http = TestClient(create_app(ServiceSettings(), Recommender(version)), raise_server_exceptions=False)
    trigger = str(bundle.data.item_ids[7])
    answer = http.post("/v1/similar-items", json={"item_ids": [trigger], "k": 5})
    assert answer.status_code == 200, answer.text
    found = [version.item_lookup[item["item_id"]] for item in answer.json()["items"]]
    assert found and 7 not in found
    trigger_leaves = index._leaf_of[7]
    assert all((index._leaf_of[item] == trigger_leaves).any() for item in found)


def test_an_admin_rebuild_rebalances_the_mfli_index_and_keeps_every_item(bundle, tmp_path):
    _, index, _ = build_bundle_index(bundle, "mfli", search_params={"leaves": 64}, overwrite=True)
    version = ServingVersion.of(bundle, index)
    writer = ItemWriter(version, WriteAheadLog(tmp_path / "items.wal").open())
    http = TestClient(create_app(ServiceSettings(api_keys=["test-key"]), Recommender(version), writer))
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((30, index.dim)).astype(np.float32)
    items = [{"item_id": f"v{i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
    assert http.put("/v1/items", json={"items": items}, headers=KEY).status_code == 200
    assert index.placed_since_rebuild == 30
    assert http.post("/v1/admin/rebuild").status_code == 401
    rebuilt = http.post("/v1/admin/rebuild", headers=KEY)
    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json()["items"] == 120 + 30 and index.placed_since_rebuild == 0
    top = http.post("/v1/recommend", json={"vector": vectors[4].tolist(), "k": 1}).json()["items"][0]
    assert top["item_id"] == "v4"


def test_an_index_without_a_rebuild_says_so(bundle, tmp_path):
    from recindex.pipelines.indexes import make_index

    index = make_index("faiss:HNSW16", bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    version = ServingVersion.of(bundle, index)
    writer = ItemWriter(version, WriteAheadLog(tmp_path / "items.wal").open())
    http = TestClient(create_app(ServiceSettings(api_keys=["test-key"]), Recommender(version), writer))
    answer = http.post("/v1/admin/rebuild", headers=KEY)
    assert answer.status_code == 409 and "faiss" in answer.json()["detail"]
