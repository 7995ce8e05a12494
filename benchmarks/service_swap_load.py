"""HTTP load on /v1/recommend while bundles are promoted and rolled back: throughput, latency, and
whether any response failed or came from a mix of versions.

    python benchmarks/service_swap_load.py --bundle runs/bench/ml-100k --other runs/bench/ml-100k-seed1

A real `recindex serve` on loopback serves --bundle with exact search. --clients threads send
recommendations for random users of a fixed sample for --seconds seconds; meanwhile the other bundle is
staged and then promoted and rolled back in turn, --swaps times in all. Every answer is checked
against the answer computed beforehand, for that user, from the bundle the response names: a
response whose items differ from its own bundle's answer is mis-versioned (an encoder of one version
met the index of another). Both bundles must hold the same users.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from service_kill_restart import free_port, start  # noqa: E402

KEY = "bench-key"


def expected_answers(base: str, users: list[str], k: int) -> dict[str, list[str]]:
    with httpx.Client(timeout=10) as http:
        return {
            u: [
                i["item_id"]
                for i in http.post(f"{base}/v1/recommend", json={"user_id": u, "k": k}).json()["items"]
            ]
            for u in users
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default="runs/bench/ml-100k")
    parser.add_argument("--other", default="runs/bench/ml-100k-seed1")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/service_swap"))
    args = parser.parse_args()
    os.environ["RECINDEX_API_KEYS"] = json.dumps([KEY])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": KEY}

    # Expected answers per bundle, each from a server that serves only that bundle.
    expected: dict[str, dict[str, list[str]]] = {}
    user_ids = None
    for bundle in (args.bundle, args.other):
        server = start(bundle, Path(tempfile.mkdtemp()), port)
        ready = httpx.get(f"{base}/readyz").json()
        if user_ids is None:
            from recindex.pipelines import load_bundle

            all_users = [str(u) for u in load_bundle(bundle).data.user_ids]
            user_ids = list(
                np.random.default_rng(0).choice(all_users, min(args.users, len(all_users)), replace=False)
            )
        expected[ready["bundle_id"]] = expected_answers(base, user_ids, args.k)
        server.terminate()
        server.wait()

    server = start(args.bundle, Path(tempfile.mkdtemp()), port)
    latencies: list[float] = []
    failed = misversioned = 0
    served_by: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds

    def client(seed: int) -> None:
        nonlocal failed, misversioned
        rng = np.random.default_rng(seed)
        with httpx.Client(timeout=10) as http:
            while time.monotonic() < stop:
                user = user_ids[int(rng.integers(len(user_ids)))]
                sent = time.perf_counter()
                try:
                    response = http.post(f"{base}/v1/recommend", json={"user_id": user, "k": args.k})
                except httpx.HTTPError:
                    with lock:
                        failed += 1
                    continue
                elapsed = time.perf_counter() - sent
                with lock:
                    if response.status_code != 200:
                        failed += 1
                        continue
                    body = response.json()
                    latencies.append(elapsed)
                    served_by[body["bundle_id"]] = served_by.get(body["bundle_id"], 0) + 1
                    if [i["item_id"] for i in body["items"]] != expected.get(body["bundle_id"], {}).get(user):
                        misversioned += 1

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(args.clients)]
    for thread in threads:
        thread.start()
    swap_log = []
    with httpx.Client(timeout=120) as admin:
        other_id = admin.post(
            f"{base}/v1/admin/bundles", json={"bundle": args.other}, headers=headers
        ).json()["bundle_id"]
        pause = args.seconds * 0.8 / max(1, args.swaps)
        for number in range(args.swaps):
            time.sleep(pause)
            if number % 2 == 0:
                response = admin.post(f"{base}/v1/admin/bundles/{other_id}/promote", headers=headers)
            else:
                response = admin.post(f"{base}/v1/admin/rollback", headers=headers)
            swap_log.append(response.status_code)
    for thread in threads:
        thread.join()
    server.terminate()
    server.wait()

    seconds = np.asarray(latencies)
    result = {
        "requests": len(latencies) + failed,
        "throughput_rps": len(latencies) / args.seconds,
        "p50_ms": float(np.percentile(seconds, 50) * 1000),
        "p99_ms": float(np.percentile(seconds, 99) * 1000),
        "failed": failed,
        "misversioned": misversioned,
        "answers_by_bundle": served_by,
        "answers_that_differ_between_bundles": sum(
            a != b for a, b in zip(*(list(e.values()) for e in expected.values()), strict=True)
        ),
        "swaps": len(swap_log),
        "swap_status": swap_log,
        "clients": args.clients,
        "k": args.k,
        "bundles": [args.bundle, args.other],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    ok = failed == 0 and misversioned == 0 and all(code == 200 for code in swap_log)
    print(
        f"{'PASS' if ok else 'FAIL'} 0 failed and 0 mis-versioned responses across {len(swap_log)} swaps "
        f"under load (failed {failed}, mis-versioned {misversioned}, swap statuses {sorted(set(swap_log))})"
    )


if __name__ == "__main__":
    main()
