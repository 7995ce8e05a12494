"""The HTTP API over a small trained bundle: answers, versions, and 4xx (never 500) for bad input."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recindex.bundle import load_bundle
from recindex.index.factory import make_index
from recindex.serve.app import create_app
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.settings import ServiceSettings

DATASET = "synthetic:n_users=120,n_items=50,seed=5"


@pytest.fixture(scope="module")
def client(tiny_bundle):
    out = tiny_bundle(DATASET)
    bundle = load_bundle(out)
    index = make_index("faiss:HNSW16", bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    version = ServingVersion.of(bundle, index)
    app = create_app(ServiceSettings(max_k=20, max_body_bytes=4096), Recommender(version))
    return TestClient(app, raise_server_exceptions=False), version


def test_health_readiness_and_a_recommendation(client):
    http, version = client
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["bundle_id"] == version.bundle_id
    user = str(version.bundle.data.user_ids[2])
    response = http.post("/v1/recommend", json={"user_id": user, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["items"]) == 5 and body["bundle_id"] == version.bundle_id and body["fallback"] is None
    history = {str(version.bundle.data.item_ids[i]) for i in version.bundle.data.sequence(2)}
    assert not history & {item["item_id"] for item in body["items"]}


def test_unknown_user_is_answered_by_the_fallback(client):
    http, _ = client
    body = http.post("/v1/recommend", json={"user_id": "stranger", "k": 3}).json()
    assert body["fallback"] == "unknown user" and len(body["items"]) == 3


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": "1", "k": 21},  # above max_k
        {"user_id": "1", "k": 0},
        {"k": 5},  # no query
        {"vector": [0.1, 0.2], "k": 5},  # wrong dimension
        {"recent_items": ["no-such-item"], "k": 5},
        {"user_id": "1", "k": 5, "filter": {"where": "price >"}},
        {"user_id": "1", "k": 5, "filter": {"where": "colour == 1"}},
        {"user_id": "1", "k": 5, "unexpected": True},
        {"vector": ["x"] * 16, "k": 5},
    ],
)
def test_bad_requests_get_4xx_with_a_message(client, payload):
    http, _ = client
    response = http.post("/v1/recommend", json=payload)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


def test_oversized_body_is_refused(client):
    http, _ = client
    response = http.post("/v1/recommend", json={"recent_items": ["1"] * 2000, "k": 5})
    assert response.status_code == 413


def test_committed_openapi_schema_is_current():
    import json
    from pathlib import Path

    from recindex.serve.app import openapi_schema

    committed = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_schema())), "run: recindex openapi > docs/openapi.json"
