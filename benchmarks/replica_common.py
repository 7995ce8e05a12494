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
    options.add_argument("--bundle", required=True, help="the bundle to serve")
    options.add_argument(
        "--index",
        default="faiss-HNSW32",
        help="the bundle's index to serve (default faiss-HNSW32; 'exact': exact search, so that a write "
        "not found is the log's doing, never the graph's)",
    )
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


def serve_command(bundle: str, port: int, index: str, *options: str) -> list[str]:
    chosen = [] if index == "exact" else ["--index", index]  # serve's default is exact search
    return [sys.executable, "-m", "recindex.cli", "serve", bundle, *chosen, "--port", str(port), *options]


def kill_9(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def catalogue_probes(bundle: str, n: int, seed: int, top: int = 10) -> np.ndarray:
    """`n` probe vectors from the catalogue itself: copies of item vectors of `bundle` that exact
    search ranks within their own top `top`, ties included, so that an upserted copy (a new id with a
    catalogue vector) ties with its original inside any exact top 100 and a miss is the index's or
    the log's, never the probe's.
    Random unit vectors, far from a trained catalogue, are points a graph index may miss whatever the
    log does (the replica benchmarks' first probes were such vectors)."""
    items = np.load(Path(bundle) / "item_embeddings.npy", allow_pickle=False).astype(np.float32)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for _ in range(0, len(items), 256):
        rows = rng.choice(len(items), 256, replace=False)
        scores = items[rows] @ items.T
        own = scores[np.arange(len(rows)), rows]
        # items scoring at least its own score, itself and its duplicates included: a trained
        # catalogue holds exact duplicates (items with the same features), and ties cut anywhere
        rank = (scores >= own[:, None] - 1e-6).sum(axis=1)
        chosen.extend(int(r) for r in rows[rank <= top] if r not in chosen)
        if len(chosen) >= n:
            return items[chosen[:n]]
    raise SystemExit(f"{bundle}: fewer than {n} items rank within their own top {top}")


def finds(client: httpx.Client, base: str, vector, item_id: str, k: int = 100) -> bool:
    """Whether the top `k` answers to `vector` name `item_id` (k above 1: a probe ties with the
    catalogue item it copies, and a graph index ranks near-ties loosely; visibility is measured)."""
    answer = client.post(
        f"{base}/v1/recommend", json={"vector": list(map(float, vector)), "k": k}, timeout=10
    )
    return item_id in {item["item_id"] for item in answer.json().get("items", [])}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
