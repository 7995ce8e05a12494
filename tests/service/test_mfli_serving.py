"""What only MFLI does behind the service (what every family does: test_family_serving.py): similar
items come from the trigger item's leaves, and the admin rebuild starts the count of placed items anew."""

import numpy as np

KEY = {"X-API-Key": "test-key"}


def test_similar_items_come_from_the_trigger_items_leaves(family_bundle, serve):
    served = serve(family_bundle("mfli"), "mfli")
    trigger = str(served.version.bundle.data.item_ids[7])
    answer = served.http.post("/v1/similar-items", json={"item_ids": [trigger], "k": 5})
    assert answer.status_code == 200, answer.text
    found = [served.version.item_lookup[item["item_id"]] for item in answer.json()["items"]]
    assert found and 7 not in found
    trigger_leaves = served.index._leaf_of[7]
    assert all((served.index._leaf_of[item] == trigger_leaves).any() for item in found)


def test_items_placed_since_the_last_rebuild_are_counted_until_the_next(family_bundle, serve):
    served = serve(family_bundle("mfli"), "mfli", leaves=64)
    vectors = np.random.default_rng(2).standard_normal((3, served.index.dim))
    items = [{"item_id": f"v{i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
    assert served.http.put("/v1/items", json={"items": items}, headers=KEY).status_code == 200
    assert served.index.placed_since_rebuild == 3
    assert served.http.post("/v1/admin/rebuild", headers=KEY).status_code == 200
    assert served.index.placed_since_rebuild == 0
