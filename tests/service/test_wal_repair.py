"""A log damaged by two writers (records 1, 2, 2, 3): refused on start with the way out, then repaired by
`recindex wal repair`, which keeps every record before the damage and moves the rest aside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recindex.errors import RecIndexError
from recindex.serve.runtime import build_app
from recindex.serve.settings import ServiceSettings
from recindex.serve.state import ServiceState
from recindex.serve.wal import WalCorrupt, WriteAheadLog, encode_vectors, read_frame
from recindex.serve.wal_repair import repair_log

ROOT = Path(__file__).resolve().parents[2]
DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
KEY = {"X-API-Key": "k"}


def unit(seed: int, dim: int = 16) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=dim)
    return (vector / np.linalg.norm(vector)).tolist()


def nearest(http, vector) -> str:
    return http.post("/v1/recommend", json={"vector": vector, "k": 1}).json()["items"][0]["item_id"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "recindex.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def damaged(tiny_bundle, tmp_path):
    """A state folder whose log a second, unlocked writer interleaved: seqs 1, 2, 2, 3."""
    settings = ServiceSettings(
        bundle=tiny_bundle(DATASET), api_keys=["k"], state_dir=tmp_path / "state", compact_every=0
    )
    with TestClient(build_app(settings)) as http:
        put = {"items": [{"item_id": "a", "vector": unit(1)}]}
        assert http.put("/v1/items", json=put, headers=KEY).json()["sequence"] == 1
        bundle_id = http.get("/readyz").json()["bundle_id"]
        # what a second service did before the lock existed: open the same log and append to it
        rogue = WriteAheadLog(ServiceState(settings.state_dir).log_path(None)).open()
        put = {"items": [{"item_id": "b", "vector": unit(2)}]}
        assert http.put("/v1/items", json=put, headers=KEY).json()["sequence"] == 2
        vectors = encode_vectors(np.asarray([unit(3)], np.float32))
        rogue_record = {"item_ids": ["rogue"], "vectors": vectors, "attributes": {}, "features": [None]}
        assert rogue.append("upsert", bundle_id=bundle_id, **rogue_record) == 2
        rogue.close()
        put = {"items": [{"item_id": "c", "vector": unit(4)}]}
        assert http.put("/v1/items", json=put, headers=KEY).json()["sequence"] == 3
    return settings


def test_a_refused_log_says_how_to_recover(damaged):
    with pytest.raises(WalCorrupt) as refused:
        build_app(damaged)
    message = str(refused.value)
    assert "record 2 where 3 was expected" in message
    assert f"recindex wal repair {damaged.state_dir}" in message
    # the refusal let go of the folder: the repair (and a later start) can take it
    assert repair_log(damaged.state_dir, dry_run=True).problem


def test_repair_keeps_the_records_before_the_damage_and_moves_the_rest_aside(damaged):
    log = ServiceState(damaged.state_dir).log_path(None)
    original = log.read_bytes()

    dry = cli("wal", "repair", str(damaged.state_dir), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout and log.read_bytes() == original

    done = cli("wal", "repair", str(damaged.state_dir))
    assert done.returncode == 0, done.stderr
    report = done.stdout
    assert "kept: 2 records" in report, report
    assert "seq 2 upsert 1 item(s): rogue" in report and "seq 3 upsert 1 item(s): c" in report, report
    assert "send those writes again" in report

    assert [r["seq"] for r in WriteAheadLog(log).records()] == [1, 2]
    cut = sorted(log.parent.glob(log.name + ".cut-*"))
    assert len(cut) == 1 and log.read_bytes() + cut[0].read_bytes() == original  # nothing deleted

    with TestClient(build_app(damaged)) as http:  # the service starts again with what was kept
        assert nearest(http, unit(1)) == "a" and nearest(http, unit(2)) == "b"
        assert nearest(http, unit(3)) != "rogue" and nearest(http, unit(4)) != "c"
        put = {"items": [{"item_id": "c", "vector": unit(4)}]}  # the cut write, sent again
        assert http.put("/v1/items", json=put, headers=KEY).json()["sequence"] == 3

    assert "intact" in cli("wal", "repair", str(damaged.state_dir)).stdout  # a second run: nothing to cut


def test_records_the_snapshot_covers_are_not_lost_and_numbering_goes_on_after_it(tmp_path):
    # a crash between a snapshot (through seq 4) and the log cut, then damage among records it covers
    state = ServiceState(tmp_path)
    state.write({"bundle_id": "b1", "bundle": "x", "log": "items.wal", "snapshot": "s", "snapshot_seq": 4})
    log_path = tmp_path / "items.wal"
    first = WriteAheadLog(log_path).open()
    first.append("delete", bundle_id="b1", item_ids=["1"])
    second = WriteAheadLog(log_path).open()
    for n in (2, 3, 4):
        first.append("delete", bundle_id="b1", item_ids=[str(n)])
    second.append("delete", bundle_id="b1", item_ids=["x"])  # a second 2
    first.close()
    second.close()

    report = repair_log(tmp_path)
    assert report.kept == 4 and report.last_kept_seq == 4 and [r.seq for r in report.cut_records] == [2]
    assert report.cut_records[0].covered and not report.lost  # in the snapshot: nothing to send again

    # and when the damage comes before the snapshot's seq, the log restarts from a checkpoint at it
    state.write({"bundle_id": "b1", "bundle": "x", "log": "items.wal", "snapshot": "s", "snapshot_seq": 9})
    data = log_path.read_bytes()
    with open(log_path, "ab") as handle:
        handle.write(data[: read_frame(data, 0)[1]])  # record 1 again, after record 4
    with pytest.raises(WalCorrupt):
        list(WriteAheadLog(log_path).records())
    report = repair_log(tmp_path)
    assert report.last_kept_seq == 4 and [(r.seq, r.covered) for r in report.cut_records] == [(1, True)]
    reopened = WriteAheadLog(log_path).open()
    assert [(r["seq"], r["op"]) for r in reopened.records()] == [(9, "checkpoint")]
    assert reopened.append("delete", bundle_id="b1", item_ids=["z"]) == 10


def test_repair_refuses_a_folder_without_a_log(tmp_path):
    with pytest.raises(RecIndexError, match="does not exist"):
        repair_log(tmp_path / "nowhere")
    with pytest.raises(RecIndexError, match="no log to repair"):
        repair_log(tmp_path)
    assert json.loads((tmp_path / "writer.lock").read_text())["pid"] == os.getpid()  # info, not the lock
