"""Three `recindex serve` replicas over one Milvus server (a fleet, serve.fleet), on loopback: one client
writing, four reading, fleet-wide promotions and rollbacks; what every replica sees.

    python benchmarks/milvus_fleet.py --uri http://127.0.0.1:19530 \
        --bundle runs/bench/fleet-20k-s1 --other runs/bench/fleet-20k-s2 --seconds 60 --swaps 5
    python benchmarks/milvus_fleet.py --milvus-data /tmp/fleet-milvus --kill-milvus --kill-replica \
        --bundle runs/bench/fleet-20k-s1 --other runs/bench/fleet-20k-s2 --seconds 120 --swaps 5

Both bundles are indexed into collections of this run on the server (milvus:HNSW), so the server needs
nothing beforehand; both bundles must hold the same users. With --milvus-data the run starts a Milvus
standalone server of its own on that folder (loopback only, as the tests run it: tests/milvus_servers.py).
The replicas share nothing but the server and the bundle folders. The writer PUTs a new item (a random
unit vector) to the replicas in turn and, once acknowledged, queries every replica at once, each until it
finds the item: upsert-to-visible-everywhere is when the last one does. Readers
ask for random users at random replicas; an answer is mis-versioned when its collection is not its
bundle's, or its catalogue items do not come from its bundle's own ranking for that user (fewer than
half of them in that bundle's exact top 1,000, computed here before the run). --swaps times, the other
bundle is staged and promoted through one replica and rolled back through another. With --kill-replica, one
replica is killed (kill -9) mid-run and started again; with --kill-milvus (needs --milvus-data) the
Milvus server is killed (SIGKILL to its processes, nothing flushed) mid-run and started again on the same
folder. Requests that fail while a process is down are counted apart, as are upserts whose visibility
probe spans the server's outage. At the end every acknowledged upsert is looked for at every replica.
Replicas and the server run at this script's priority (run it under nice to lower them all).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from replica_common import (  # noqa: E402
    HEADERS,
    ROOT,
    env,
    finds,
    free_port,
    kill_9,
    percentile,
    start,
    unit_vectors,
)

sys.path.insert(0, str(ROOT / "src"))
from recindex.index.exact_index import ExactIndex  # noqa: E402
from recindex.pipelines import load_bundle  # noqa: E402
from recindex.pipelines.indexes import build_bundle_index  # noqa: E402
from recindex.serve.recommender import Recommender, ServingVersion  # noqa: E402

VISIBLE_WITHIN_S = 10.0


def index_bundles(paths: list[str], uri: str, tag: str) -> tuple[str, dict[str, str]]:
    """Index both bundles on the server under this run's names; (index name, bundle id -> collection)."""
    name, collections = f"milvus-fleet-{tag}", {}
    for letter, path in zip("ab", paths, strict=True):
        bundle = load_bundle(path)
        options = {"uri": uri, "collection": f"fleetbench_{tag}_{letter}"}
        built = build_bundle_index(bundle, "milvus:HNSW", name, options=options)
        built.index.close()
        collections[bundle.bundle_id] = options["collection"]
    return name, collections


def serve(bundle: str, index: str, port: int, fleet: str, consistency: str):
    command = [sys.executable, "-m", "recindex.cli", "serve", bundle, "--index", index, "--port", str(port)]
    environment = env(
        RECINDEX_FLEET=fleet, RECINDEX_MIN_INDEX_RECALL="0", RECINDEX_FLEET_CONSISTENCY=consistency
    )
    return command, environment


def ranking(bundle_path: str, users: list[str], k: int) -> dict[str, set[str]]:
    """Each user's exact top `k` in the bundle (its history left out, as the service does): the
    reference an answer's items are checked against. Computed here by exact search, not asked of a
    replica: a Milvus collection searched in its first minute after a bulk insert (segments changing
    from brute force to their index) gave top-1,000 lists far from exact, which flagged good answers."""
    bundle = load_bundle(bundle_path)
    index = ExactIndex(bundle.item_embeddings.shape[1])
    index.add(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings)
    recommender = Recommender(ServingVersion.of(bundle, index))
    names = bundle.data.item_ids
    return {user: {str(names[i]) for i in recommender.recommend(user_id=user, k=k).ids} for user in users}


class Run:
    def __init__(self, bases: list[str], collections: dict[str, str], expected: dict, users: list[str]):
        self.bases, self.collections, self.expected, self.users = bases, collections, expected, users
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reads = self.failed = self.misversioned = 0
        self.down: set[str] = set()  # replicas being restarted: failures there are counted apart
        self.failed_down = 0
        self.acked: list[tuple[str, np.ndarray]] = []
        self.visible_ms: list[float] = []
        self.not_visible = 0
        self.write_failures = 0
        self.write_failures_down = 0  # PUTs sent to a replica being restarted
        self.causes: list[str] = []  # the first failures outside a restart, for the report
        self.server_down = False  # the Milvus server is being restarted: failures counted apart
        self.outages = 0
        self.failed_outage = self.write_failures_outage = self.visibility_interrupted = 0
        self.probes = self.first_probe_found = 0  # visibility probes; first ones that found the item
        self.events: list[tuple[float, str]] = []  # (perf_counter, what): kills, swaps, mis-versioned

    def read(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                base, user = rng.choice(self.bases), rng.choice(self.users)
                try:
                    answer = http.post(f"{base}/v1/recommend", json={"user_id": user, "k": 10})
                    ok, cause = answer.status_code == 200, f"{answer.status_code} {answer.text[:200]}"
                except httpx.HTTPError as error:
                    ok, cause = False, repr(error)
                with self.lock:
                    self.reads += 1
                    if not ok:
                        if self.server_down:
                            self.failed_outage += 1
                        elif base in self.down:
                            self.failed_down += 1
                        else:
                            self.failed += 1
                            self._cause(f"read at {base}: {cause}")
                        continue
                    body = answer.json()
                    why = self._misversioned(body, user)
                    if why is not None:
                        self.misversioned += 1
                        self.events.append((time.perf_counter(), f"mis-versioned ({why}) at {base}"))
                        self._cause(f"mis-versioned answer for user {user} at {base}: {why}")

    def _misversioned(self, body: dict, user: str) -> str | None:
        """Why an answer pairs one version's encoder with another's items; None when it does not."""
        bundle = body["bundle_id"]
        if self.collections.get(bundle) != body.get("collection"):
            return f"bundle {bundle} answered from collection {body.get('collection')}"
        items = [i["item_id"] for i in body["items"] if not i["item_id"].startswith("fleetw-")]
        if body.get("fallback") or not items:
            return None
        if sum(item in self.expected[bundle][user] for item in items) < len(items) / 2:
            return f"bundle {bundle}: most items outside its own top 1,000 for the user"
        return None

    def write(self, dim: int) -> None:
        n = 0
        with httpx.Client(timeout=30) as http, ThreadPoolExecutor(len(self.bases)) as probes:
            while not self.stop.is_set():
                vector = unit_vectors(1, dim, 10_000 + n)[0]
                item = f"fleetw-{n}"
                base = self.bases[n % len(self.bases)]
                n += 1
                body = {"items": [{"item_id": item, "vector": vector.tolist()}]}
                try:
                    put = http.put(f"{base}/v1/items", json=body, headers=HEADERS)
                    cause = f"{put.status_code} {put.text[:200]}"
                except httpx.HTTPError as error:
                    put, cause = None, repr(error)
                if put is None or put.status_code != 200:
                    with self.lock:
                        if self.server_down:
                            self.write_failures_outage += 1
                        elif base in self.down:
                            self.write_failures_down += 1
                        else:
                            self.write_failures += 1
                            self._cause(f"upsert at {base}: {cause}")
                    time.sleep(0.2)
                    continue
                acked = time.perf_counter()
                self.acked.append((item, vector))
                outages = self.outages
                pending = [b for b in self.bases if b not in self.down]
                probe = partial(self._seen_after, http, vector=vector, item=item, acked=acked)
                seen = list(probes.map(probe, pending))
                if self.server_down or self.outages != outages:
                    self.visibility_interrupted += 1
                elif None in seen:
                    self.not_visible += 1
                elif seen:
                    self.visible_ms.append(max(seen) * 1000)

    def _seen_after(self, http, base: str, vector, item: str, acked: float) -> float | None:
        """Seconds from the acknowledgement until `base` answers with `item`; None if not within
        VISIBLE_WITHIN_S (each answer is timed when it arrives, so the probe's own latency counts)."""
        first = True
        while time.perf_counter() - acked < VISIBLE_WITHIN_S:
            found = self._finds(http, base, vector, item)
            with self.lock:
                self.probes += 1
                self.first_probe_found += first and found
            if found:
                return time.perf_counter() - acked
            first = False
        return None

    def _cause(self, text: str) -> None:
        if len(self.causes) < 10:
            self.causes.append(text)

    @staticmethod
    def _finds(http, base, vector, item) -> bool:
        try:
            return finds(http, base, vector, item, k=10)
        except (httpx.HTTPError, ValueError):
            return False


def bundle_states(base: str) -> set[tuple[str, str]]:
    """(bundle id, state: active, staged or previous) of each version the replica `base` holds."""
    rows = httpx.get(f"{base}/v1/admin/bundles", headers=HEADERS, timeout=30).json()["bundles"]
    return {(row["bundle_id"], row["state"]) for row in rows}


def follow(base: str, bundle_id: str, timeout_s: float) -> float:
    """Wait until `base` serves `bundle_id` (a replica follows the alias within its poll); seconds
    waited. A promotion is sent only to a replica that has followed the last switch: one that has not
    still holds the other version as active, not staged, and refuses to promote it."""
    waited = time.perf_counter()
    while (bundle_id, "active") not in bundle_states(base):
        if time.perf_counter() - waited > timeout_s:
            raise RuntimeError(f"{base} did not switch to {bundle_id} in {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.perf_counter() - waited


def admin(base: str, path: str, body: dict | None = None) -> dict:
    answer = httpx.post(f"{base}{path}", json=body, headers=HEADERS, timeout=600)
    if answer.status_code != 200:
        raise RuntimeError(f"{path} on {base}: {answer.status_code} {answer.text[:300]}")
    return answer.json()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uri", help="the Milvus server, http://127.0.0.1:PORT (or --milvus-data)")
    parser.add_argument(
        "--milvus-data", type=Path, help="start a Milvus standalone server of this run on this folder"
    )
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--other", required=True)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--swaps", type=int, default=5, help="promotions, each followed by a rollback")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument(
        "--consistency", default="Strong", choices=["Strong", "Bounded", "Session", "Eventually"]
    )
    parser.add_argument(
        "--ready-seconds", type=float, default=900.0, help="how long a replica may take to start"
    )
    parser.add_argument("--kill-replica", action="store_true", help="kill -9 one replica mid-run, restart it")
    parser.add_argument(
        "--kill-milvus", action="store_true", help="kill -9 the Milvus server mid-run, restart it"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the replicas and the server on the way out
    if (args.uri is None) == (args.milvus_data is None):
        parser.error("give the Milvus server as --uri, or --milvus-data to start one")
    if args.kill_milvus and args.milvus_data is None:
        parser.error("--kill-milvus needs --milvus-data (a server this run started)")
    started = time.perf_counter()
    server = None
    if args.milvus_data is not None:
        server = milvus_server(args.milvus_data)
        args.uri = server.start()
        print(f"Milvus standalone server of this run at {args.uri}", flush=True)
    try:
        run_fleet(args, started, server)
    finally:
        if server is not None:
            server.stop()


def milvus_server(folder: Path):
    """A Milvus standalone server on `folder`, run as the tests run theirs (loopback only)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from milvus_servers import MilvusProcess, milvus_binaries

    folder.mkdir(parents=True, exist_ok=True)
    return MilvusProcess("standalone", folder, milvus_binaries(folder / "binaries"))


def crash_milvus(run: Run, server, ready_seconds: float) -> float:
    """kill -9 the server, start it again on its folder; seconds until every replica answers again."""
    with run.lock:
        run.server_down, run.outages = True, run.outages + 1
    took = time.perf_counter()
    run.events.append((took, "kill -9 Milvus server"))
    server.kill_9()
    server.start()
    run.events.append((time.perf_counter(), "Milvus server answering again"))
    deadline = time.perf_counter() + ready_seconds
    with httpx.Client(timeout=10) as http:
        for base in run.bases:
            while not answers(http, base, run.users[0]):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{base} does not answer {ready_seconds:.0f} s after the restart")
                time.sleep(0.2)
    with run.lock:
        run.server_down = False
    return time.perf_counter() - took


def answers(http: httpx.Client, base: str, user: str) -> bool:
    try:
        return http.post(f"{base}/v1/recommend", json={"user_id": user, "k": 10}).status_code == 200
    except httpx.HTTPError:
        return False


def start_all(commands: list, ports: list[int], ready_seconds: float) -> list:
    """Every replica, started at once (on a busy machine each start takes minutes); if one fails, the
    others are stopped before the error goes on."""
    with ThreadPoolExecutor(len(ports)) as pool:
        futures = [pool.submit(start, *commands[i], ports[i], ready_seconds) for i in range(len(ports))]
    failed = [future.exception() for future in futures if future.exception() is not None]
    if failed:
        for future in futures:
            if future.exception() is None:
                kill_9(future.result())
        raise failed[0]
    return [future.result() for future in futures]


def run_fleet(args, started: float, server) -> None:
    tag = uuid.uuid4().hex[:8]
    index, collections = index_bundles([args.bundle, args.other], args.uri, tag)
    first, second = list(collections)
    fleet = f"fleetbench_{tag}"
    ports = [free_port() for _ in range(args.replicas)]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    commands = [serve(args.bundle, index, port, fleet, args.consistency) for port in ports]
    processes = start_all(commands, ports, args.ready_seconds)
    try:
        users = [str(u) for u in load_bundle(args.bundle).data.user_ids[: args.users].tolist()]
        dim = int(load_bundle(args.bundle).item_embeddings.shape[1])
        print(f"indexed and started in {time.perf_counter() - started:.0f} s", flush=True)
        expected = {first: ranking(args.bundle, users, 1000), second: ranking(args.other, users, 1000)}
        run = Run(bases, collections, expected, users)
        threads = [threading.Thread(target=run.read, args=(seed,)) for seed in range(args.readers)]
        threads.append(threading.Thread(target=run.write, args=(dim,)))
        for thread in threads:
            thread.start()
        t0 = time.perf_counter()
        step = args.seconds / (2 * args.swaps + 1)
        swaps, killed, outage = [], False, None
        for swap in range(args.swaps):
            time.sleep(max(0.0, t0 + step * (2 * swap + 1) - time.perf_counter()))
            via = bases[swap % len(bases)]
            lag = follow(via, first, args.ready_seconds)  # the last rollback reached this replica
            if lag > 1.0:
                run.events.append((time.perf_counter(), f"{via} followed the rollback {lag:.1f} s late"))
            if second not in {bundle for bundle, _ in bundle_states(via)}:
                admin(via, "/v1/admin/bundles", {"bundle": str(Path(args.other).resolve()), "index": index})
            took = time.perf_counter()
            admin(via, f"/v1/admin/bundles/{second}/promote")
            swaps.append(("promote", time.perf_counter() - took))
            run.events.append((took, f"promote via {via} (took {time.perf_counter() - took:.2f} s)"))
            if args.kill_milvus and outage is None and swap == max(0, args.swaps // 2 - 1):
                outage = crash_milvus(run, server, args.ready_seconds)
            if args.kill_replica and not killed and swap == args.swaps // 2:
                victim = len(bases) - 1
                run.down.add(bases[victim])
                run.events.append((time.perf_counter(), f"kill -9 replica {bases[victim]}"))
                kill_9(processes[victim])
                processes[victim] = start(*commands[victim], ports[victim], args.ready_seconds)
                run.down.discard(bases[victim])
                killed = True
            time.sleep(max(0.0, t0 + step * (2 * swap + 2) - time.perf_counter()))
            back = bases[(swap + 1) % len(bases)]
            lag = follow(back, second, args.ready_seconds)
            if lag > 1.0:
                run.events.append((time.perf_counter(), f"{back} followed the promotion {lag:.1f} s late"))
            took = time.perf_counter()
            admin(back, "/v1/admin/rollback")
            swaps.append(("rollback", time.perf_counter() - took))
            run.events.append((took, f"rollback via {back} (took {time.perf_counter() - took:.2f} s)"))
        time.sleep(max(0.0, t0 + args.seconds - time.perf_counter()))
        run.stop.set()
        for thread in threads:
            thread.join()
        lost = final_check(bases, run.acked)
        report(args, run, swaps, lost, outage, time.perf_counter() - started)
    finally:
        for process in processes:
            kill_9(process)


def final_check(bases: list[str], acked: list) -> int:
    """Acknowledged upserts some replica does not find at the end."""

    def missing(entry) -> bool:
        item, vector = entry
        with httpx.Client(timeout=30) as http:
            return not all(Run._finds(http, base, vector, item) for base in bases)

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(missing, acked))


def report(args, run: Run, swaps: list, lost: int, outage: float | None, wall: float) -> None:
    promote = [s for kind, s in swaps if kind == "promote"]
    rollback = [s for kind, s in swaps if kind == "rollback"]
    print(
        f"replicas {args.replicas}, readers {args.readers}, {args.seconds:.0f} s, "
        f"consistency {args.consistency}"
    )
    print(f"reads {run.reads}, failed {run.failed} (+{run.failed_down} at a replica being restarted)")
    print(f"mis-versioned answers {run.misversioned}")
    print(
        f"upserts acknowledged {len(run.acked)}, failed {run.write_failures} "
        f"(+{run.write_failures_down} at a replica being restarted)"
    )
    for cause in run.causes:
        print(f"  failed: {cause}")
    print(
        f"acknowledged upserts not found by every replica within {VISIBLE_WITHIN_S:.0f} s: {run.not_visible}"
    )
    print(f"acknowledged upserts missing at some replica at the end: {lost}")
    print(
        f"visibility probes {run.probes}; a replica's first probe after the acknowledgement found the "
        f"item {run.first_probe_found} times"
    )
    print(
        f"upsert-to-visible-everywhere ms p50 {percentile(run.visible_ms, 50):.1f} "
        f"p99 {percentile(run.visible_ms, 99):.1f}"
    )
    for kind, took in (("promotions", promote), ("rollbacks", rollback)):
        print(f"{kind} {len(took)}: s p50 {percentile(took, 50):.2f}, max {max(took, default=0):.2f}")
    print(f"kill -9 of a replica mid-run: {'yes' if args.kill_replica else 'no'}")
    if outage is None:
        print("kill -9 of the Milvus server mid-run: no")
    else:
        print(
            f"kill -9 of the Milvus server mid-run: yes, every replica answering again {outage:.1f} s later; "
            f"during it reads failed {run.failed_outage}, upserts failed {run.write_failures_outage}, "
            f"upserts whose visibility probe spanned it {run.visibility_interrupted}"
        )
    print(f"wall {wall:.0f} s")
    print_events(run.events)


def print_events(events: list[tuple[float, str]]) -> None:
    """The run's timeline (seconds from its first event); runs of one mis-versioned kind collapsed."""
    if not events:
        return
    print("timeline:")
    events, t0, last = sorted(events), min(t for t, _ in events), None
    repeats = 0
    for when, what in events:
        if what == last and what.startswith("mis-versioned"):
            repeats += 1
            continue
        if repeats:
            print(f"  (x{repeats + 1})")
            repeats = 0
        print(f"  {when - t0:7.2f} s  {what}")
        last = what
    if repeats:
        print(f"  (x{repeats + 1})")


if __name__ == "__main__":
    main()
