"""Every model family behind the service, through its own index: a known user is answered, an item
known only by its content is placed on arrival and found by the next query, similar items come back for
it, items put by vector are scored right, a restarted service replays them, and an admin rebuild
rebalances the indexes that can and is refused, naming the backend, by those that cannot.

What is particular to one family lives beside it (test_mfli_serving.py, test_uri_serving.py; SCI's
routing of new items by their query view in tests/integration/test_sci_bundle.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

KEY = {"X-API-Key": "test-key"}


def same(vectors: np.ndarray) -> np.ndarray:
    return vectors


def uri_item(vectors: np.ndarray) -> np.ndarray:
    """A URI item vector is [ranker | 0 | router] (d each)."""
    d = vectors.shape[1] // 3
    return np.concatenate([vectors[:, :d], np.zeros_like(vectors[:, :d]), vectors[:, 2 * d :]], 1)


def uri_query(vectors: np.ndarray) -> np.ndarray:
    """The query that reads a URI item by itself: [ranker | router | 0]; its score is the ranker's."""
    d = vectors.shape[1] // 3
    return np.concatenate([vectors[:, :d], vectors[:, 2 * d :], np.zeros_like(vectors[:, :d])], 1)


@dataclass(frozen=True)
class Family:
    name: str
    bundle: str  # the family_bundle it serves
    spec: str  # its index
    params: dict = field(default_factory=dict)  # search parameters (here: wide enough to miss nothing)
    rebuilds: bool = False  # whether the admin rebuild rebalances its index
    as_item: Callable[[np.ndarray], np.ndarray] = same  # (n, dim) any vectors -> item vectors
    as_query: Callable[[np.ndarray], np.ndarray] = same  # (n, dim) item vectors -> queries that find them

    def __str__(self) -> str:
        return self.name


FAMILIES = [
    Family("two_tower/exact", "two_tower", "exact"),
    Family("two_tower/faiss:HNSW16", "two_tower", "faiss:HNSW16", {"ef": 64}),
    Family("mfli", "mfli", "mfli", {"leaves": 64}, rebuilds=True),
    Family("uri", "uri", "uri", {"beam": 16}, as_item=uri_item, as_query=uri_query),
    Family("sci/ci", "sci", "ci:nlist=8,levels=1,codewords=16", {"nprobe": 8}),
]


@pytest.fixture(params=FAMILIES, ids=str)
def family(request) -> Family:
    return request.param


@pytest.fixture
def served(family, family_bundle, serve):
    return serve(family_bundle(family.bundle), family.spec, **family.params)


def recommend(served, query: np.ndarray, k: int = 1) -> list[dict]:
    answer = served.http.post("/v1/recommend", json={"vector": query.tolist(), "k": k})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def put_by_content(served, item_id: str, like: int) -> np.ndarray:
    """Put `item_id` with the features of catalogue item `like`; returns the vector the model gives it."""
    data, model = served.version.bundle.data, served.version.bundle.model
    features = list(data.item_features.of(like))
    tokens = [data.item_features.names[t] for t in features]
    put = served.http.put(
        "/v1/items", json={"items": [{"item_id": item_id, "features": tokens}]}, headers=KEY
    )
    assert put.status_code == 200, put.text
    return model.content_vectors([features]).detach().numpy()


def test_a_known_user_gets_k_items_from_the_index(family, served):
    user = str(served.version.bundle.data.user_ids[0])
    answer = served.http.post("/v1/recommend", json={"user_id": user, "k": 5})
    assert answer.status_code == 200, f"{family}: {answer.text}"
    assert len(answer.json()["items"]) == 5 and answer.json()["fallback"] is None, family


def test_an_item_put_by_content_is_found_by_the_next_query_and_after_a_restart(family, served):
    query = family.as_query(put_by_content(served, "fresh", like=3))
    top = recommend(served, query[0])[0]
    assert top["item_id"] == "fresh", f"{family}: {top}"
    item = served.version.item_vector(served.version.internal_id("fresh"))
    assert top["score"] == pytest.approx(float(query[0] @ item), rel=1e-4), family
    again = recommend(served.restart(), query[0])[0]  # a fresh index, with the log replayed
    assert again["item_id"] == "fresh", f"{family} after a restart: {again}"


def test_similar_items_of_a_new_item(family, served):
    put_by_content(served, "fresh", like=3)
    similar = served.http.post("/v1/similar-items", json={"item_ids": ["fresh"], "k": 5})
    assert similar.status_code == 200, f"{family}: {similar.text}"
    items = similar.json()["items"]
    assert items and "fresh" not in [item["item_id"] for item in items], family
    assert np.isfinite([item["score"] for item in items]).all(), family


def test_items_put_by_vector_are_scored_with_the_catalogue(family, served):
    vectors = family.as_item(np.random.default_rng(2).standard_normal((30, served.index.dim)))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    items = [{"item_id": f"v{i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
    assert served.http.put("/v1/items", json={"items": items}, headers=KEY).status_code == 200, family
    catalogue = served.version.bundle.item_embeddings
    everything = np.concatenate([catalogue, vectors])
    names = [str(i) for i in served.version.bundle.data.item_ids] + [f"v{i}" for i in range(30)]
    queries = family.as_query(vectors[:5])
    best = [names[i] for i in np.argmax(queries @ everything.T, axis=1)]  # exact, over all items
    assert [recommend(served, q)[0]["item_id"] for q in queries] == best, family
    if family.rebuilds:
        rebuilt = served.http.post("/v1/admin/rebuild", headers=KEY)
        assert rebuilt.status_code == 200, f"{family}: {rebuilt.text}"
        assert rebuilt.json()["items"] == len(everything), family
        assert [recommend(served, q)[0]["item_id"] for q in queries] == best, f"{family} after a rebuild"


def test_an_admin_rebuild_needs_the_key_and_an_index_that_rebalances(family, served):
    assert served.http.post("/v1/admin/rebuild").status_code == 401, family
    answer = served.http.post("/v1/admin/rebuild", headers=KEY)
    if family.rebuilds:
        assert answer.status_code == 200 and answer.json()["rebuilt"], f"{family}: {answer.text}"
    else:
        assert answer.status_code == 409 and served.index.backend in answer.json()["detail"], family
