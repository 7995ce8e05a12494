"""Item upserts and deletes over HTTP: keyed, durable in the log, visible to the next query, replayed."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import make_index
from recindex.serve.app import create_app
from recindex.serve.items import ItemWriter
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.settings import ServiceSettings
from recindex.serve.wal import WriteAheadLog

DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    out = tiny_bundle(DATASET)
    return load_bundle(out)


def serve(bundle, wal_path, keys=("test-key",), open_reads=True):
    index = make_index("faiss:HNSW16", bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    version = ServingVersion.of(bundle, index)
    writer = ItemWriter(version, WriteAheadLog(wal_path).open())
    writer.replay()
    settings = ServiceSettings(api_keys=list(keys), open_reads=open_reads, recall_sample_rate=1.0)
    app = create_app(settings, Recommender(version), writer)
    return TestClient(app, raise_server_exceptions=False), writer


def test_writes_need_a_valid_key(bundle, tmp_path):
    body = {"items": [{"item_id": "x", "vector": [1.0] * 16}]}
    http, _ = serve(bundle, tmp_path / "a.wal")
    assert http.put("/v1/items", json=body).status_code == 401
    assert http.put("/v1/items", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    closed, _ = serve(bundle, tmp_path / "b.wal", keys=())
    assert closed.put("/v1/items", json=body, headers=KEY).status_code == 403


def test_upserted_item_is_retrieved_by_the_next_query_and_survives_a_restart(bundle, tmp_path):
    http, writer = serve(bundle, tmp_path / "items.wal")
    direction = np.random.default_rng(1).standard_normal(16)
    response = http.put(
        "/v1/items",
        json={
            "items": [{"item_id": "brand-new", "vector": direction.tolist(), "attributes": {"shelf": "top"}}]
        },
        headers=KEY,
    )
    assert response.status_code == 200, response.text
    assert response.json()["sequence"] == 1
    query = {"vector": direction.tolist(), "k": 3}
    assert http.post("/v1/recommend", json=query).json()["items"][0]["item_id"] == "brand-new"
    only = http.post("/v1/recommend", json={**query, "filter": {"where": 'shelf == "top"'}}).json()
    assert [item["item_id"] for item in only["items"]] == ["brand-new"]
    writer.log.close()

    restarted, _ = serve(bundle, tmp_path / "items.wal")  # a new process would replay the same log
    assert restarted.post("/v1/recommend", json=query).json()["items"][0]["item_id"] == "brand-new"
    deleted = restarted.request("DELETE", "/v1/items", json={"item_ids": ["brand-new"]}, headers=KEY)
    assert deleted.status_code == 200 and deleted.json()["items"] == 1
    after = restarted.post("/v1/recommend", json=query).json()["items"]
    assert "brand-new" not in [item["item_id"] for item in after]


def test_items_by_content_features(bundle, tmp_path):
    http, writer = serve(bundle, tmp_path / "c.wal")
    names = bundle.data.item_features.names
    tokens = [names[t] for t in bundle.data.item_features.of(0)]
    ok = http.put("/v1/items", json={"items": [{"item_id": "twin-of-0", "features": tokens}]}, headers=KEY)
    assert ok.status_code == 200, ok.text
    expected = bundle.model.content_vectors([list(bundle.data.item_features.of(0))]).detach().numpy()[0]
    top = http.post("/v1/recommend", json={"vector": expected.tolist(), "k": 1}).json()["items"][0]
    assert top["item_id"] == "twin-of-0" and top["score"] == pytest.approx(1.0, abs=1e-5)
    unknown = http.put("/v1/items", json={"items": [{"item_id": "y", "features": ["no-such"]}]}, headers=KEY)
    assert unknown.status_code == 422 and "none of its features" in unknown.json()["detail"]
    neither = http.put("/v1/items", json={"items": [{"item_id": "z"}]}, headers=KEY)
    assert neither.status_code == 422
    assert writer.log.last_seq == 1, "refused requests are not logged"


def test_reads_can_be_keyed_by_setting(bundle, tmp_path):
    http, _ = serve(bundle, tmp_path / "d.wal", open_reads=False)
    query = {"vector": [1.0] * 16, "k": 2}
    assert http.post("/v1/recommend", json=query).status_code == 401
    assert http.post("/v1/recommend", json=query, headers=KEY).status_code == 200


def test_metrics_count_requests_fallbacks_upserts_and_items(bundle, tmp_path):
    http, _ = serve(bundle, tmp_path / "e.wal")
    http.post("/v1/recommend", json={"user_id": "nobody", "k": 2})
    http.put("/v1/items", json={"items": [{"item_id": "m1", "vector": [0.5] * 16}]}, headers=KEY)
    text = http.get("/metrics").text
    assert 'recindex_request_seconds_count{endpoint="/v1/recommend",status="2xx"} 1.0' in text
    assert 'recindex_fallback_total{reason="unknown user"} 1.0' in text
    assert "recindex_upsert_visible_seconds_count 1.0" in text
    assert f"recindex_index_items {len(bundle.item_embeddings) + 1}.0" in text
    http.post("/v1/recommend", json={"user_id": str(bundle.data.user_ids[0]), "k": 5})
    http.app.state.recall_monitor.drain()  # the check runs off the request path
    text = http.get("/metrics").text
    # HNSW over 50 items is exhaustive: every sampled answer agrees with exact search.
    assert "recindex_online_index_recall_count 1.0" in text
    assert "recindex_online_index_recall_sum 1.0" in text
