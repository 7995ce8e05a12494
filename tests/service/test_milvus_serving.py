"""The service over a Milvus-backed bundle index, wherever the collection lives: a Milvus Lite file, a
Milvus Lite server, the Milvus 2.3 standalone server (tests/milvus_servers.py; a case skips, saying why,
where its server cannot start). An upsert is found by the next query, with its attributes, and a delete
is gone from the next one: the reads' Session consistency (index.milvus.features) makes that hold on a
server without paying for Strong reads."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install 'recindex[milvus]')")
pytest.importorskip("milvus_lite", reason="Milvus Lite is not installed (pip install milvus-lite)")

from recindex.pipelines import load_bundle  # noqa: E402
from recindex.pipelines.indexes import build_bundle_index  # noqa: E402
from recindex.serve.app import create_app  # noqa: E402
from recindex.serve.items import ItemWriter  # noqa: E402
from recindex.serve.recommender import Recommender, ServingVersion  # noqa: E402
from recindex.serve.settings import ServiceSettings  # noqa: E402
from recindex.serve.wal import WriteAheadLog  # noqa: E402

DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle(DATASET))


@pytest.fixture(params=["lite-file", "lite-server", "standalone"])
def served(request, bundle, tmp_path):
    """(test client, index) of the bundle's Milvus index at this case's place, behind the service."""
    tag = uuid.uuid4().hex[:10]
    if request.param == "lite-file":
        uri = str(tmp_path / "items.db")
    else:
        uri = request.getfixturevalue("milvus_server")(request.param)
    built = build_bundle_index(
        bundle, "milvus:HNSW", f"milvus-{tag}", options={"uri": uri, "collection": f"serve_{tag}"}
    )
    version = ServingVersion.of(bundle, built.index)
    log = WriteAheadLog(tmp_path / "items.wal").open()
    app = create_app(ServiceSettings(api_keys=["test-key"]), Recommender(version), ItemWriter(version, log))
    yield TestClient(app, raise_server_exceptions=False), built.index
    log.close()
    built.index.close()


def test_writes_are_seen_by_the_next_query_with_their_attributes(served):
    http, index = served
    direction = np.random.default_rng(1).standard_normal(16)
    query = {"vector": direction.tolist(), "k": 3}
    item = {"item_id": "brand-new", "vector": direction.tolist(), "attributes": {"popularity": 1e6}}
    put = http.put("/v1/items", json={"items": [item]}, headers=KEY)
    assert put.status_code == 200, put.text
    assert http.post("/v1/recommend", json=query).json()["items"][0]["item_id"] == "brand-new"
    popular = {**query, "filter": {"where": "popularity > 1000"}}
    assert [i["item_id"] for i in http.post("/v1/recommend", json=popular).json()["items"]] == ["brand-new"]
    unpopular = {**query, "filter": {"where": "not (popularity > 1000)"}}
    found = http.post("/v1/recommend", json=unpopular).json()["items"]
    assert "brand-new" not in [i["item_id"] for i in found]

    deleted = http.request("DELETE", "/v1/items", json={"item_ids": ["brand-new"]}, headers=KEY)
    assert deleted.status_code == 200 and deleted.json()["items"] == 1
    after = http.post("/v1/recommend", json=query).json()["items"]
    assert "brand-new" not in [i["item_id"] for i in after]
    assert http.post("/v1/recommend", json=popular).json()["items"] == []


def test_an_item_without_an_attribute_fails_every_comparison_on_it(served):
    http, index = served
    direction = np.random.default_rng(2).standard_normal(16)
    item = {"item_id": "bare", "vector": direction.tolist()}  # no popularity
    assert http.put("/v1/items", json={"items": [item]}, headers=KEY).status_code == 200
    query = {"vector": direction.tolist(), "k": 60}
    for where in ("popularity >= 0", "popularity < 0"):
        found = http.post("/v1/recommend", json={**query, "filter": {"where": where}}).json()["items"]
        assert "bare" not in [i["item_id"] for i in found], where
    negated = {**query, "filter": {"where": "not (popularity >= 0)"}}
    assert "bare" in [i["item_id"] for i in http.post("/v1/recommend", json=negated).json()["items"]]
