"""Blue/green: stage, gate on index recall, promote with item carry-over, restart on the promoted bundle,
roll back."""

from fastapi.testclient import TestClient

from recindex.pipelines import load_bundle
from recindex.pipelines.indexes import build_bundle_index
from recindex.serve.runtime import build_app
from recindex.serve.settings import ServiceSettings

OLD = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
NEW = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=8"
KEY = {"X-API-Key": "k"}


def start(settings):
    return TestClient(build_app(settings), raise_server_exceptions=False)


def test_promote_carries_items_rolls_back_and_survives_restart(tiny_bundle, tmp_path):
    old, new = tiny_bundle(OLD), tiny_bundle(NEW)
    settings = ServiceSettings(bundle=old, api_keys=["k"], state_dir=tmp_path / "state")
    tokens = [load_bundle(old).data.item_features.names[t] for t in load_bundle(old).data.item_features.of(0)]
    model = load_bundle(new).model
    ids = [load_bundle(new).data.item_features.names.index(t) for t in tokens]
    content = model.content_vectors([ids]).detach().numpy()[0].tolist()

    with start(settings) as http:  # leaving the block stops the service (one writer per state folder)
        items = [
            {"item_id": "by-content", "features": tokens},
            {"item_id": "by-vector", "vector": [0.3] * 16},
        ]
        assert http.put("/v1/items", json={"items": items}, headers=KEY).status_code == 200

        staged = http.post("/v1/admin/bundles", json={"bundle": str(new)}, headers=KEY)
        assert staged.status_code == 200, staged.text
        new_id = staged.json()["bundle_id"]
        promoted = http.post(f"/v1/admin/bundles/{new_id}/promote", headers=KEY)
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["carried"] == 2 and promoted.json()["index_recall"] == 1.0
        answer = http.post("/v1/recommend", json={"vector": content, "k": 1}).json()
        assert answer["bundle_id"] == new_id and answer["items"][0]["item_id"] == "by-content"

        back = http.post("/v1/admin/rollback", headers=KEY)
        assert back.status_code == 200, back.text
        assert http.post("/v1/recommend", json={"vector": content, "k": 1}).json()["bundle_id"] != new_id
        again = http.post(f"/v1/admin/bundles/{new_id}/promote", headers=KEY)  # kept warm: promote again
        assert again.status_code == 200, again.text
        listed = http.get("/v1/admin/bundles", headers=KEY).json()
        assert [h["action"] for h in listed["history"]] == ["staged", "promoted", "rolled back", "promoted"]
        assert "recindex_swaps 3.0" in http.get("/metrics").text

    with start(settings) as restarted:  # same state_dir: the promoted bundle and the carried items come back
        answer = restarted.post("/v1/recommend", json={"vector": content, "k": 1}).json()
        assert answer["bundle_id"] == new_id and answer["items"][0]["item_id"] == "by-content"


def test_gate_refuses_a_poor_index_and_says_why(tiny_bundle, tmp_path):
    # Enough items that one IVF cell of 16 fills a top-100 list (a short list would be completed exactly).
    old, new = tiny_bundle(OLD), tiny_bundle("synthetic:n_users=300,n_items=2000,n_attributes=12,seed=9")
    built = build_bundle_index(
        load_bundle(new), "faiss:IVF16,Flat", "poor", search_params={"nprobe": 1}, overwrite=True
    )
    http = start(ServiceSettings(bundle=old, api_keys=["k"], state_dir=tmp_path / "state"))
    staged = http.post("/v1/admin/bundles", json={"bundle": str(new), "index": "poor"}, headers=KEY).json()
    refused = http.post(f"/v1/admin/bundles/{staged['bundle_id']}/promote", headers=KEY)
    assert refused.status_code == 409
    assert "below the required 0.900" in refused.json()["detail"]
    # The gate runs the build's own self-check: the figure it refuses with is the one the build stored.
    assert f"finds {built.check.recall_at_k:.3f} of exact search's top-100" in refused.json()["detail"]
    assert http.get("/readyz").json()["bundle_id"] != staged["bundle_id"]
    assert http.post("/v1/admin/rollback", headers=KEY).status_code == 409
    assert http.post("/v1/admin/bundles/nope/promote", headers=KEY).status_code == 409
    assert http.post("/v1/admin/bundles", json={"bundle": str(tmp_path)}, headers=KEY).status_code == 422
