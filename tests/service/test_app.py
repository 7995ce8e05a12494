"""The HTTP API over a small trained bundle: answers, versions, and 4xx (never 500) for bad input."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import make_index
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
        {"vector": [1e300] * 16, "k": 5},  # finite, but not in float32
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


def test_oversized_body_without_a_length_is_refused_as_it_arrives(client):
    http, _ = client

    def chunks():  # a generator body is sent chunked, with no content-length to check up front
        yield b'{"recent_items": [' + b'"1",' * 3000 + b'"1"], "k": 3}'

    response = http.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text


def test_committed_openapi_schema_is_current():
    import json
    from pathlib import Path

    from recindex.serve.app import openapi_schema

    committed = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_schema())), "run: recindex openapi > docs/openapi.json"


def test_similar_items_are_the_nearest_item_vectors_without_the_triggers(client):
    http, version = client
    bundle = version.bundle
    triggers = [0, 7]
    raw = [str(bundle.data.item_ids[i]) for i in triggers]
    body = http.post("/v1/similar-items", json={"item_ids": raw, "k": 5, "describe": True}).json()
    assert body["bundle_id"] == version.bundle_id and body["fallback"] is None
    query = bundle.item_embeddings[triggers].mean(axis=0)
    scores = bundle.item_embeddings @ (query / np.linalg.norm(query))
    scores[triggers] = -np.inf
    expected = {str(bundle.data.item_ids[i]) for i in np.argsort(-scores)[:5]}
    got = {item["item_id"] for item in body["items"]}
    assert not got & set(raw)
    assert len(got & expected) >= 4  # HNSW on 50 items is all but exact
    assert all(item["about"] is not None for item in body["items"]) and body["took_ms"] > 0


@pytest.mark.parametrize(
    "payload",
    [
        {"item_ids": [], "k": 5},
        {"item_ids": ["no-such-item"], "k": 5},
        {"item_ids": ["1"] * 101, "k": 5},
        {"item_ids": ["1"], "k": 21},
        {"item_ids": ["1"], "k": 5, "filter": {"where": "nope("}},
    ],
)
def test_bad_similar_items_requests_get_4xx(client, payload):
    http, _ = client
    response = http.post("/v1/similar-items", json=payload)
    assert 400 <= response.status_code < 500, response.text


def test_users_history_and_status_for_the_web_page(client):
    http, version = client
    data = version.bundle.data
    page = http.get("/v1/users", params={"offset": 3, "limit": 4}).json()
    assert page["total"] == data.n_users
    assert [u["user_id"] for u in page["users"]] == [str(u) for u in data.user_ids[3:7]]
    assert [u["history"] for u in page["users"]] == [len(data.sequence(u)) for u in range(3, 7)]
    user = page["users"][0]["user_id"]
    history = http.get(f"/v1/users/{user}").json()["history"]
    assert [h["item_id"] for h in history] == [str(data.item_ids[i]) for i in data.sequence(3)]
    assert http.get("/v1/users/stranger").status_code == 404
    status = http.get("/v1/status").json()
    assert status["active"]["bundle_id"] == version.bundle_id and status["active"]["items"] == len(
        version.index
    )
    assert status["versions"][0]["state"] == "active"
    assert "<html" in http.get("/").text
