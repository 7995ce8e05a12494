"""HTTP load on a real `recindex serve` (loopback): throughput and p50/p99/p99.9 latency per endpoint.

    python benchmarks/service_load.py --bundle runs/bench/synthetic-100k --bundle runs/bench/synthetic-1m \\
        --rate 1000 --seconds 20 --max

The bar (issue): /v1/recommend at 1,000 req/s with p99 <= 10 ms, at 100k and 1M items, with the FAISS
HNSW index and with exact search.

For every bundle (--bundle, repeatable) and every index (--index, repeatable: an index name inside the
bundle, or `exact` for no --index; default: exact and every index the bundle holds) a server is started
(`python -m recindex.cli serve BUNDLE [--index NAME] [--workers N] --port P`, a fresh state directory,
stderr into the --out folder), and each endpoint of --endpoints is measured in turn on it:

- recommend: POST /v1/recommend {"user_id": u, "k": k} for users of a fixed random sample (--users)
- recent:    POST /v1/recommend {"recent_items": [5 random catalogue items], "k": k} (encoded every time)
- similar:   POST /v1/similar-items {"item_ids": [1 random catalogue item], "k": k}
- healthz:   GET /healthz, the HTTP floor of the same server in the same run (no work behind it)

Open loop (the default): request i is due at t0 + i / rate whatever happened before, and its latency is
measured from that due time to the end of the response, so a stalled server is charged for every request
it delays (no coordinated omission). Requests go over a pool of --connections keep-alive HTTP/1.1
connections (raw asyncio streams, pre-serialised request bytes, Content-Length bodies); a request that
finds no free connection waits for one, and the wait counts in its latency. After the schedule ends,
outstanding requests get --drain seconds to finish; the rest count as errors. With --max, a closed-loop
run follows each open-loop one: --max-connections connections send back to back for --seconds, and the
completed requests per second are the saturation throughput (its latencies are from send, so they only
describe that saturated state).

Warm-up: a known user's query vector is computed on their first request and memoised per bundle
version, so every user of the sample is first requested once (closed loop), and each measured run is
preceded by --warmup seconds of the same load at the same rate, over the same payloads (same user
sample), which is not recorded. The recommend figures are therefore those of warm, memoised users:
index search plus HTTP, JSON and validation, not the user tower. The `recent` endpoint runs the user
tower on every request.

Variants in one run: --batch-window-ms W (repeatable) starts a server per window (0: no batching of
recommend requests; default: the service's default), and --src DIR (repeatable) a server per code
tree (PYTHONPATH=DIR for the server: the code before and after a change), --rounds N repeats the list,
alternating, so that a busy spell on a shared machine falls on every variant alike. Run it with
PYTHONPATH=$PWD/src so that the servers run this checkout (the installed package may be another's).
The bar's run (1M items, 2 workers, 1,000 req/s for 15 s, k=100, by user id), before and after, with
and without batching:

    git archive 46309c5 src | tar -x -C /tmp/before       # the code before the lean path and batching
    PYTHONPATH=$PWD/src python benchmarks/service_load.py --bundle runs/bench/synthetic-1m \
        --index faiss-HNSW32 --rate 1000 --seconds 15 --workers 2 --endpoints recommend,healthz \
        --src /tmp/before/src --src src --batch-window-ms 0 --batch-window-ms 1 \
        --out runs/bench/service_load_1m

--server-env KEY=VALUE adds to the server's environment (e.g. RECINDEX_THREADS=2 to give each search
more threads; the service's default is one thread per search, see ServiceSettings.threads). Where uvloop
is installed the load generator runs on it (--client-loop); `recindex serve` runs on uvloop and
httptools (installed with recindex), and results.md lists their versions. --workers N > 1 starts N
read-only server processes (`recindex serve --workers N`).

Beside latency each row gives the CPU time the server processes (the whole process tree, from /proc) and
this load generator spent per request, which on a shared machine is steadier than wall-clock figures,
and the load average before the run. Bounded: at most 600 s per run and 1,000,000 requests per run;
loopback only. Results go to --out (default runs/bench/service_load): results.json and results.md.

The bundles (synthetic data, one epoch: model quality does not matter here, only the catalogue size and
the serving path; benchmarks/make_load_bundles.sh runs exactly these):

    recindex train --config configs/beauty_two_tower.toml \\
        --dataset "synthetic:n_users=20000,n_items=100000" \\
        --set train.epochs=1 --set train.negatives=in_batch --set train.patience=1 \\
        --out runs/bench/synthetic-100k --overwrite --quiet
    recindex index build runs/bench/synthetic-100k --backend faiss:HNSW32 --param ef=128
    recindex train --config configs/beauty_two_tower.toml \\
        --dataset "synthetic:n_users=10000,n_items=1000000,attributes_per_item=0" \\
        --set train.epochs=1 --set train.negatives=in_batch --set train.patience=1 \\
        --set eval.batch_size=256 --set model.item_features=false \\
        --out runs/bench/synthetic-1m --overwrite --quiet
    recindex index build runs/bench/synthetic-1m --backend faiss:HNSW32 --param ef=128

The 1M bundle has no attribute tokens and its model no content features, which keeps its one epoch
within minutes; filters are not what this benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from machine import run_info  # benchmarks/ is on the path when a script here runs

MAX_SECONDS = 600.0
MAX_REQUESTS = 1_000_000
BAR_RATE = 1000.0
BAR_P99_MS = 10.0
HOST = "127.0.0.1"
ENDPOINTS = {  # name -> (method, path)
    "recommend": ("POST", "/v1/recommend"),
    "recent": ("POST", "/v1/recommend"),
    "similar": ("POST", "/v1/similar-items"),
    "healthz": ("GET", "/healthz"),
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the server ---------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def serve_has_workers() -> bool:
    """Whether this checkout's `recindex serve` takes --workers."""
    run = subprocess.run(
        [sys.executable, "-m", "recindex.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    return "--workers" in run.stdout


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    state: Path
    stderr: Path
    startup_s: float

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.state, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and all its descendants (worker processes), from /proc."""
        return tree_cpu_seconds(self.process.pid)


def start_server(
    bundle: str, index: str | None, workers: int, env_extra: dict[str, str], stderr_path: Path
) -> Server:
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="recindex-load-"))
    command = [sys.executable, "-m", "recindex.cli", "serve", bundle, "--port", str(port), "--host", HOST]
    if index is not None:
        command += ["--index", index]
    if workers != 1:
        command += ["--workers", str(workers)]
    env = {**os.environ, "RECINDEX_STATE_DIR": str(state), **env_extra}
    env.pop("RECINDEX_API_KEYS", None)  # reads only: no keys needed, none given
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    server = Server(process, port, state, stderr_path, 0.0)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            shutil.rmtree(state, ignore_errors=True)
            raise SystemExit(f"server exited ({process.returncode}): {stderr_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError, ValueError):
            if blocking_get(port, "/readyz")[0] == 200:
                server.startup_s = time.perf_counter() - started
                return server
        time.sleep(0.25)
    server.stop()
    raise SystemExit("server did not become ready in 600 s")


def blocking_get(port: int, path: str) -> tuple[int, bytes]:
    """One GET over a fresh connection (setup only, not measured)."""
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def tree_cpu_seconds(root: int) -> float:
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


# ---- the client -----------------------------------------------------------------------------------------


def request_bytes(method: str, path: str, body: dict | None, port: int) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    data = json.dumps(body, separators=(",", ":")).encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened on the next use after any failure."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, payload: bytes) -> tuple[int, bytes]:
        """Send one request, read the whole response: (status, body)."""
        if self.writer is None:
            await self.open()
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = None, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            body = await self._chunked()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body, close = await self.reader.read(), True
        if close:
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                    pass
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


CLIENT_LOOP = {"choice": "auto"}  # --client-loop


def run_loop(coroutine):
    """Run a coroutine on uvloop when it is installed and allowed (a cheaper client), else on asyncio's."""
    if client_loop() == "asyncio":
        return asyncio.run(coroutine)
    import uvloop

    return uvloop.run(coroutine)


def client_loop() -> str:
    if CLIENT_LOOP["choice"] == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        if CLIENT_LOOP["choice"] == "uvloop":
            raise SystemExit("--client-loop uvloop: uvloop is not installed") from None
        return "asyncio"
    return f"uvloop {uvloop.__version__}"


FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)


def took_ms(body: bytes) -> float:
    """The service's own `took_ms` field of a recommend answer (nan where absent), without parsing JSON."""
    at = body.rfind(b'"took_ms":')
    if at < 0:
        return float("nan")
    end = at + 10
    while end < len(body) and body[end] not in b",}":
        end += 1
    try:
        return float(body[at + 10 : end])
    except ValueError:
        return float("nan")


@dataclass
class Record:
    """Per-request outcome of one run: latency (s), HTTP status (-1: failed, 0: never finished)."""

    latency: np.ndarray
    status: np.ndarray
    took: np.ndarray
    elapsed: float = 0.0
    extra: dict = field(default_factory=dict)


async def open_loop(
    port: int, payloads: list[bytes], rate: float, seconds: float, connections: int, drain: float
):
    n = max(1, int(round(rate * seconds)))
    record = Record(np.full(n, np.nan), np.zeros(n, np.int16), np.full(n, np.nan))
    pool = [Connection(port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in pool))
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for connection in pool:
        free.put_nowait(connection)
    clock = time.perf_counter
    pending: set[asyncio.Task] = set()
    waited = 0  # requests that found no free connection

    async def one(i: int, due: float) -> None:
        nonlocal waited
        if free.empty():
            waited += 1
        connection = await free.get()
        try:
            status, body = await connection.exchange(payloads[i % len(payloads)])
            record.latency[i] = clock() - due
            record.status[i] = status
            if status == 200 and body.endswith(b"}"):
                record.took[i] = took_ms(body)
        except FAILURES:
            record.status[i] = -1
            connection.close()
        finally:
            free.put_nowait(connection)

    t0 = clock() + 0.05
    i = 0
    while i < n:
        now = clock()
        due = t0 + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < n and t0 + i / rate <= now:  # everything due by now (sleep wakes up late)
            task = asyncio.create_task(one(i, t0 + i / rate))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
    if pending:
        _, unfinished = await asyncio.wait(set(pending), timeout=drain)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
    finished = record.status != 0
    last = float(np.nanmax(record.latency + t0 + np.arange(n) / rate)) if finished.any() else clock()
    record.elapsed = max(seconds, last - t0)
    record.extra = {"waited_for_connection": waited}
    for connection in pool:
        connection.close()
    return record


async def closed_loop(port: int, payloads: list[bytes], concurrency: int, seconds: float):
    clock = time.perf_counter
    latencies: list[float] = []
    statuses: list[int] = []
    tooks: list[float] = []
    stop = clock() + seconds
    started = clock()

    async def worker(offset: int) -> None:
        connection = Connection(port)
        j = offset
        while clock() < stop and len(latencies) < MAX_REQUESTS:
            sent = clock()
            try:
                status, body = await connection.exchange(payloads[j % len(payloads)])
                latencies.append(clock() - sent)
                statuses.append(status)
                tooks.append(took_ms(body) if status == 200 else float("nan"))
            except FAILURES:
                latencies.append(float("nan"))
                statuses.append(-1)
                tooks.append(float("nan"))
                connection.close()
            j += concurrency
        connection.close()

    await asyncio.gather(*(worker(c) for c in range(concurrency)))
    record = Record(np.asarray(latencies), np.asarray(statuses, np.int16), np.asarray(tooks))
    record.elapsed = clock() - started
    return record


# ---- one measured run -------------------------------------------------------------------------------------


def summarise(record: Record) -> dict:
    ok = (record.status >= 200) & (record.status < 300)
    lat = record.latency[ok] * 1000
    took = record.took[ok]
    took = took[np.isfinite(took)]

    def pct(values: np.ndarray, p: float) -> float | None:
        return float(np.percentile(values, p)) if len(values) else None

    return {
        "requests": int(len(record.status)),
        "ok": int(ok.sum()),
        "non_2xx": int(((record.status >= 300) | ((record.status > 0) & (record.status < 200))).sum()),
        "failed": int((record.status == -1).sum()),
        "unfinished": int((record.status == 0).sum()),
        "errors": int((~ok).sum()),
        "seconds": record.elapsed,
        "throughput_rps": float(ok.sum() / record.elapsed) if record.elapsed > 0 else 0.0,
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "p999_ms": pct(lat, 99.9),
        "max_ms": float(lat.max()) if len(lat) else None,
        "server_took_p50_ms": pct(took, 50),
        "server_took_p99_ms": pct(took, 99),
        **record.extra,
    }


def measure(server: Server, payloads: list[bytes], args, mode: str) -> dict:
    """One run (open loop at --rate or closed loop at --max-connections), with CPU accounting."""
    load = os.getloadavg()[0]
    cpu_server, cpu_client = server.cpu_seconds(), time.process_time()
    gc.collect()
    gc.disable()  # no collector pauses inside the load generator while it measures
    try:
        if mode == "open":
            record = run_loop(
                open_loop(server.port, payloads, args.rate, args.seconds, args.connections, args.drain)
            )
        else:
            record = run_loop(closed_loop(server.port, payloads, args.max_connections, args.seconds))
    finally:
        gc.enable()
    cpu_server, cpu_client = server.cpu_seconds() - cpu_server, time.process_time() - cpu_client
    settle(server)
    row = summarise(record)
    served = max(1, row["ok"] + row["non_2xx"])
    row["server_cpu_ms_per_req"] = 1000 * cpu_server / served
    row["client_cpu_ms_per_req"] = 1000 * cpu_client / served
    row["loadavg_1m_before"] = load
    return row


def settle(server: Server, limit: float = 60.0) -> None:
    """Wait (at most `limit` s) until /healthz answers within 20 ms: a backlog left by an overloaded run
    (abandoned requests still run in the server's thread pool) must not spill into the next run."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        started = time.perf_counter()
        with contextlib.suppress(OSError, ValueError):
            if blocking_get(server.port, "/healthz")[0] == 200 and time.perf_counter() - started < 0.02:
                return
        time.sleep(0.2)


def warm(server: Server, endpoint: str, payloads: list[bytes], args) -> None:
    """Each user of the sample once (closed loop: their query vectors are memoised from then on), then
    --warmup seconds at the run's rate over the run's payloads (not recorded)."""
    if args.warmup <= 0:
        return
    if endpoint == "recommend":
        run_loop(closed_loop_once(server.port, list(dict.fromkeys(payloads)), min(4, args.connections)))
    run_loop(open_loop(server.port, payloads, args.rate, args.warmup, args.connections, args.drain))
    settle(server)


async def closed_loop_once(port: int, payloads: list[bytes], concurrency: int) -> None:
    queue = list(payloads)

    async def worker() -> None:
        connection = Connection(port)
        while queue:
            with contextlib.suppress(*FAILURES):
                await connection.exchange(queue.pop())
        connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# ---- the workload -----------------------------------------------------------------------------------------


def bundle_ids(bundle: str) -> tuple[list[str], list[str]]:
    """(user ids, item ids) of the bundle's catalogue, as the API spells them."""
    meta = json.loads((Path(bundle) / "data" / "interactions.json").read_text(encoding="utf-8"))
    return [str(u) for u in meta["user_ids"]], [str(i) for i in meta["item_ids"]]


def bundle_indexes(bundle: str) -> list[str]:
    root = Path(bundle) / "indexes"
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []


def workload(endpoint: str, users: list[str], items: list[str], args, port: int, seed: int) -> list[bytes]:
    """The request bytes one run cycles through (shuffled, so that request i is payloads[i % n])."""
    rng = random.Random(seed)
    method, path = ENDPOINTS[endpoint]
    if endpoint == "recommend":
        bodies = [{"user_id": u, "k": args.k} for u in users]
        payloads = [request_bytes(method, path, b, port) for b in bodies]
        return rng.sample(payloads, len(payloads))
    if endpoint == "recent":
        bodies = [{"recent_items": rng.sample(items, 5), "k": args.k} for _ in range(args.users)]
    elif endpoint == "similar":
        bodies = [{"item_ids": [rng.choice(items)], "k": args.k} for _ in range(args.users)]
    else:
        bodies = [None]
    return [request_bytes(method, path, b, port) for b in bodies]


def bar_verdict(row: dict) -> str | None:
    """For /v1/recommend at >= 1,000 req/s: all answered, >= 99% of the rate achieved, p99 <= 10 ms."""
    if ENDPOINTS[row["endpoint"]][1] != "/v1/recommend" or row["mode"] != "open":
        return None
    if row["target_rps"] < BAR_RATE:
        return f"n/a (rate < {BAR_RATE:,.0f})"
    ok = (
        row["errors"] == 0
        and row["throughput_rps"] >= 0.99 * row["target_rps"]
        and row["p99_ms"] is not None
        and row["p99_ms"] <= BAR_P99_MS
    )
    return "PASS" if ok else "FAIL"


# ---- report -----------------------------------------------------------------------------------------------


def machine_info() -> dict:
    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    return {
        **run_info(),
        "loadavg": os.getloadavg(),
        "client_loop": client_loop(),
        "versions": {
            name: package(name)
            for name in (
                "recindex",
                "fastapi",
                "starlette",
                "uvicorn",
                "pydantic",
                "h11",
                "httptools",
                "uvloop",
                "numpy",
                "faiss-cpu",
                "torch",
            )
        },
    }


COLUMNS = [
    ("items", "items", lambda r: f"{r['items']:,}"),
    ("backend", "backend", lambda r: str(r["backend"])),
    ("workers", "workers", lambda r: str(r["workers"])),
    ("variant", "variant", lambda r: str(r.get("variant", "-"))),
    ("endpoint", "endpoint", lambda r: str(r["endpoint"])),
    ("mode", "mode", lambda r: str(r["mode"])),
    ("target_rps", "target/s", lambda r: f"{r['target_rps']:,.0f}" if r["target_rps"] else "max"),
    ("throughput_rps", "done/s", lambda r: f"{r['throughput_rps']:,.0f}"),
    ("p50_ms", "p50 ms", lambda r: fmt(r["p50_ms"])),
    ("p99_ms", "p99 ms", lambda r: fmt(r["p99_ms"])),
    ("p999_ms", "p99.9 ms", lambda r: fmt(r["p999_ms"])),
    ("floor", "floor p50/p99", lambda r: r.get("floor", "-")),
    (
        "server",
        "server took p50/p99",
        lambda r: f"{fmt(r['server_took_p50_ms'])}/{fmt(r['server_took_p99_ms'])}",
    ),
    (
        "cpu",
        "CPU ms/req srv/cli",
        lambda r: f"{r['server_cpu_ms_per_req']:.2f}/{r['client_cpu_ms_per_req']:.2f}",
    ),
    ("errors", "errors", lambda r: f"{r['errors']:,}"),
    ("load", "load", lambda r: f"{r['loadavg_1m_before']:.1f}"),
    ("bar", "bar", lambda r: r["bar"] or "-"),
]


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def cells(row: dict) -> list[str]:
    return [render(row) for _, _, render in COLUMNS]


def markdown(result: dict) -> str:
    info = result["machine"]
    a = result["args"]
    lines = [
        "# Service load: HTTP throughput and latency per endpoint",
        "",
        f"- date: {info['date']}; command: `{info['command']}`",
        f"- machine: {info['cpu_count']} CPUs ({info['cpu_model']}), {info['platform']}, "
        f"Python {info['python']}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in info['loadavg'])} (the load generator and the server share "
        "these CPUs)",
        f"- load generator event loop: {info['client_loop']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- code: commit {info['git'].get('commit', '?')[:12]}"
        + (
            f", uncommitted changes in {', '.join(info['git']['dirty_src'])}"
            if info["git"].get("dirty_src")
            else ""
        ),
        f"- open loop at {a['rate']:,.0f} req/s for {a['seconds']:.0f} s per run over {a['connections']} "
        f"keep-alive connections, after {a['warmup']:.0f} s of warm-up; latency from each request's due "
        f"time; k = {a['k']}; {a['users']:,} sampled users (memoised query vectors after the warm-up)"
        + (
            f"; closed loop: {a['max_connections']} connections back to back for {a['seconds']:.0f} s"
            if a["max"]
            else ""
        ),
        "- floor: /healthz p50/p99 of the same server and run; server took: the service's own `took_ms`; "
        "CPU: server process tree and load generator CPU time per answered request; load: 1-min load "
        "average before the run",
        f"- bar: /v1/recommend at {BAR_RATE:,.0f} req/s with p99 <= {BAR_P99_MS:.0f} ms, no errors, "
        ">= 99% of the rate achieved",
        "",
        "| bundle | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += [f"| {Path(r['bundle']).name} | " + " | ".join(cells(r)) + " |" for r in result["rows"]]
    lines += ["", "## Servers", ""]
    lines += [
        f"- {Path(s['bundle']).name} ({s['items']:,} items), {s['backend']}, {s['workers']} worker(s), "
        f"{s['variant']}: "
        f"ready in {s['startup_s']:.1f} s"
        + (
            f"; environment {' '.join(f'{k}={v}' for k, v in s['server_env'].items())}"
            if s["server_env"]
            else ""
        )
        for s in result["servers"]
    ]
    verdicts = [r for r in result["rows"] if r["bar"] in ("PASS", "FAIL")]
    if verdicts:
        lines += ["", "## Bar", ""]
        lines += [
            f"- {r['bar']} {r['endpoint']} at {r['items']:,} items, {r['backend']}: "
            f"p99 {fmt(r['p99_ms'])} ms at {r['throughput_rps']:,.0f} of {r['target_rps']:,.0f} req/s, "
            f"{r['errors']} errors"
            for r in verdicts
        ]
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for row in rows:
            print(" | ".join([Path(row["bundle"]).name, *cells(row)]))
        return
    table = Table(title="service load")
    table.add_column("bundle")
    for _, title, _ in COLUMNS:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(Path(row["bundle"]).name, *cells(row))
    Console(width=250).print(table)


# ---- main -------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", action="append", help="bundle directory (repeatable)")
    parser.add_argument(
        "--index",
        action="append",
        help="index name in the bundle, or 'exact' (repeatable; default: all + exact)",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop arrival rate, requests/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured run")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="unrecorded seconds at the rate before each run"
    )
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the open loop")
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--endpoints", default="recommend,recent,similar,healthz")
    parser.add_argument("--users", type=int, default=1000, help="sampled users (and payloads per endpoint)")
    parser.add_argument(
        "--workers", type=int, default=1, help="`recindex serve --workers N` (when it exists)"
    )
    parser.add_argument("--max", action="store_true", help="also a closed-loop saturation run per endpoint")
    parser.add_argument("--max-connections", type=int, default=8, help="connections of the closed loop")
    parser.add_argument(
        "--drain", type=float, default=10.0, help="seconds outstanding requests get at the end"
    )
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server environment"
    )
    parser.add_argument(
        "--client-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop of this load generator (auto: uvloop when installed)",
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        action="append",
        help="RECINDEX_BATCH_WINDOW_MS of the server (repeatable: a server each; 0: no batching; "
        "default: the service's default)",
    )
    parser.add_argument(
        "--src",
        action="append",
        help="run the server from this source tree (PYTHONPATH; repeatable: a server each, e.g. the code "
        "before and after a change, in one run)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="start every variant this many times, alternating"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/service_load"))
    args = parser.parse_args()
    args.bundle = args.bundle or ["runs/bench/synthetic-100k"]
    args.endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    unknown = [e for e in args.endpoints if e not in ENDPOINTS]
    if unknown:
        parser.error(f"unknown endpoints {unknown}; known: {', '.join(ENDPOINTS)}")
    if not 0 < args.seconds <= MAX_SECONDS or not 0 <= args.warmup <= MAX_SECONDS:
        parser.error(f"--seconds and --warmup must be at most {MAX_SECONDS:.0f} s")
    if args.rate <= 0 or args.rate * max(args.seconds, args.warmup) > MAX_REQUESTS:
        parser.error(f"--rate x --seconds must be positive and at most {MAX_REQUESTS:,} requests per run")
    if args.connections < 1 or args.max_connections < 1 or args.users < 1 or args.k < 1:
        parser.error("--connections, --max-connections, --users and -k must be positive")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be in 1..10")
    if any(not 0 <= w <= 100 for w in args.batch_window_ms or []):
        parser.error("--batch-window-ms must be in 0..100")
    for src in args.src or []:
        if not (Path(src) / "recindex" / "serve").is_dir():
            parser.error(f"--src {src}: no recindex/serve package there (give a checkout's src folder)")
    if not 0 < args.drain <= 60:
        parser.error("--drain must be between 0 and 60 s")
    for bundle in args.bundle:
        if not (Path(bundle) / "manifest.json").is_file():
            parser.error(f"{bundle} is not a bundle (see benchmarks/make_load_bundles.sh)")
    env = {}
    for item in args.server_env:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--server-env wants KEY=VALUE, got {item!r}")
        env[key] = value
    args.server_env = env
    CLIENT_LOOP["choice"] = args.client_loop
    return args


def variants(args) -> list[tuple[str, dict[str, str]]]:
    """(label, server environment) of each server to start per bundle and index, in order: every code
    tree of --src with every --batch-window-ms, the whole list --rounds times (alternating, so that a
    busy spell on a shared machine falls on each variant alike)."""
    out = []
    for _ in range(args.rounds):
        for src, window in itertools.product(args.src or [None], args.batch_window_ms or [None]):
            env = dict(args.server_env)
            label = []
            if src is not None:
                env["PYTHONPATH"] = str(Path(src).resolve())
                label.append(f"src={src}")
            if window is not None:
                env["RECINDEX_BATCH_WINDOW_MS"] = f"{window:g}"
                label.append(f"batch={window:g}ms")
            out.append((" ".join(label) or "-", env))
    return out


def main() -> None:
    args = parse_args()
    if args.workers != 1 and not serve_has_workers():
        raise SystemExit("this `recindex serve` has no --workers option yet: use --workers 1")
    info = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    servers: list[dict] = []
    for bundle in args.bundle:
        users, items = bundle_ids(bundle)
        sample = random.Random(args.seed).sample(users, min(args.users, len(users)))
        indexes = args.index or ["exact", *bundle_indexes(bundle)]
        for index, (variant, server_env) in itertools.product(indexes, variants(args)):
            backend = "exact" if index == "exact" else index
            log(f"{bundle} ({len(items):,} items), {backend}, {variant}: starting the server")
            server = start_server(
                bundle,
                None if index == "exact" else index,
                args.workers,
                server_env,
                args.out / "logs" / f"{Path(bundle).name}-{backend}-{len(servers)}.stderr",
            )
            servers.append(
                {
                    "bundle": bundle,
                    "items": len(items),
                    "backend": backend,
                    "variant": variant,
                    "workers": args.workers,
                    "startup_s": server.startup_s,
                    "server_env": server_env,
                }
            )
            floor = None
            try:
                # The floor first, so that it can stand beside every other row of this server.
                order = sorted(args.endpoints, key=lambda e: e != "healthz")
                for number, endpoint in enumerate(order):
                    payloads = workload(endpoint, sample, items, args, server.port, args.seed + number)
                    warm(server, endpoint, payloads, args)
                    modes = ["open", "closed"] if args.max else ["open"]
                    for mode in modes:
                        log(f"  {endpoint}: {mode} loop, {args.seconds:.0f} s")
                        row = {
                            "bundle": bundle,
                            "items": len(items),
                            "backend": backend,
                            "variant": variant,
                            "workers": args.workers,
                            "endpoint": endpoint,
                            "path": ENDPOINTS[endpoint][1],
                            "mode": mode,
                            "target_rps": args.rate if mode == "open" else None,
                            "connections": args.connections if mode == "open" else args.max_connections,
                            "k": args.k,
                            **measure(server, payloads, args, mode),
                        }
                        if endpoint == "healthz" and mode == "open":
                            floor = f"{fmt(row['p50_ms'])}/{fmt(row['p99_ms'])}"
                        row["floor"] = floor or "-"
                        row["bar"] = bar_verdict(row)
                        rows.append(row)
                        log(
                            f"    {row['throughput_rps']:,.0f}/s p50 {fmt(row['p50_ms'])} "
                            f"p99 {fmt(row['p99_ms'])} p99.9 {fmt(row['p999_ms'])} ms, "
                            f"errors {row['errors']}, "
                            f"server CPU {row['server_cpu_ms_per_req']:.2f} ms/req"
                        )
            finally:
                server.stop()
    result = {
        "machine": info,
        "args": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}},
        "bar": {"rate_rps": BAR_RATE, "p99_ms": BAR_P99_MS},
        "servers": servers,
        "rows": rows,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (args.out / "results.md").write_text(markdown(result), encoding="utf-8")
    print_table(rows)
    for row in rows:
        if row["bar"] in ("PASS", "FAIL"):
            print(
                f"{row['bar']} /v1/recommend ({row['endpoint']}) p99 <= {BAR_P99_MS:.0f} ms at "
                f"{row['target_rps']:,.0f} req/s, {row['items']:,} items, {row['backend']}: "
                f"p99 {fmt(row['p99_ms'])} ms, {row['throughput_rps']:,.0f} req/s done, "
                f"{row['errors']} errors"
            )
    print(f"results in {args.out}/results.md")


if __name__ == "__main__":
    main()
