"""Measure the build rates `recindex plan` extrapolates from, and write them as its table.

    nice -n 19 python benchmarks/plan_calibration.py                          # 20k, 100k, 200k items
    nice -n 19 python benchmarks/plan_calibration.py --sizes 20000 100000 --out /tmp/rates.json

Each kind the planner recommends (exact, faiss:HNSW32, the planner's IVF-PQ, and the same IVF-PQ with
its lists on disk) is built through recindex's own `make_index(...).add(...)` at each size, on
synthetic unit vectors (d=64 by default), with one FAISS/BLAS thread; times are the process's CPU
seconds (one thread: the build's own time, whatever else the machine runs). Kinds that train add their
training sample first (that call trains and adds it), then the rest in batches of 100,000, so the table
holds the seconds of the first call and of the rest apart: `recindex.index.build_time` reads the add
rate from the rest and the train rate from the first call. The nlist and PQ size at each size are the
planner's own rules. A build that passes --max-build-seconds (CPU) ends its kind's larger sizes.

The table records the machine, the command and the date (`machine.run_info`), so the planner can say
whose figures it extrapolates. Writes src/recindex/index/build_rates.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from machine import run_info  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from recindex.index.build_time import RATES_FILE, ivf_train_size, work_units  # noqa: E402
from recindex.index.factory import make_index  # noqa: E402
from recindex.index.faiss_index import KMEANS_ITERATIONS  # noqa: E402
from recindex.index.planning import ivf_nlist, pq_bytes  # noqa: E402

BATCH = 100_000


def kinds(n: int, dim: int) -> dict[str, tuple[str, int, int, int]]:
    """kind -> (spec, nlist, ksub, training vectors) at n items."""
    nlist, m = ivf_nlist(n), pq_bytes(dim)
    train = ivf_train_size(nlist, n)
    return {
        "exact": ("exact", 0, 0, 0),
        "hnsw": ("faiss:HNSW32", 0, 0, 0),
        "ivf_pq": (f"faiss:IVF{nlist},PQ{m}", nlist, 256, train),
        "ivf_pq_ondisk": (f"faiss_ondisk:IVF{nlist},PQ{m}", nlist, 256, train),
    }


def build(kind: str, spec: str, vectors: np.ndarray, nlist: int, ksub: int, train: int, work: Path) -> dict:
    n, dim = vectors.shape
    options = {"work_dir": str(work)} if kind == "ivf_pq_ondisk" else None
    index = make_index(spec, dim, options=options)
    first = train or n  # kinds that train nothing add everything in one call
    ids = np.arange(n)
    # CPU seconds of this process: with one thread they are the build's own time, where wall time on a
    # shared machine (and under nice) would also count the neighbours'.
    wall, cpu = time.perf_counter(), time.process_time()
    index.add(ids[:first], vectors[:first])
    first_seconds, first_wall = time.process_time() - cpu, time.perf_counter() - wall
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(first, n, BATCH):
        index.add(ids[start : start + BATCH], vectors[start : start + BATCH])
    rest_seconds, rest_wall = time.process_time() - cpu, time.perf_counter() - wall
    assert len(index) == n
    units = work_units(kind, first, dim, nlist=nlist, ksub=ksub, train=train)
    rest = work_units(kind, n - first, dim, nlist=nlist, ksub=ksub) if n > first else {"add": 0.0}
    return {
        "items": n,
        "dim": dim,
        "spec": spec,
        "first_items": first,
        "first_seconds": round(first_seconds, 4),
        "first_add_units": units["add"],
        "train_units": units["train"],
        "rest_seconds": round(rest_seconds, 4),
        "rest_add_units": rest["add"],
        "wall_seconds": round(first_wall + rest_wall, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 200_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--kinds", nargs="+", default=["exact", "hnsw", "ivf_pq", "ivf_pq_ondisk"])
    parser.add_argument("--max-build-seconds", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=RATES_FILE)
    args = parser.parse_args()
    if not 1 <= args.dim <= 4096 or not all(1_000 <= s <= 10_000_000 for s in args.sizes):
        parser.error("--dim in 1..4096 and --sizes in 1,000..10,000,000")
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    largest = max(args.sizes)
    vectors = rng.standard_normal((largest, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    builds: dict[str, list[dict]] = {kind: [] for kind in args.kinds}
    stopped: set[str] = set()
    started = time.perf_counter()
    with threadpool_limits(1), tempfile.TemporaryDirectory(prefix="plan-calibration-") as work:
        for n in sorted(args.sizes):
            for kind, (spec, nlist, ksub, train) in kinds(n, args.dim).items():
                if kind not in builds or kind in stopped:
                    continue
                row = build(kind, spec, vectors[:n], nlist, ksub, train, Path(work))
                builds[kind].append(row)
                seconds, wall = row["first_seconds"] + row["rest_seconds"], row["wall_seconds"]
                print(
                    f"{kind:14s} {spec:28s} {n:>9,} items  {seconds:8.2f} s CPU  {wall:8.2f} s wall",
                    flush=True,
                )
                if seconds > args.max_build_seconds:
                    stopped.add(kind)
                # after every build, so that an interrupted run keeps what it measured
                write_table(args, builds, time.perf_counter() - started)
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")


def write_table(args, builds: dict, wall: float) -> None:
    table = {
        "machine": run_info(),
        "command": " ".join(["nice -n 19 python", *sys.argv]),
        "threads": 1,
        "kmeans_iterations": KMEANS_ITERATIONS,  # the IVF builds' coarse k-means (recindex's default)
        "wall_seconds": round(wall, 1),
        "data": f"standard normal vectors normalised to unit length, d={args.dim}, seed 0",
        "builds": {kind: rows for kind, rows in builds.items() if rows},
    }
    partial = args.out.with_suffix(".partial")
    partial.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    partial.replace(args.out)


if __name__ == "__main__":
    main()
