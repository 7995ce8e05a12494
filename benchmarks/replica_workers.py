"""Several workers on one machine taking writes (`serve --workers N`), with an in-process index (HNSW).

    python benchmarks/replica_workers.py --bundle runs/bench/synthetic-100k --writes 300 --seconds 10

1. Upsert-to-visible on every worker: two worker processes on one state folder, each on its own
   port (the same app `serve --workers 2` runs in each worker, without the shared socket, so that a
   query can be sent to a chosen worker). Upserts go to the workers in turn, each a copy of a
   catalogue item's vector under a new id (`catalogue_probes`); the time from sending one to the
   moment each worker's /v1/recommend names the item is measured, and the slower of the two is the
   item's visible-everywhere latency (p50/p99). A probe the accepting worker never finds (the index
   missed it) is counted apart from one the accepting worker found and the other did not (the log).
2. Throughput with 1 and 2 workers: the real `serve --workers N` (one socket), closed-loop for
   --seconds each: C concurrent clients sending /v1/recommend by vector, then C sending single-item
   upserts. Bounded: --writes upserts, --seconds per phase, loopback only, servers at this script's priority.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replica_common import (
    HEADERS,
    catalogue_probes,
    env,
    finds,
    free_port,
    kill_9,
    parser,
    percentile,
    print_report,
    scratch,
    serve_command,
    start,
    unit_vectors,
    writes_wanted,
)

WORKER = (
    "import uvicorn; uvicorn.run('recindex.serve.runtime:worker_app', factory=True, host='127.0.0.1', "
    "port={port}, log_level='warning')"
)


def seen_after(client: httpx.Client, base: str, vector, item_id: str, sent: float) -> float | None:
    """Seconds from `sent` until `base` answers with `item_id`; None if not within 5 s."""
    while not finds(client, base, vector, item_id):
        if time.perf_counter() - sent > 5:
            return None
    return time.perf_counter() - sent


def visibility(bundle: str, index: str, state: Path, writes: int) -> dict:
    settings = {"bundle": bundle, "api_keys": ["bench-key"], "state_dir": str(state)}
    if index != "exact":
        settings["index"] = index
    worker_env = env(RECINDEX_WORKER_SETTINGS_JSON=json.dumps(settings))
    ports = [free_port(), free_port()]
    processes = [start([sys.executable, "-c", WORKER.format(port=p)], worker_env, p) for p in ports]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        clients = [httpx.Client() for _ in bases]
        vectors = catalogue_probes(bundle, writes, seed=7)
        everywhere, own = [], []
        index_misses = log_misses = 0  # not found by the accepting worker; found there, not by the other
        for n, vector in enumerate(vectors):
            target = n % 2
            item = {"item_id": f"bench-{n}", "vector": vector.tolist()}
            sent = time.perf_counter()
            put = clients[target].put(bases[target] + "/v1/items", json={"items": [item]}, headers=HEADERS)
            put.raise_for_status()
            workers = (target, 1 - target)
            seen = [seen_after(clients[w], bases[w], vector, item["item_id"], sent) for w in workers]
            if seen[0] is None:
                index_misses += 1
            elif seen[1] is None:
                log_misses += 1
            else:
                own.append(seen[0])
                everywhere.append(max(seen))
        ms = lambda values, q: round(1000 * percentile(values, q), 2)  # noqa: E731
        return {
            "writes": writes,
            "not_found_by_the_accepting_worker_in_5s": index_misses,
            "found_by_the_accepting_worker_not_the_other_in_5s": log_misses,
            "on_accepting_worker_ms": {"p50": ms(own, 50), "p99": ms(own, 99)},
            "on_both_workers_ms": {"p50": ms(everywhere, 50), "p99": ms(everywhere, 99)},
        }
    finally:
        for process in processes:
            kill_9(process)


def closed_loop(base: str, seconds: float, clients: int, write: bool, dim: int) -> float:
    vectors = unit_vectors(512, dim, seed=11)
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def run(i: int) -> None:
        with httpx.Client() as client:
            n = 0
            while time.perf_counter() < stop:
                vector = vectors[(i * 131 + n) % len(vectors)].tolist()
                if write:
                    body = {"items": [{"item_id": f"load-{i}-{n}", "vector": vector}]}
                    client.put(base + "/v1/items", json=body, headers=HEADERS).raise_for_status()
                else:
                    client.post(base + "/v1/recommend", json={"vector": vector, "k": 10}).raise_for_status()
                n += 1
            done[i] = n

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return round(sum(done) / seconds, 1)


def throughput(bundle: str, index: str, folder: Path, workers: int, seconds: float, clients: int) -> dict:
    port = free_port()
    state = folder / f"state-{workers}"
    process = start(
        serve_command(bundle, port, index, "--workers", str(workers)),
        env(RECINDEX_STATE_DIR=str(state)),
        port,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        time.sleep(5 if workers > 1 else 0)  # let every worker finish loading before the clock starts
        dim = httpx.get(base + "/v1/status").json()["active"]["dim"]
        reads = closed_loop(base, seconds, clients, False, dim)
        writes = closed_loop(base, seconds, clients, True, dim)
        return {"workers": workers, "recommend_per_s": reads, "upserts_per_s": writes}
    finally:
        kill_9(process)


def main() -> None:
    options = parser(__doc__, writes=300)
    options.add_argument("--seconds", type=float, default=10.0, help="per throughput phase (at most 60)")
    options.add_argument("--clients", type=int, default=8, help="concurrent clients in the throughput phases")
    args = options.parse_args()
    with scratch("replica-workers-") as folder:
        started = time.perf_counter()
        report = {
            "visibility": visibility(args.bundle, args.index, folder / "state-vis", writes_wanted(args))
        }
        report["throughput"] = [
            throughput(args.bundle, args.index, folder, n, min(args.seconds, 60), args.clients)
            for n in (1, 2)
        ]
        print_report(report, started)


if __name__ == "__main__":
    main()
