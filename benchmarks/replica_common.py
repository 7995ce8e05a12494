"""What the replica benchmarks share: their command line and scratch folder, the report they print,
servers on loopback ports, unit vectors, writes and look-ups.

    args = parser(__doc__, writes=400).parse_args()
    with scratch("replica-x-") as folder:
        started = time.perf_counter()
        ...
        print_report(report, started)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
HEADERS = {"X-API-Key": KEY}
MAX_WRITES = 5000  # a bound on --writes: a run stays minutes, not hours


def parser(doc: str, writes: int) -> argparse.ArgumentParser:
    """The options every replica benchmark takes (--bundle, --writes); a script adds its own."""
    options = argparse.ArgumentParser(description=doc.splitlines()[0])
    options.add_argument("--bundle", required=True, help="the bundle to serve (served with faiss-HNSW32)")
    options.add_argument("--writes", type=int, default=writes, help=f"writes to send (at most {MAX_WRITES})")
    return options


def writes_wanted(args: argparse.Namespace) -> int:
    if args.writes < 1:
        raise SystemExit(f"--writes must be at least 1, got {args.writes}")
    return min(args.writes, MAX_WRITES)


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder for the run's state folders, removed at the end whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def print_report(report: dict, started: float) -> None:
    """The run's report as JSON on stdout, with its wall time since `started` (time.perf_counter)."""
    print(json.dumps({**report, "wall_seconds": round(time.perf_counter() - started, 1)}, indent=2))


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


def start(
    command: list[str], environment: dict, port: int, ready_seconds: float = 300, nice: int = 0
) -> subprocess.Popen:
    """Start a server (`nice` steps below this process's priority: by default at it, so that a script
    run under nice lowers its servers too) and wait for /readyz on `port`.
    Its log goes to a temporary file, not a pipe: a pipe nobody reads fills up (64 KB) and then blocks
    the server at its next log line."""
    with tempfile.NamedTemporaryFile(prefix=f"server-{port}-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            ["nice", "-n", str(nice), *command], env=environment, stderr=log, stdout=log
        )
    process.log_path = log.name
    deadline = time.monotonic() + ready_seconds
    while True:
        if process.poll() is not None:
            tail = Path(log.name).read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited: {tail}")
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
