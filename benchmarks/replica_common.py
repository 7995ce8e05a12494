"""What the replica benchmarks share: servers on loopback ports, unit vectors, writes and look-ups."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
HEADERS = {"X-API-Key": KEY}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env(**extra: str) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "RECINDEX_API_KEYS": KEY,
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def start(command: list[str], environment: dict, port: int, ready_seconds: float = 300) -> subprocess.Popen:
    """Start a server (under nice 19) and wait for /readyz on `port`."""
    process = subprocess.Popen(
        ["nice", "-n", "19", *command], env=environment, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + ready_seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server on port {port} not ready in {ready_seconds} s")
        time.sleep(0.2)


def serve_command(bundle: str, port: int, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "recindex.cli",
        "serve",
        bundle,
        "--index",
        "faiss-HNSW32",
        "--port",
        str(port),
        *options,
    ]


def kill_9(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def finds(client: httpx.Client, base: str, vector, item_id: str, k: int = 100) -> bool:
    """Whether the top `k` answers to `vector` name `item_id` (k above 1: HNSW may rank a random
    vector, far from the catalogue's, below a few neighbours; visibility is what is measured)."""
    answer = client.post(
        f"{base}/v1/recommend", json={"vector": list(map(float, vector)), "k": k}, timeout=10
    )
    return item_id in {item["item_id"] for item in answer.json().get("items", [])}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
