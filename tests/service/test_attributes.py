"""GET /v1/attributes: what the active version's items can be filtered on, with sample values, including
attributes that arrive with items written since the bundle."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import make_index
from recindex.serve.app import create_app
from recindex.serve.items import ItemChange, ItemWriter
from recindex.serve.recommender import Recommender, ServingVersion
from recindex.serve.settings import ServiceSettings
from recindex.serve.wal import WriteAheadLog

DATASET = "synthetic:n_users=120,n_items=50,seed=5"


def test_attributes_name_kinds_counts_and_examples_and_follow_writes(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle(DATASET))
    n = len(bundle.item_embeddings)
    attributes = {
        "brand": [None if i % 5 == 0 else ("acme" if i % 3 else "globex") for i in range(n)],
        "price": [float(i) for i in range(n)],
        "in_stock": [i % 3 != 0 for i in range(n)],
    }
    index = make_index("exact", bundle.item_embeddings.shape[1])
    index.add(np.arange(n), bundle.item_embeddings, attributes=attributes)
    version = ServingVersion.of(bundle, index, attributes=attributes)
    writer = ItemWriter(version, WriteAheadLog(tmp_path / "items.wal").open())
    http = TestClient(create_app(ServiceSettings(), Recommender(version), writer))

    page = http.get("/v1/attributes").json()
    found = {a["name"]: a for a in page["attributes"]}
    assert page["bundle_id"] == version.bundle_id and set(found) == set(attributes)
    brands = [b for b in attributes["brand"] if b is not None]
    assert found["brand"]["kind"] == "str" and found["brand"]["items"] == len(brands)
    assert found["brand"]["examples"] == sorted(set(brands), key=lambda b: -brands.count(b))
    prices = np.asarray(attributes["price"])
    assert found["price"]["examples"] == [prices.min(), np.median(prices), prices.max()]
    assert found["in_stock"] == {"name": "in_stock", "kind": "bool", "items": n, "examples": [True, False]}
    where = f'brand == "{found["brand"]["examples"][0]}" and price >= {found["price"]["examples"][1]}'
    answer = http.post("/v1/recommend", json={"vector": [0.25] * 16, "k": 3, "filter": {"where": where}})
    assert answer.status_code == 200 and answer.json()["fallback"] is None  # the examples make a filter

    writer.upsert([ItemChange("new", vector=[0.5] * 16, attributes={"shelf": "top"})])
    shelf = next(a for a in http.get("/v1/attributes").json()["attributes"] if a["name"] == "shelf")
    assert shelf == {"name": "shelf", "kind": "str", "items": 1, "examples": ["top"]}
