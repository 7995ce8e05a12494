"""Several processes on one state folder (`serve --workers N`): every worker takes writes, appends go
through the one log in one order, and every worker applies all of them, through compactions too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, suppress

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.service.replica_helpers import DATASET, KEY, eventually, top_item, unit
from tests.service.test_serve_command import child_env, free_port

from recindex.serve.runtime import build_app
from recindex.serve.settings import ServiceSettings
from recindex.serve.state import ServiceState
from recindex.serve.state_lock import StateLocked
from recindex.serve.wal import WriteAheadLog


@pytest.fixture
def settings(tiny_bundle, tmp_path):
    return ServiceSettings(
        bundle=tiny_bundle(DATASET), api_keys=["k"], state_dir=tmp_path / "state", compact_every=0
    )


def workers(stack: ExitStack, settings: ServiceSettings, n: int) -> list[TestClient]:
    return [
        stack.enter_context(TestClient(build_app(settings, worker=True), raise_server_exceptions=False))
        for _ in range(n)
    ]


def test_every_worker_takes_writes_and_sees_the_others(settings):
    with ExitStack() as stack:
        a, b = workers(stack, settings, 2)
        put = a.put("/v1/items", json={"items": [{"item_id": "from-a", "vector": unit(1)}]}, headers=KEY)
        assert put.status_code == 200, put.text
        eventually(lambda: top_item(b, unit(1)) == "from-a")

        # writes from both, interleaved: one numbering, and both end with the same items
        sequences = []
        for n in range(20):
            http = (a, b)[n % 2]
            item = {"item_id": f"i{n}", "vector": unit(100 + n)}
            sequences.append(http.put("/v1/items", json={"items": [item]}, headers=KEY).json()["sequence"])
        assert sorted(sequences) == list(range(2, 22))
        gone = b.request("DELETE", "/v1/items", json={"item_ids": ["from-a", "i3"]}, headers=KEY)
        assert gone.json()["items"] == 2
        eventually(lambda: a.get("/readyz").json()["items"] == 50 + 19)
        assert b.get("/readyz").json()["items"] == 50 + 19
        for n in (0, 7, 19):
            assert top_item(a, unit(100 + n)) == top_item(b, unit(100 + n)) == f"i{n}"
        assert top_item(a, unit(1)) != "from-a"

        # promotions switch one process only: refused, saying what to do instead
        staged = a.post("/v1/admin/bundles", json={"bundle": str(settings.bundle)}, headers=KEY)
        assert staged.status_code == 409 and "single-process" in staged.json()["detail"]


def test_workers_follow_compactions_and_a_late_worker_starts_from_the_snapshot(settings):
    with ExitStack() as stack:
        a, b = workers(stack, settings, 2)
        for n in range(3):
            a.put("/v1/items", json={"items": [{"item_id": f"c{n}", "vector": unit(n)}]}, headers=KEY)
        assert b.post("/v1/admin/compact", headers=KEY).json()["compacted"]  # b folds a's writes in too
        log = WriteAheadLog(ServiceState(settings.state_dir).log_path(None))
        assert [r["op"] for r in log.records()] == ["checkpoint"]
        b.put("/v1/items", json={"items": [{"item_id": "after", "vector": unit(9)}]}, headers=KEY)
        eventually(lambda: top_item(a, unit(9)) == "after")  # a follows the new file
        (late,) = workers(stack, settings, 1)
        assert late.get("/readyz").json()["items"] == 54
        assert top_item(late, unit(1)) == "c1" and top_item(late, unit(9)) == "after"


def test_a_worker_behind_two_compactions_loads_the_newer_snapshot(settings):
    behind = build_app(settings, worker=True)  # loaded, but not following yet
    with ExitStack() as stack:
        (a,) = workers(stack, settings, 1)
        for n in range(4):
            a.put("/v1/items", json={"items": [{"item_id": f"g{n}", "vector": unit(n)}]}, headers=KEY)
            a.post("/v1/admin/compact", headers=KEY)  # the log file is replaced each time
        with TestClient(behind) as late:
            eventually(lambda: late.get("/readyz").json()["items"] == 54)
            assert top_item(late, unit(3)) == "g3"
            assert behind.state.follower.error is None


def test_serve_with_two_workers_takes_writes_both_answer_and_both_end_with_the_supervisor(settings):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "recindex.cli", "serve", str(settings.bundle), "--port", str(port)]
        + ["--workers", "2"],
        env=child_env(RECINDEX_STATE_DIR=str(settings.state_dir), RECINDEX_API_KEYS="k"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the workers are killed with it at the end
    )
    base = f"http://127.0.0.1:{port}"
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 120
        while len(pids) < 2:  # both workers up: a new connection lands on either
            assert process.poll() is None, process.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "two workers did not answer in 120 s"
            try:
                pids.add(httpx.get(base + "/v1/replication", timeout=2).json()["process"])
            except httpx.HTTPError:
                time.sleep(0.2)
        # a second service on the folder is refused while the workers hold it, naming them (in process:
        # how `recindex serve` words the refusal and exits with 2 is test_serve_command's check)
        with pytest.raises(StateLocked, match="--workers 2"):
            build_app(settings)
        for n in range(6):
            item = {"item_id": f"w{n}", "vector": unit(200 + n)}
            put = httpx.put(base + "/v1/items", json={"items": [item]}, headers=KEY)
            assert put.status_code == 200, put.text
        complete: set[int] = set()
        deadline = time.monotonic() + 30
        while complete != pids:
            assert time.monotonic() < deadline, f"only workers {complete} of {pids} answer with all writes"
            with httpx.Client() as client:  # a new connection each time: either worker may answer
                process_id = client.get(base + "/v1/replication").json()["process"]
                answers = [
                    client.post(base + "/v1/recommend", json={"vector": unit(200 + n), "k": 1}).json()
                    for n in range(6)
                ]
            if [a["items"][0]["item_id"] for a in answers] == [f"w{n}" for n in range(6)]:
                complete.add(process_id)

        # kill -9 of the supervisor alone: its workers end too, and the port stops answering
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(running(pid) for pid in pids) or answers_on(base):
            assert time.monotonic() < deadline, (
                f"workers {[pid for pid in pids if running(pid)]} outlived their supervisor by 15 s"
            )
            time.sleep(0.1)
    finally:
        # whatever failed above, leave no worker behind (they are in the supervisor's process group)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (an orphan's reaper may be slow to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def answers_on(base: str) -> bool:
    try:
        httpx.get(base + "/readyz", timeout=1)
    except httpx.HTTPError:
        return False
    return True
