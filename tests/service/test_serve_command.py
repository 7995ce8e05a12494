"""`recindex serve` as a real process: one writer per state folder (a second server is refused,
naming the first; kill -9 frees the folder), read-only workers beside the writer, and the access log."""

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
from recindex.serve.state_lock import StateLocked

ROOT = Path(__file__).resolve().parents[2]
DATASET = "synthetic:n_users=120,n_items=50,n_attributes=12,seed=6"
KEY = {"X-API-Key": "k"}


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


def start_server(bundle: Path, state: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """A real `recindex serve` on a loopback port, ready: (process, base URL)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "recindex.cli", "serve", str(bundle), "--port", str(port), *options],
        env=child_env(RECINDEX_STATE_DIR=str(state), RECINDEX_API_KEYS="k"),
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
                return process, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            kill_9(process)
            pytest.fail("the server did not become ready in 120 s")
        time.sleep(0.2)


@pytest.fixture
def server(tiny_bundle, tmp_path):
    """A server started without options: (process, base URL, settings for its state folder)."""
    settings = ServiceSettings(
        bundle=tiny_bundle(DATASET), api_keys=["k"], state_dir=tmp_path / "state", compact_every=0
    )
    process, base = start_server(settings.bundle, settings.state_dir)
    yield process, base, settings
    if process.poll() is None:
        kill_9(process)


def test_a_second_server_on_the_same_state_folder_is_refused_naming_the_first(server):
    process, base, settings = server
    item = {"item_id": "a", "vector": [0.25] * 16}
    written = httpx.put(base + "/v1/items", json={"items": [item]}, headers=KEY)
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
    # the access log is off by default: nothing was printed for the requests above
    assert "/v1/items" not in process.stdout.read()


def test_access_log_prints_one_line_per_request(tiny_bundle, tmp_path):
    process, base = start_server(tiny_bundle(DATASET), tmp_path / "state", "--access-log")
    try:
        assert httpx.get(base + "/healthz").status_code == 200
        assert httpx.post(base + "/v1/recommend", json={"k": 1}).status_code == 422
    finally:
        process.terminate()
        process.wait(timeout=30)
    printed = process.stdout.read()
    assert '"GET /healthz HTTP/1.1" 200' in printed, printed
    assert '"POST /v1/recommend HTTP/1.1" 422' in printed, printed
