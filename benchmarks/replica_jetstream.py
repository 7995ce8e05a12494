"""Three in-process replicas over a 3-node NATS JetStream cluster on loopback: writes sent to any
replica, kill -9 of one replica and of the stream's leader node mid-stream, then the item sets compared.

    python benchmarks/replica_jetstream.py --bundle runs/bench/synthetic-100k --writes 400

Three `recindex serve` processes (each its own state folder, `log = nats://.../items?replicas=3`)
and three `nats-server` processes. A client sends upserts (and every fifth write a delete of an
earlier item) to the replicas in turn, skipping a replica that is down. After a quarter of the writes
one replica is killed with SIGKILL (started again at half, catching up from its snapshot plus the
stream); at half the stream's leader node is killed (started again at three quarters). At the end each
replica must hold every acknowledged upsert (found by its vector), none of the acknowledged deletes,
and the same item count. Needs nats-server and nats-py. Bounded: --writes writes, loopback only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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
    writes_wanted,
)
from tests.service.jetstream_cluster import JetStreamCluster


def main() -> None:
    args = parser(__doc__, writes=400).parse_args()
    with scratch("replica-jetstream-") as folder:
        run(args.bundle, args.index, writes_wanted(args), folder)


def run(bundle: str, index: str, writes: int, folder: Path) -> None:
    (folder / "nats").mkdir()
    cluster = JetStreamCluster(folder / "nats").start()
    url = cluster.url("items", replicas=3)
    ports = [free_port() for _ in range(3)]
    bases = [f"http://127.0.0.1:{p}" for p in ports]

    def replica(i: int):
        environment = env(
            RECINDEX_STATE_DIR=str(folder / f"replica-{i}"), RECINDEX_LOG=url, RECINDEX_COMPACT_EVERY="100"
        )
        return start(serve_command(bundle, ports[i], index), environment, ports[i])

    started = time.perf_counter()
    processes = [replica(i) for i in range(3)]
    client = httpx.Client(timeout=60)
    vectors = catalogue_probes(bundle, writes, seed=3)  # copies of catalogue vectors under new ids
    live, deleted, failed, latencies, events = {}, set(), 0, [], []
    leader = None
    try:
        for n in range(writes):
            if n == writes // 4:
                kill_9(processes[1])
                events.append(f"write {n}: replica 1 killed (SIGKILL)")
            if n == writes // 2:
                processes[1] = replica(1)
                events.append(f"write {n}: replica 1 started again")
                leader = cluster.node(cluster.stream_leader("items"))
                leader.kill_9()
                events.append(f"write {n}: stream leader {leader.name} killed (SIGKILL)")
            if n == 3 * writes // 4 and leader is not None:
                leader.start()
                events.append(f"write {n}: {leader.name} started again")
            target = next(i for i in ((n + k) % 3 for k in range(3)) if processes[i].poll() is None)
            sent = time.perf_counter()
            if n % 5 == 4 and live:
                victim = sorted(live)[n % len(live)]
                answer = client.request(
                    "DELETE", bases[target] + "/v1/items", json={"item_ids": [victim]}, headers=HEADERS
                )
                if answer.status_code == 200:
                    deleted.add(victim)
                    live.pop(victim)
            else:
                item = {"item_id": f"js-{n}", "vector": vectors[n].tolist()}
                answer = client.put(bases[target] + "/v1/items", json={"items": [item]}, headers=HEADERS)
                if answer.status_code == 200:
                    live[item["item_id"]] = n
            failed += answer.status_code != 200
            latencies.append(time.perf_counter() - sent)
        # every replica must reach the stream's end: poll its applied sequence
        heads = [client.get(b + "/v1/replication").json()["applied"] for b in bases]
        deadline = time.monotonic() + 60
        while len(set(heads)) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
            heads = [client.get(b + "/v1/replication").json()["applied"] for b in bases]
        per_replica = []
        for base in bases:
            missing = sum(not finds(client, base, vectors[n], item) for item, n in live.items())
            resurrected = sum(finds(client, base, vectors[int(i.split("-")[1])], i) for i in deleted)
            items = client.get(base + "/readyz").json()["items"]
            per_replica.append(
                {"items": items, "missing_acknowledged_upserts": missing, "deleted_but_found": resurrected}
            )
        report = {
            "writes": writes,
            "failed_writes": failed,
            "acknowledged_upserts_live": len(live),
            "acknowledged_deletes": len(deleted),
            "applied_sequence_per_replica": heads,
            "replicas": per_replica,
            "same_item_count": len({r["items"] for r in per_replica}) == 1,
            "lost": sum(r["missing_acknowledged_upserts"] + r["deleted_but_found"] for r in per_replica),
            "write_ms": {
                "p50": round(1000 * percentile(latencies, 50), 2),
                "p99": round(1000 * percentile(latencies, 99), 2),
                "max": round(1000 * max(latencies), 1),
            },
            "events": events,
        }
        print_report(report, started)
    finally:
        for process in processes:
            kill_9(process)
        cluster.stop()


if __name__ == "__main__":
    main()
