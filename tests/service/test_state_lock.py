"""One writer per state folder: real processes contend for the lock, and kill -9 frees it.

The lock is what keeps two services from interleaving one log (records 1, 2, 2 and a log that no
longer opens). These tests use separate processes, because that is where the lock must hold: a child
that holds it, a real `recindex serve`, a second `recindex serve` on the same folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from recindex.serve.runtime import build_app
from recindex.serve.settings import ServiceSettings
from recindex.serve.state_lock import StateLock, StateLocked
from recindex.serve.wal_repair import repair_log

ROOT = Path(__file__).resolve().parents[2]
DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
HOLDER = """
import sys, time
from recindex.serve.state_lock import StateLock
StateLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def child_env(**extra) -> dict:
    """The environment of a child process that runs this worktree's code (not an installed copy)."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_9(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def test_a_second_process_is_refused_while_the_first_holds_the_lock_and_kill_9_frees_it(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateLocked) as refused:
            StateLock(tmp_path).acquire()
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message, message
        # the repair command takes the same lock: it cannot cut a log under a running writer
        with pytest.raises(StateLocked):
            repair_log(tmp_path)
    finally:
        kill_9(holder)
    with StateLock(tmp_path) as lock:  # the kernel dropped the dead holder's lock: nothing to clean
        assert lock.held


@pytest.fixture
def server(tiny_bundle, tmp_path):
    """A real `recindex serve` on a loopback port: (process, base URL, its settings)."""
    state = tmp_path / "state"
    port = free_port()
    env = child_env(RECINDEX_STATE_DIR=str(state), RECINDEX_API_KEYS='["k"]')
    process = subprocess.Popen(
        [sys.executable, "-m", "recindex.cli", "serve", str(tiny_bundle(DATASET)), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            kill_9(process)
            pytest.fail("the server did not become ready in 120 s")
        time.sleep(0.2)
    settings = ServiceSettings(bundle=tiny_bundle(DATASET), api_keys=["k"], state_dir=state, compact_every=0)
    yield process, base, settings
    if process.poll() is None:
        kill_9(process)


def test_a_second_server_on_the_same_state_folder_is_refused_naming_the_first(server):
    process, base, settings = server
    item = {"item_id": "a", "vector": [0.25] * 16}
    written = httpx.put(base + "/v1/items", json={"items": [item]}, headers={"X-API-Key": "k"})
    assert written.json()["sequence"] == 1, written.text

    second = subprocess.run(
        [sys.executable, "-m", "recindex.cli", "serve", str(settings.bundle), "--port", str(free_port())],
        env=child_env(RECINDEX_STATE_DIR=str(settings.state_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2, second.stderr
    error = second.stderr.strip()
    assert f"pid {process.pid}" in error and "Traceback" not in error, error
    with pytest.raises(StateLocked, match=f"pid {process.pid}"):
        build_app(settings)  # in-process too

    # read-only workers do not write, so they take no lock and start beside the writer
    reader = build_app(settings.model_copy(update={"read_only": True}))
    assert reader.state.writer is None and len(reader.state.recommender.active.index) == 51

    kill_9(process)  # no shutdown, no cleanup: the lock goes with the process
    restarted = build_app(settings)
    try:
        assert restarted.state.state_lock.held
        assert len(restarted.state.recommender.active.index) == 51  # the acknowledged write survived
    finally:
        restarted.state.state_lock.release()
        restarted.state.writer.log.close()
