"""Compaction: the write-ahead log folded into a snapshot, restarts from it, and crashes around it."""

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recindex.serve.runtime import build_app
from recindex.serve.settings import ServiceSettings
from recindex.serve.state import ServiceState
from recindex.serve.wal import WriteAheadLog

DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
OTHER = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=8"
KEY = {"X-API-Key": "k"}


def unit(seed: int, dim: int = 16) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=dim)
    return (vector / np.linalg.norm(vector)).tolist()


def nearest(http, vector, k=1):
    return [i["item_id"] for i in http.post("/v1/recommend", json={"vector": vector, "k": k}).json()["items"]]


@pytest.fixture
def settings(tiny_bundle, tmp_path):
    return ServiceSettings(
        bundle=tiny_bundle(DATASET), api_keys=["k"], state_dir=tmp_path / "state", compact_every=0
    )


def write(http, items):
    response = http.put("/v1/items", json={"items": items}, headers=KEY)
    assert response.status_code == 200, response.text
    return response.json()["sequence"]


def test_a_restart_from_a_snapshot_and_the_log_after_it_sees_every_change(settings):
    with TestClient(build_app(settings)) as http:  # leaving the block stops the service, as a restart does
        items = [{"item_id": f"new-{i}", "vector": unit(i), "attributes": {"shelf": "a"}} for i in range(5)]
        write(http, items)
        catalogue_item = nearest(http, unit(100))[0]
        removed = {"item_ids": ["new-0", catalogue_item]}
        deleted = http.request("DELETE", "/v1/items", json=removed, headers=KEY)
        assert deleted.status_code == 200, deleted.text

        done = http.post("/v1/admin/compact", headers=KEY).json()
        assert done["compacted"] and done["seq"] == 2 and done["log_records_left"] == 0
        state = ServiceState(settings.state_dir)
        record = state.read()
        assert record["snapshot"] == done["snapshot"] and state.snapshot_path(record).is_dir()
        assert [r["op"] for r in WriteAheadLog(state.log_path(record)).records()] == ["checkpoint"]
        assert http.post("/v1/admin/compact", headers=KEY).json()["compacted"] is False  # nothing new

        assert write(http, [{"item_id": "after", "vector": unit(50)}]) == 3  # numbering goes on
        before = {s: nearest(http, unit(s), k=5) for s in (1, 2, 50, 100)}

    restarted = TestClient(build_app(settings))
    assert {s: nearest(restarted, unit(s), k=5) for s in (1, 2, 50, 100)} == before
    assert nearest(restarted, unit(3)) == ["new-3"] and nearest(restarted, unit(50)) == ["after"]
    assert "new-0" not in nearest(restarted, unit(0), k=10)
    assert catalogue_item not in nearest(restarted, unit(100), k=10)
    # an item added before the snapshot can trigger item-to-item retrieval after the restart
    similar = restarted.post("/v1/similar-items", json={"item_ids": ["new-1"], "k": 3}).json()
    assert similar["fallback"] is None and "new-1" not in [i["item_id"] for i in similar["items"]]
    filtered = restarted.post(
        "/v1/recommend", json={"vector": unit(2), "k": 10, "filter": {"where": 'shelf == "a"'}}
    ).json()
    assert {i["item_id"] for i in filtered["items"]} == {"new-1", "new-2", "new-3", "new-4"}


def test_a_crash_after_the_snapshot_but_before_the_log_is_cut_applies_nothing_twice(settings, monkeypatch):
    def crash(*_args, **_kwargs):
        raise OSError("simulated crash before the log was truncated")

    with TestClient(build_app(settings)) as http:
        write(http, [{"item_id": "a", "vector": unit(1)}])
        write(http, [{"item_id": "b", "vector": unit(2)}])
        monkeypatch.setattr(WriteAheadLog, "truncate_through", crash)
        with pytest.raises(OSError):
            http.post("/v1/admin/compact", headers=KEY)
        monkeypatch.undo()
    state = ServiceState(settings.state_dir)
    assert state.read()["snapshot_seq"] == 2  # the snapshot became current; the log still holds 1..2
    assert len(list(WriteAheadLog(state.log_path(state.read())).records())) == 2

    restarted = TestClient(build_app(settings))
    assert nearest(restarted, unit(1)) == ["a"] and nearest(restarted, unit(2)) == ["b"]
    assert restarted.get("/readyz").json()["items"] == 52  # 50 + 2, not 54


def test_a_promotion_after_compaction_starts_a_new_log_and_drops_the_old_snapshot(settings, tiny_bundle):
    with TestClient(build_app(settings)) as http:
        write(http, [{"item_id": "kept", "vector": unit(7)}])
        snapshot = http.post("/v1/admin/compact", headers=KEY).json()["snapshot"]
        state = ServiceState(settings.state_dir)
        old_log = state.log_path(state.read())

        staged = http.post("/v1/admin/bundles", json={"bundle": str(tiny_bundle(OTHER))}, headers=KEY).json()
        promoted = http.post(f"/v1/admin/bundles/{staged['bundle_id']}/promote", headers=KEY)
        assert promoted.status_code == 200, promoted.text
    record = state.read()
    assert record["bundle_id"] == staged["bundle_id"] and record["snapshot"] is None
    assert not (settings.state_dir / "snapshots" / snapshot).exists() and not old_log.exists()

    restarted = TestClient(build_app(settings))
    assert restarted.get("/readyz").json()["bundle_id"] == staged["bundle_id"]
    assert nearest(restarted, unit(7)) == ["kept"]  # carried over by vector (same dimension)


def test_the_background_compactor_folds_the_log_after_enough_changes(settings):
    app = build_app(settings.model_copy(update={"compact_every": 3}))
    app.state.compactor.poll_seconds = 0.05
    with TestClient(app) as http:  # the context runs the lifespan, which starts the compactor
        for i in range(3):
            write(http, [{"item_id": f"x{i}", "vector": unit(i)}])
        deadline = time.monotonic() + 10
        while app.state.compactor.last is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.compactor.last and app.state.compactor.last["compacted"], app.state.compactor.error
        assert ServiceState(settings.state_dir).read()["snapshot_seq"] == 3


def test_serve_accepts_a_state_directory_in_place_of_a_bundle(settings):
    from recindex.serve.runtime import settings_for

    with TestClient(build_app(settings)) as http:
        write(http, [{"item_id": "a", "vector": unit(1)}])
        assert http.post("/v1/admin/compact", headers=KEY).json()["compacted"]  # writes active.json
        served = http.get("/readyz").json()["bundle_id"]
    resolved = settings_for(settings.state_dir, None, None)
    assert resolved.state_dir == settings.state_dir and resolved.bundle is None
    restarted = TestClient(build_app(resolved))
    assert restarted.get("/readyz").json()["bundle_id"] == served
    assert nearest(restarted, unit(1)) == ["a"]
    assert settings_for(settings.bundle, None, None).bundle == settings.bundle
