"""A URI bundle behind the service: its own index answers, a new item known only by its content is coded
by the decoder on arrival and found by the next query, and similar items come from the triggers' leaves."""

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
        "train.epochs=2",
        "train.batch_size=64",
        "train.threads=1",
        "train.uniform_negatives=32",
        'model.kind="uri"',
        "uri.k=4",
        "uri.layers=2",
        "uri.layer_epochs=2",
        "uri.batch_size=64",
        "uri.ranker_epochs=1",
    ]
    out = tmp_path_factory.mktemp("uri") / "bundle"
    run_experiment(load_config(None, overrides), out, progress=False)
    return load_bundle(out)


def test_the_service_answers_from_the_uri_index_and_takes_new_items(bundle, tmp_path):
    _, index, _ = build_bundle_index(bundle, "uri", search_params={"beam": 16}, overwrite=True)
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
    ids, codes = index.codes_of_items()
    assert (codes[ids == len(bundle.data.item_ids)] >= 0).all()  # coded by the decoder on arrival

    item = bundle.model.content_vectors([list(bundle.data.item_features.of(3))]).detach().numpy()[0]
    d = bundle.model.dim
    query = np.concatenate([item[:d], item[2 * d :], np.zeros(d)])  # as a query: [ranker | router | 0]
    top = http.post("/v1/recommend", json={"vector": query.tolist(), "k": 1}).json()["items"][0]
    assert top["item_id"] == "fresh"
    assert top["score"] == pytest.approx(float(item[:d] @ item[:d]), rel=1e-4)

    similar = http.post("/v1/similar-items", json={"item_ids": ["fresh"], "k": 5})
    assert similar.status_code == 200, similar.text
    found = [i["item_id"] for i in similar.json()["items"]]
    assert found and "fresh" not in found


def test_similar_items_include_the_trigger_items_leaf(bundle):
    _, index, _ = build_bundle_index(bundle, "uri", search_params={"beam": 1}, overwrite=True)
    version = ServingVersion.of(bundle, index)
    http = TestClient(create_app(ServiceSettings(), Recommender(version)), raise_server_exceptions=False)
    trigger = 7
    codes = bundle.model.item_codes.numpy()
    same_leaf = np.flatnonzero((codes == codes[trigger]).all(1))
    answer = http.post("/v1/similar-items", json={"item_ids": [str(bundle.data.item_ids[trigger])], "k": 100})
    assert answer.status_code == 200, answer.text
    found = {version.item_lookup[item["item_id"]] for item in answer.json()["items"]}
    assert trigger not in found
    assert set(same_leaf.tolist()) - {trigger} <= found
