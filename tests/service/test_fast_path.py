"""The short way for well-formed recommend requests answers exactly as FastAPI's route does."""

import fastapi.routing
import numpy as np
import pytest
from fastapi.testclient import TestClient

from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import make_index
from recindex.serve.app import create_app
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.settings import ServiceSettings

DATASET = "synthetic:n_users=120,n_items=50,seed=5"
JSON = {"content-type": "application/json"}
# The same media type spelled otherwise: FastAPI reads it as JSON, the short way leaves it to FastAPI.
JSON_VIA_FASTAPI = {"content-type": "application/json; charset=utf-8"}


@pytest.fixture(scope="module")
def http(tiny_bundle):
    bundle = load_bundle(tiny_bundle(DATASET))
    index = make_index("faiss:HNSW16", bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    settings = ServiceSettings(max_k=20, max_body_bytes=4096, batch_window_ms=0, recall_sample_rate=0)
    return TestClient(
        create_app(settings, Recommender(ServingVersion.of(bundle, index))), raise_server_exceptions=False
    )


BODIES = [
    b'{"user_id": "3", "k": 5}',
    b'{"user_id": 3, "k": 5, "describe": true}',
    b'{"user_id": "stranger", "k": 4}',
    b'{"recent_items": ["1", "2"], "k": 5, "exclude_seen": false}',
    b'{"user_id": "3", "k": 5, "filter": {"allow_ids": [1, 2, 3, 4, 5, 6, 7, 8]}}',
    b'{"user_id": "3", "k": 21}',  # above max_k: the endpoint refuses it
    b'{"recent_items": ["no-such-item"], "k": 5}',
    b'{"vector": [0.1, 0.2], "k": 5}',
    b'{"vector": [1e300, 1e300], "k": 5}',
    b'{"user_id": "1", "k": 5, "filter": {"where": "price >"}}',
    b'{"user_id": "1", "vector": [0.5], "k": 5}',
    b'{"user_id": true, "k": 5}',  # the model refuses it: FastAPI's own message
    b'{"user_id": "1", "k": 5, "unexpected": 1}',
    b'{"user_id": "1", "k": 0}',
    b'{"user_id": "1", "k": 5',  # not JSON
    b"[1, 2]",
    b'"just a string"',
    b"",
    b'{"user_id": "\xff"}',  # not UTF-8
]


def answer(http, body: bytes, headers: dict):
    response = http.post("/v1/recommend", content=body, headers=headers)
    payload = response.json()
    if isinstance(payload, dict) and "took_ms" in payload:
        payload["took_ms"] = None
    return response.status_code, response.headers["content-type"], payload


@pytest.mark.parametrize("body", BODIES)
def test_the_short_way_answers_as_the_route_does(http, body):
    assert answer(http, body, JSON) == answer(http, body, JSON_VIA_FASTAPI)


def test_well_formed_requests_skip_fastapi_and_others_do_not(http, monkeypatch):
    calls = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*args, **kwargs):
        calls.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    assert answer(http, BODIES[0], JSON)[0] == 200 and calls == []
    assert answer(http, BODIES[0], JSON_VIA_FASTAPI)[0] == 200 and calls == ["/v1/recommend"]
    assert answer(http, b'{"user_id": true, "k": 5}', JSON)[0] == 422 and len(calls) == 2
    assert http.get("/healthz").status_code == 200 and calls[-1] == "/healthz"


def test_a_key_protected_service_checks_the_key_on_every_request(tiny_bundle):
    bundle = load_bundle(tiny_bundle(DATASET))
    version = ServingVersion.of(bundle, make_index("exact", bundle.item_embeddings.shape[1]))
    version.index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    settings = ServiceSettings(open_reads=False, api_keys=["k1"], batch_window_ms=0)
    http = TestClient(create_app(settings, Recommender(version)))
    assert http.post("/v1/recommend", content=BODIES[0], headers=JSON).status_code == 401
    assert (
        http.post("/v1/recommend", content=BODIES[0], headers={**JSON, "x-api-key": "k1"}).status_code == 200
    )


def test_an_oversized_body_is_still_refused_first(http):
    body = b'{"recent_items": [' + b'"1",' * 2000 + b'"1"], "k": 3}'
    assert http.post("/v1/recommend", content=body, headers=JSON).status_code == 413
