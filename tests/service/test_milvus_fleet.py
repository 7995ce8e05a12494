"""Replicas over one Milvus standalone server (serve.fleet): three app instances share nothing but the
server and the bundles. A write on one replica is found by every replica's next query; a promotion on
one replica moves the fleet's alias and every replica follows; no answer pairs one bundle's encoder with
another bundle's collection. Skips, saying why, only where the Milvus server cannot start."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install 'recindex[milvus]')")

from recindex.pipelines import load_bundle  # noqa: E402
from recindex.pipelines.indexes import build_bundle_index  # noqa: E402
from recindex.serve.fleet import build_fleet_app  # noqa: E402
from recindex.serve.settings import ServiceSettings  # noqa: E402

FIRST = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
SECOND = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=7"
KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def bundles(tiny_bundle):
    return load_bundle(tiny_bundle(FIRST)), load_bundle(tiny_bundle(SECOND))


@pytest.fixture
def fleet(bundles, milvus_server):
    """fleet(poll_ms=...) -> (replicas' test clients, {bundle id: collection}, index name)."""
    uri = milvus_server("standalone")
    tag = uuid.uuid4().hex[:10]
    name = f"milvus-{tag}"
    collections = {}
    for letter, bundle in zip("ab", bundles, strict=True):
        options = {"uri": uri, "collection": f"fleet_{tag}_{letter}"}
        built = build_bundle_index(bundle, "milvus:HNSW", name, options=options)
        built.index.close()
        collections[bundle.bundle_id] = options["collection"]
    opened = []

    def start(count: int = 3, poll_ms: list[float] | None = None):
        clients = []
        for position in range(count):
            settings = ServiceSettings(
                api_keys=["test-key"],
                bundle=bundles[0].path,
                index=name,
                fleet=f"fleet_{tag}",
                min_index_recall=0.0,
                fleet_poll_ms=(poll_ms or [50.0] * count)[position],
            )
            client = TestClient(build_fleet_app(settings), raise_server_exceptions=False)
            opened.append(client.__enter__())
            clients.append(client)
        return clients, collections, name

    yield start
    for client in opened:
        client.__exit__(None, None, None)


def found(http, vector, k=5) -> list[str]:
    answer = http.post("/v1/recommend", json={"vector": list(map(float, vector)), "k": k})
    assert answer.status_code == 200, answer.text
    return [item["item_id"] for item in answer.json()["items"]]


def eventually(check, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def test_a_write_on_one_replica_is_found_by_every_replicas_next_query(fleet):
    (a, b, c), _, _ = fleet()
    for http in (a, b, c):  # a replica that starts on the live version lists it once, as active
        listed = http.get("/v1/admin/bundles", headers=KEY).json()["bundles"]
        assert [row["state"] for row in listed] == ["active"], listed
    direction = np.random.default_rng(1).standard_normal(16)
    item = {"item_id": "fresh", "vector": direction.tolist(), "attributes": {"popularity": 1e6}}
    catalogue = len(c.app.state.fleet.writer.version.popular)
    assert a.put("/v1/items", json={"items": [item]}, headers=KEY).status_code == 200
    for http in (a, b, c):  # Strong reads: the very next query, no waiting
        assert found(http, direction)[0] == "fresh"
    where = {"vector": direction.tolist(), "k": 3, "filter": {"where": "popularity > 1000"}}
    assert [i["item_id"] for i in c.post("/v1/recommend", json=where).json()["items"]] == ["fresh"]

    deleted = b.request("DELETE", "/v1/items", json={"item_ids": ["fresh"]}, headers=KEY)
    assert deleted.status_code == 200 and deleted.json()["items"] == 1
    for http in (a, b, c):
        assert "fresh" not in found(http, direction)
    # The item records are shared too: a replica that wrote neither change follows both in what it
    # keeps beside the collection (here its popularity fallback list).
    eventually(lambda: len(c.app.state.fleet.writer.version.popular) == catalogue)
    assert c.app.state.fleet.seen["fresh"] > 0


def test_items_added_elsewhere_serve_as_triggers_once_followed(fleet):
    (a, b), _, _ = fleet(2)
    direction = np.random.default_rng(2).standard_normal(16)
    assert a.put(
        "/v1/items", json={"items": [{"item_id": "seed", "vector": direction.tolist()}]}, headers=KEY
    )
    # b learns of the item from the item table (its follower), then can use it as a trigger
    eventually(lambda: b.post("/v1/similar-items", json={"item_ids": ["seed"], "k": 3}).status_code == 200)


def test_a_promotion_on_one_replica_is_followed_by_all_and_no_answer_is_mixed(fleet, bundles):
    (a, b, c), collections, name = fleet()
    first, second = (bundle.bundle_id for bundle in bundles)
    direction = np.random.default_rng(3).standard_normal(16)
    before = {"item_id": "carried", "features": None, "vector": direction.tolist()}
    assert b.put("/v1/items", json={"items": [before]}, headers=KEY).status_code == 200

    mixed, answers, stop = [], [], threading.Event()

    def read(http):
        while not stop.is_set():
            body = http.post("/v1/recommend", json={"vector": direction.tolist(), "k": 3}).json()
            answers.append((body["bundle_id"], body["collection"]))
            if collections.get(body["bundle_id"]) != body["collection"]:
                mixed.append(body)

    readers = [threading.Thread(target=read, args=(http,)) for http in (b, c)]
    for thread in readers:
        thread.start()
    staged = a.post("/v1/admin/bundles", json={"bundle": str(bundles[1].path), "index": name}, headers=KEY)
    assert staged.status_code == 200, staged.text
    promoted = a.post(f"/v1/admin/bundles/{second}/promote", headers=KEY)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["collection"] == collections[second]
    for http in (a, b, c):
        eventually(lambda http=http: http.get("/readyz").json()["collection"] == collections[second])
    # the item written before the promotion was carried into the new version's collection
    for http in (a, b, c):
        assert found(http, direction)[0] == "carried"

    rolled = c.post("/v1/admin/rollback", headers=KEY)  # any replica that followed can roll back
    assert rolled.status_code == 200, rolled.text
    for http in (a, b, c):
        eventually(lambda http=http: http.get("/readyz").json()["collection"] == collections[first])
    stop.set()
    for thread in readers:
        thread.join()
    assert not mixed
    assert {pair[0] for pair in answers} == {first, second}  # the readers saw both versions


def test_a_replica_that_missed_the_switch_writes_into_the_new_version(fleet, bundles):
    # b polls once a minute: it misses the switch, and its next write finds the alias moved
    (a, b), collections, name = fleet(2, poll_ms=[50.0, 60_000.0])
    second = bundles[1].bundle_id
    a.post("/v1/admin/bundles", json={"bundle": str(bundles[1].path), "index": name}, headers=KEY)
    assert a.post(f"/v1/admin/bundles/{second}/promote", headers=KEY).status_code == 200
    assert b.get("/readyz").json()["collection"] != collections[second]  # still the old version
    direction = np.random.default_rng(4).standard_normal(16)
    late = {"item_id": "late", "vector": direction.tolist()}
    assert b.put("/v1/items", json={"items": [late]}, headers=KEY).status_code == 200
    assert b.get("/readyz").json()["collection"] == collections[second]  # the write followed the alias
    assert found(a, direction)[0] == "late"
    assert found(b, direction)[0] == "late"


def test_a_collection_whose_version_tag_disagrees_is_not_served(fleet, bundles):
    (a,), collections, name = fleet(1)
    fleet_side = a.app.state.fleet
    wrong = collections[bundles[1].bundle_id]
    fleet_side.versions.record(wrong, bundle_id="someone-else", bundle=str(bundles[1].path), index=name)
    with pytest.raises(Exception, match="not serving a mixed version"):
        fleet_side.load(wrong)


def test_a_replica_started_after_a_promotion_serves_the_version_the_alias_names(fleet, bundles):
    (a,), collections, name = fleet(1)
    second = bundles[1].bundle_id
    a.post("/v1/admin/bundles", json={"bundle": str(bundles[1].path), "index": name}, headers=KEY)
    assert a.post(f"/v1/admin/bundles/{second}/promote", headers=KEY).status_code == 200
    (late,), _, _ = fleet(1)  # its command line names the first bundle; the alias names the second
    ready = late.get("/readyz").json()
    assert (ready["bundle_id"], ready["collection"]) == (second, collections[second])
