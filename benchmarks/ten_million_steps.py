"""The pieces of `ten_million.py`: the synthetic data on disk, exact ground truth in one pass, the guards
(deadline, free memory), step records, and the in-process FAISS build run as a measured child process.

Imported by ten_million.py and ten_million_milvus.py (benchmarks/ is on the path when a script here runs).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from bench_common import log, recall_at, synthetic_drawer

ROOT = Path(__file__).resolve().parent.parent
K = 100
DIM = 64
TRUTH_BLOCK = 1_000_000  # rows of items scored exactly at a time (256 MB)
MIN_FREE_BYTES = 3 * 1024**3  # stop when the machine's available memory drops below this


class Stop(RuntimeError):
    """A step stopped early (deadline or memory); the message says which."""


class Guards:
    """The run's bounds: a wall-clock deadline and the machine's available memory."""

    def __init__(self, deadline: float, min_free: int = MIN_FREE_BYTES):
        self.deadline, self.min_free = deadline, min_free

    def check(self, what: str) -> None:
        if time.time() > self.deadline:
            raise Stop(f"{what}: the run's deadline passed")
        free = available_memory()
        if free < self.min_free:
            raise Stop(f"{what}: available memory {free / 1e9:.2f} GB < {self.min_free / 1e9:.1f} GB")


def parse_deadline(text: str | None) -> float:
    """HH:MM (UTC, today) as a timestamp; None: six hours from now."""
    if text is None:
        return time.time() + 6 * 3600
    hour, minute = (int(part) for part in text.split(":"))
    now = dt.datetime.now(dt.UTC)
    return now.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def record(work: Path, step: str) -> Path:
    return work / f"{step}.json"


def done(work: Path, step: str) -> dict | None:
    """The step's record when it finished (complete, not partial), else None."""
    path = record(work, step)
    if path.is_file():
        result = json.loads(path.read_text())
        if not result.get("partial"):
            return result
    return None


def write_record(work: Path, step: str, result: dict) -> dict:
    partial = record(work, step).with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=2))
    partial.rename(record(work, step))
    return result


# ---- data -------------------------------------------------------------------------------------------


def exact_truth(items: np.ndarray, queries: np.ndarray, k: int, guards: Guards) -> np.ndarray:
    """Each query's k best items by inner product, in one pass over `items` (a memory map) by blocks:
    FAISS's exact search of each block, merged into one result heap per query."""
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start in range(0, len(items), TRUTH_BLOCK):
        guards.check("exact ground truth")
        block = np.ascontiguousarray(items[start : start + TRUTH_BLOCK])
        scores, ids = faiss.knn(queries, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, ids + start)
    heap.finalize()
    return heap.I


def make_data(work: Path, n_items: int, n_queries: int, seed: int, guards: Guards) -> dict:
    """WORK/items.npy (memory-mapped float32), queries.npy, truth.npy (exact top-100 ids)."""
    if (found := done(work, "data")) and found["items"] == n_items and found["queries"] == n_queries:
        return found
    started = time.perf_counter()
    partial = work / "items.partial.npy"
    items = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n_items, DIM))
    draw = synthetic_drawer(DIM, seed)  # bench_common.synthetic()'s stream, into the memory map
    for start in range(0, n_items, 1_000_000):
        guards.check("generating items")
        draw(items[start : start + 1_000_000])
    items.flush()
    del items
    partial.rename(work / "items.npy")
    queries = np.empty((n_queries, DIM), np.float32)
    draw(queries)
    np.save(work / "queries.npy", queries)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    truth = exact_truth(np.load(work / "items.npy", mmap_mode="r"), queries, K, guards)
    np.save(work / "truth.npy", truth)
    return write_record(
        work,
        "data",
        {
            "items": n_items,
            "queries": n_queries,
            "dim": DIM,
            "seed": seed,
            "generate_s": generated,
            "truth_s": time.perf_counter() - started,
            "items_bytes": (work / "items.npy").stat().st_size,
        },
    )


def read_rows(path: Path):
    """(rows, reader): reader(start, out) fills `out` with rows start.. of an .npy file by plain reads, so
    the reading process holds no mapped pages of the file (they would count in its RSS)."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        fmt = np.lib.format
        shape, _, _ = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(handle)
        offset = handle.tell()
    row_bytes = shape[1] * 4

    def reader(start: int, out: np.ndarray) -> None:
        with path.open("rb") as handle:
            handle.seek(offset + start * row_bytes)
            handle.readinto(memoryview(out).cast("B"))

    return shape[0], reader


def single_query_qps(search, queries: np.ndarray) -> tuple[float, float]:
    """(queries/s, p50 ms) of one query per call, over every query once."""
    times = np.empty(len(queries))
    for i in range(len(queries)):
        started = time.perf_counter()
        search(queries[i : i + 1])
        times[i] = time.perf_counter() - started
    return float(len(queries) / times.sum()), float(np.median(times) * 1e3)


# ---- FAISS in process, in a child ---------------------------------------------------------------------


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


def measured_child(command: list[str], env: dict, guards: Guards, what: str) -> dict:
    """Run `command`, polling the guards; its wall time, CPU and peak RSS from the kernel (wait4)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        try:
            guards.check(what)
        except Stop:
            child.kill()
            os.wait4(child.pid, 0)
            raise
        time.sleep(1.0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise RuntimeError(f"{what} failed with status {code}")
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
    }


def planner_estimate(n_items: int, spec: str) -> dict:
    """`recindex plan --items N --dim 64 --index SPEC --json`: the spec's RAM estimate."""
    command = [sys.executable, "-m", "recindex.cli", "plan", "--items", str(n_items), "--dim", str(DIM)]
    command += ["--index", spec, "--json"]
    out = subprocess.run(command, env=child_env(1), check=True, capture_output=True, text=True).stdout
    plan = json.loads(out)
    row = next(c for c in plan["candidates"] if c["spec"] == spec)
    return {"command": " ".join(command[1:]), "ram_bytes": row["ram_bytes"], "build_s": row["build_seconds"]}


def faiss_step(work: Path, args, guards: Guards) -> dict:
    """The recommended spec built, saved and searched in a child process (`ten_million.py faiss-child`)."""
    if found := done(work, "faiss"):
        return found
    here = Path(__file__).resolve().parent / "ten_million.py"
    command = [sys.executable, str(here), "faiss-child", "--work", str(work), "--batch", str(args.batch)]
    command += ["--nprobe", args.nprobe, "--k-factor", str(args.k_factor)]
    load = os.getloadavg()[0]
    measured = measured_child(command, child_env(args.build_threads), guards, "FAISS build")
    child = json.loads((work / "faiss-child.json").read_text())
    plan = planner_estimate(child["items"], child["spec"])
    ratio = measured["peak_rss_bytes"] / plan["ram_bytes"]
    result = {
        **child,
        "process": measured,
        "build_threads": args.build_threads,
        "load_average_1m_before": load,
        "plan": plan,
        "peak_rss_over_plan": ratio,
        "within_20pct": abs(ratio - 1) <= 0.2,
    }
    log(f"FAISS: peak RSS {measured['peak_rss_bytes'] / 1e9:.2f} GB, plan {plan['ram_bytes'] / 1e9:.2f} GB")
    return write_record(work, "faiss", result)


def faiss_child(work: Path, batch: int, nprobes: list[int], k_factor: int) -> None:
    """Build recommended_faiss(N, 64) through make_index(...).add(...) in batches, save, search."""
    import faiss

    from recindex.index import make_index
    from recindex.index.specs import recommended_faiss

    n, read = read_rows(work / "items.npy")
    spec = recommended_faiss(n, DIM)
    index = make_index(spec, DIM, "ip")
    baseline = _status_bytes("VmRSS")  # the interpreter, numpy, FAISS and recindex, before any item
    buffer = np.empty((min(batch, n), DIM), np.float32)
    trace = []  # RSS after each add: where the peak happens
    started = time.perf_counter()
    for start in range(0, n, batch):
        rows = buffer[: min(batch, n - start)]
        read(start, rows)
        index.add(np.arange(start, start + len(rows), dtype=np.int64), rows)
        trace.append(
            {
                "items": start + len(rows),
                "s": time.perf_counter() - started,
                "rss_bytes": _status_bytes("VmRSS"),
                "peak_rss_bytes": _status_bytes("VmHWM"),
            }
        )
        log(
            f"FAISS: {start + len(rows):,} of {n:,} added ({trace[-1]['s']:.0f} s, "
            f"RSS {trace[-1]['rss_bytes'] / 1e9:.2f} GB, peak {trace[-1]['peak_rss_bytes'] / 1e9:.2f} GB)"
        )
    build_s = time.perf_counter() - started
    del buffer, rows
    rss_after_build = _status_bytes("VmRSS")
    hwm_after_build = _status_bytes("VmHWM")
    started = time.perf_counter()
    folder = index.save(work / "faiss-index")
    save_s = time.perf_counter() - started
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    queries, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    faiss.omp_set_num_threads(1)
    sweep = []
    for nprobe in nprobes:
        params = {"nprobe": nprobe, "k_factor": k_factor}
        found = index.search(queries, K, params=params).ids
        qps, p50 = single_query_qps(lambda q, p=params: index.search(q, K, params=p), queries)
        recall = recall_at(found, truth)
        sweep.append(
            {"nprobe": nprobe, "k_factor": k_factor, "recall": recall, "qps_1t": qps, "p50_ms_1t": p50}
        )
        log(f"FAISS nprobe {nprobe}: recall@100 {sweep[-1]['recall']:.4f}, {qps:,.0f} q/s")
    result = {
        "spec": spec,
        "items": n,
        "batch": batch,
        "build_s": build_s,
        "save_s": save_s,
        "disk_bytes": disk,
        "rss_before_add_bytes": baseline,
        "rss_after_build_bytes": rss_after_build,
        "peak_rss_after_build_bytes": hwm_after_build,
        "sweep": sweep,
        "trace": trace,
    }
    (work / "faiss-child.json").write_text(json.dumps(result, indent=2))


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0
