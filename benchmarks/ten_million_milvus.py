"""The Milvus step of `ten_million.py`: a Milvus standalone server (2.3.5, `milvus-server` of the `milvus`
pip package) started as the tests start it, the N vectors inserted through recindex's Milvus backend,
its index built by the server, recall@100 and single-query q/s, and the server's memory.

The server runs in a network namespace of its own (tests/milvus_supervisor.py), one loopback port relayed
to it, so it competes with no other server (a test run's included) for its fixed ports. With --milvus-uri
the step uses a running server or cluster instead (the token, if any, from RECINDEX_MILVUS_TOKEN).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
from bench_common import log, recall_at
from ten_million_steps import (
    DIM,
    ROOT,
    Guards,
    K,
    Stop,
    done,
    exact_truth,
    parse_deadline,
    record,
    single_query_qps,
    write_record,
)

from recindex.errors import RecIndexError

SERVER_SAMPLE_S = 2.0  # how often the server's memory is read


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_rss(pid: int) -> int:
    total = 0
    for member in descendants(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class MemorySampler:
    """The summed RSS of a process tree, read every SERVER_SAMPLE_S in a thread: the largest and latest."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.last = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last = tree_rss(self.pid)
            self.peak = max(self.peak, self.last)
            self._stop.wait(SERVER_SAMPLE_S)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"server_peak_rss_bytes": self.peak, "server_rss_bytes": self.last}


def start_server(work: Path, port: int = 0):
    """A standalone server on WORK/milvus (its data kept there), as tests/milvus_servers.py starts one;
    `port`: the loopback port of an earlier start, so that a saved index's uri still holds."""
    sys.path.insert(0, str(ROOT / "tests"))
    from milvus_servers import MilvusProcess, milvus_binaries

    folder = work / "milvus"
    server = MilvusProcess("standalone", folder, milvus_binaries(folder / "binaries"))
    server.port = port
    started = time.perf_counter()
    uri = server.start()
    log(f"Milvus standalone at {uri} in {time.perf_counter() - started:.0f} s")
    return server, uri


def insert_all(index, items: np.ndarray, batch: int, guards: Guards) -> dict:
    """Add every row in batches, until done or a guard stops it (then the figures say how far it got)."""
    started, added, stopped = time.perf_counter(), 0, None
    for start in range(0, len(items), batch):
        try:
            guards.check("Milvus insert")
        except Stop as reason:
            stopped = str(reason)
            break
        rows = np.ascontiguousarray(items[start : start + batch])
        index.add(np.arange(start, start + len(rows), dtype=np.int64), rows)
        added += len(rows)
        if added % (10 * batch) == 0 or added == len(items):
            elapsed = time.perf_counter() - started
            log(f"Milvus: {added:,} of {len(items):,} inserted ({elapsed:.0f} s, {added / elapsed:,.0f}/s)")
    seconds = time.perf_counter() - started
    return {"inserted": added, "insert_s": seconds, "items_per_s": added / seconds, "stopped": stopped}


def milvus_step(work: Path, args, guards: Guards) -> dict:
    """Insert (or, after an interruption past the insert, reopen the saved index), index, search."""
    if found := done(work, "milvus"):
        return found
    from recindex.index import load_index, make_index

    server = sampler = None
    saved = work / "milvus-index"
    earlier = json.loads(record(work, "milvus").read_text()) if record(work, "milvus").is_file() else {}
    resume = saved.is_dir() and earlier.get("inserted") and args.milvus_uri is None
    result: dict = {**earlier, "partial": True} if resume else {"partial": True}
    items = np.load(work / "items.npy", mmap_mode="r")
    try:
        uri = args.milvus_uri
        if uri is None:
            server, uri = start_server(work, earlier.get("port", 0) if resume else 0)
            sampler = MemorySampler(server.process.pid)
            result["port"] = server.port
        if resume:
            index = load_index(saved)
            log(f"Milvus: reopened {saved} ({result['inserted']:,} items inserted before)")
        else:
            collection = f"ten_million_{args.items}"
            params = {"nlist": args.milvus_nlist, "m": args.milvus_m, "nbits": 8}
            options = {"uri": uri, "collection": collection, "index_params": params}
            index = make_index(f"milvus:{args.milvus_index}", DIM, "ip", options=options)
            if index.client.has_collection(collection):  # an earlier, interrupted insert's: start again
                index.client.drop_collection(collection)
            result.update(uri=uri, collection=collection, index_type=args.milvus_index, index_params=params)
            insert_guards = Guards(min(guards.deadline, parse_deadline(args.milvus_insert_until)))
            result.update(insert_all(index, items, args.milvus_batch, insert_guards))
            shutil.rmtree(saved, ignore_errors=True)
            index.save(saved)  # flushes; a rerun reopens the collection from here
            write_record(work, "milvus", result)
        started = time.perf_counter()
        wait = max(60.0, min(args.milvus_index_wait, guards.deadline - time.time() - 600))
        try:  # the 2.3.5 server can report pending rows after every segment has its index: bounded
            index.wait_for_index(timeout_s=wait, poll_s=5.0)
            log(f"Milvus: every row indexed {time.perf_counter() - started:.0f} s after the insert")
        except RecIndexError as error:
            result["index_wait_error"] = str(error)
        result["index_wait_s"] = time.perf_counter() - started
        write_record(work, "milvus", result)
        result["sweep"] = milvus_sweep(index, items, work, result, args, guards)
        result["partial"] = bool(result["stopped"])
        index.close()
    except Stop as reason:
        result["stopped"] = str(reason)
    finally:
        if sampler is not None:
            result.update(sampler.stop())
            data = work / "milvus" / "data"
            result["server_data_bytes"] = sum(
                p.stat().st_size for p in data.rglob("*") if p.is_file() and "bin" not in p.parts
            )
        if server is not None:
            server.stop()
        write_record(work, "milvus", result)
        log(f"Milvus step: {result}")
    return result


def milvus_sweep(index, items: np.ndarray, work: Path, result: dict, args, guards: Guards) -> list[dict]:
    queries, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    if result["inserted"] < len(items):  # stopped early: recall against the rows it holds
        truth = exact_truth(items[: result["inserted"]], queries, K, guards)
        result["recall_over"] = f"the first {result['inserted']:,} items (the insert stopped early)"
    sweep = []
    for nprobe in [int(p) for p in args.milvus_nprobe.split(",")]:
        guards.check("Milvus search")
        found = index.search(queries, K, params={"nprobe": nprobe}).ids
        qps, p50 = single_query_qps(lambda q, p=nprobe: index.search(q, K, params={"nprobe": p}), queries)
        sweep.append({"nprobe": nprobe, "recall": recall_at(found, truth), "qps_1t": qps, "p50_ms_1t": p50})
        log(f"Milvus nprobe {nprobe}: recall@100 {sweep[-1]['recall']:.4f}, {qps:,.0f} q/s")
    return sweep
