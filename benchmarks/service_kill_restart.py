"""Durability under SIGKILL, and upsert-to-visible latency, against a real `recindex serve` on loopback.

    python benchmarks/service_kill_restart.py --bundle runs/bench/ml-100k --rounds 5

Each round starts the server (exact search, so a unit vector's nearest item is itself), streams
single-item upserts with random unit vectors, and after each acknowledged one asks /v1/recommend for
that vector: the time from sending the upsert to the answer naming the item is the upsert-to-visible
latency. At a random moment the server is killed with SIGKILL mid-stream and started again on the
same state directory. The server compacts its log every --compact-every changes, so kills also
land during and between compactions and restarts start from a snapshot. At the end every
acknowledged item is looked up by its vector; the bar is that none is missing. Bounded: --rounds
rounds of --seconds each, loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle: str, state: Path, port: int, extra_env: dict | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "RECINDEX_API_KEYS": json.dumps([KEY]),
        "RECINDEX_STATE_DIR": str(state),
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "recindex.cli", "serve", bundle, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise SystemExit(f"server exited: {process.stderr.read().decode()[-2000:]}")
    raise SystemExit("server did not become ready in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default="runs/bench/ml-100k")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="upsert stream length before the kill")
    parser.add_argument(
        "--compact-every",
        type=int,
        default=250,
        help="the server folds its log into a snapshot after this many changes, so kills also land "
        "during and between compactions",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/service_kill"))
    args = parser.parse_args()
    server_env = {"RECINDEX_COMPACT_EVERY": str(args.compact_every)}
    rng = np.random.default_rng(0)
    chooser = random.Random(0)
    dim = json.loads((Path(args.bundle) / "manifest.json").read_text())["embedding"]["dim"]
    state = Path(tempfile.mkdtemp(prefix="recindex-kill-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    acknowledged: dict[str, list[float]] = {}
    visible_ms: list[float] = []
    not_visible = 0
    for round_number in range(1, args.rounds + 1):
        server = start(args.bundle, state, port, server_env)
        kill_at = time.monotonic() + args.seconds * chooser.uniform(0.5, 1.0)
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < kill_at:
                item = f"new-{round_number}-{len(acknowledged)}"
                vector = rng.standard_normal(dim)
                vector = (vector / np.linalg.norm(vector)).round(6).tolist()
                sent = time.perf_counter()
                try:
                    response = http.put(
                        f"{base}/v1/items",
                        json={"items": [{"item_id": item, "vector": vector}]},
                        headers={"X-API-Key": KEY},
                    )
                except httpx.HTTPError:
                    break
                if response.status_code != 200:
                    continue
                acknowledged[item] = vector
                answer = http.post(f"{base}/v1/recommend", json={"vector": vector, "k": 1}).json()
                if answer["items"] and answer["items"][0]["item_id"] == item:
                    visible_ms.append(1000 * (time.perf_counter() - sent))
                else:
                    not_visible += 1
        server.send_signal(signal.SIGKILL)
        server.wait()
        print(
            f"round {round_number}: killed after {len(acknowledged):,} acknowledged upserts in all",
            flush=True,
        )

    server = start(args.bundle, state, port, server_env)
    missing = []
    with httpx.Client(timeout=5) as http:
        for item, vector in acknowledged.items():
            answer = http.post(f"{base}/v1/recommend", json={"vector": vector, "k": 1}).json()
            if not answer["items"] or answer["items"][0]["item_id"] != item:
                missing.append(item)
    server.terminate()
    server.wait()
    latencies = np.asarray(visible_ms)
    result = {
        "rounds": args.rounds,
        "acknowledged": len(acknowledged),
        "missing_after_restarts": len(missing),
        "not_visible_at_once": not_visible,
        "compact_every": args.compact_every,
        "last_snapshot_seq": (
            json.loads((state / "active.json").read_text()).get("snapshot_seq")
            if (state / "active.json").exists()
            else None
        ),
        "upsert_to_visible_ms_p50": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "upsert_to_visible_ms_p99": float(np.percentile(latencies, 99)) if len(latencies) else None,
        "bundle": args.bundle,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    verdict = "PASS" if not missing else "FAIL"
    print(
        f"{verdict} 0 acknowledged upserts lost across {args.rounds} SIGKILL restarts "
        f"(lost: {len(missing)} of {len(acknowledged):,})"
    )
    p99 = result["upsert_to_visible_ms_p99"]
    print(
        f"{'PASS' if p99 is not None and p99 <= 50 else 'FAIL'} upsert-to-visible p99 <= 50 ms "
        f"(measured {p99:.1f} ms)"
        if p99 is not None
        else "FAIL no upsert became visible"
    )


if __name__ == "__main__":
    main()
