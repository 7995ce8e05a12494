"""Replicas over a NATS JetStream stream (`log = "nats://..."`), on a 3-node cluster on loopback: any
replica takes writes, every replica applies them in the stream's order, a replica that restarts or
starts late catches up from its snapshot plus the stream, and the stream's leader may die."""

from __future__ import annotations

import shutil
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient
from tests.service.jetstream_cluster import JetStreamCluster
from tests.service.replica_helpers import DATASET, KEY, eventually, top_item, unit

from recindex.errors import RecIndexError
from recindex.serve.replication_nats import parse_stream_url
from recindex.serve.runtime import build_app
from recindex.serve.settings import ServiceSettings, load_settings

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None, reason="nats-server is not installed (apt-get install nats-server)"
)
pytest.importorskip("nats", reason="nats-py is not installed (pip install 'recindex[replicas]')")

STREAM_SECONDS = 20.0  # a replica applies what the stream delivers: after a leader dies, an election first


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = JetStreamCluster(tmp_path_factory.mktemp("jetstream")).start()
    yield nodes
    nodes.stop()


@pytest.fixture
def base(tiny_bundle, tmp_path):
    return ServiceSettings(bundle=tiny_bundle(DATASET), api_keys=["k"], compact_every=0)


def replica(stack: ExitStack, base: ServiceSettings, folder, url: str) -> TestClient:
    settings = base.model_copy(update={"state_dir": folder, "log": url})
    return stack.enter_context(TestClient(build_app(settings), raise_server_exceptions=False))


def test_any_replica_takes_writes_and_late_replicas_catch_up(cluster, base, tmp_path):
    url = cluster.url("catchup")
    with ExitStack() as stack:
        replicas = [replica(stack, base, tmp_path / f"r{i}", url) for i in range(3)]
        for n in range(9):  # each replica takes a third of the writes
            item = {"item_id": f"j{n}", "vector": unit(n)}
            put = replicas[n % 3].put("/v1/items", json={"items": [item]}, headers=KEY)
            assert put.status_code == 200, put.text
            assert put.json()["sequence"] == n + 1  # the stream's numbering, one for all
        gone = replicas[2].request("DELETE", "/v1/items", json={"item_ids": ["j4"]}, headers=KEY)
        assert gone.json()["items"] == 1
        for http in replicas:
            eventually(lambda http=http: http.get("/readyz").json()["items"] == 58, STREAM_SECONDS)
            assert top_item(http, unit(0)) == "j0" and top_item(http, unit(8)) == "j8"
            assert top_item(http, unit(4)) != "j4"
        assert replicas[1].post("/v1/admin/compact", headers=KEY).json()["seq"] == 10
        staged = replicas[0].post("/v1/admin/bundles", json={"bundle": str(base.bundle)}, headers=KEY)
        assert staged.status_code == 409

    with ExitStack() as stack:  # r1 from its snapshot plus what came after; r3 from the stream alone
        replicas = [replica(stack, base, tmp_path / "r0", url)]
        replicas[0].put("/v1/items", json={"items": [{"item_id": "later", "vector": unit(50)}]}, headers=KEY)
        replicas += [replica(stack, base, tmp_path / name, url) for name in ("r1", "r3")]
        for http in replicas:
            assert http.get("/readyz").json()["items"] == 59  # ready only once caught up
            assert top_item(http, unit(50)) == "later" and top_item(http, unit(4)) != "j4"
        assert replicas[1].get("/v1/replication").json()["applied"] == 11


def test_no_acknowledged_write_is_lost_when_the_stream_leader_dies(cluster, base, tmp_path):
    stream = "leaderkill"
    with ExitStack() as stack:
        replicas = [replica(stack, base, tmp_path / f"r{i}", cluster.url(stream)) for i in range(3)]
        acknowledged = []
        leader = cluster.node(cluster.stream_leader(stream))
        for n in range(40):
            if n == 10:
                leader.kill_9()  # mid-stream: the next writes wait for a new leader, then go on
            item = {"item_id": f"k{n}", "vector": unit(1000 + n)}
            put = replicas[n % 3].put("/v1/items", json={"items": [item]}, headers=KEY)
            if put.status_code == 200:
                acknowledged.append(n)
        assert len(acknowledged) == 40, "writes fail only if no quorum is left"
        for http in replicas:
            eventually(lambda http=http: http.get("/readyz").json()["items"] == 90, STREAM_SECONDS)
            assert all(top_item(http, unit(1000 + n)) == f"k{n}" for n in acknowledged)
        leader.start()  # back for the other tests of the module
        cluster.wait_ready()


def test_stream_urls_are_checked():
    address = parse_stream_url("nats://a:1,b:2/items?replicas=3")
    assert address.servers == ["nats://a:1", "nats://b:2"] and address.replicas == 3
    for bad in ("nats://a:1", "nats://a:1/it.ems", "nats://a:1/items?copies=3", "http://a:1/items"):
        with pytest.raises(RecIndexError, match="expected|the one option"):
            parse_stream_url(bad)
    with pytest.raises(RecIndexError, match="service setting log"):
        load_settings(log="nats://a:1/no such stream")
