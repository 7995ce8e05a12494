"""`recindex embed` at scale: a synthetic item table of N items (10M by default) in Parquet, encoded by
a small bundle whose item tower reads item features; reports items/s and the peak RSS of the embed
process, and checks that it stays under a limit (4 GB).

    nice -n 19 python benchmarks/embed_10m.py --items 10000000 --work runs/embed_10m

Steps (each skipped when its output is already there, so a rerun times the export alone):
1. a bundle: `recindex train` on synthetic data (its items carry `attr=K` tokens), one epoch, one thread;
2. the item table: WORK/items/part-NNN.parquet, 1M rows a file, `item` ids and `item_attr` cells of
   three `|`-joined attribute values; the first rows are the bundle's own items, the rest new (cold)
   items, encoded from their attributes;
3. `recindex embed BUNDLE --items WORK/items --out WORK/vectors` as a child process, timed, its peak
   RSS read from the kernel's accounting of that child (os.wait4);
4. WORK/report.json: the figures, the command, the machine.

The data is generated here (seeded), never read from the repository; WORK is meant to be under runs/
or a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import run_info  # noqa: E402 (benchmarks/ is not a package)

ROOT = Path(__file__).resolve().parent.parent
DATASET = "synthetic:n_users=3000,n_items=2000,n_attributes=64,seed=0"
FILE_ROWS = 1_000_000


def recindex(*args: str) -> list[str]:
    return [sys.executable, "-m", "recindex.cli", *args]


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


def train_bundle(work: Path, threads: int) -> Path:
    bundle = work / "bundle"
    if not (bundle / "manifest.json").is_file():
        settings = ["train.epochs=1", f"train.threads={threads}", "model.dim=64", "model.max_len=20"]
        command = recindex("train", "--dataset", DATASET, "--out", str(bundle), "--quiet", "--overwrite")
        for setting in settings:
            command += ["--set", setting]
        subprocess.run(command, check=True, env=child_env(threads))
    return bundle


def write_items(work: Path, n_items: int, bundle: Path) -> Path:
    """N rows: the bundle's items first (known), then new ids; three attribute values each."""
    folder = work / "items"
    done = folder / "_done.json"
    if done.is_file() and json.loads(done.read_text())["rows"] == n_items:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    data = json.loads((bundle / "data" / "interactions.json").read_text())
    known = np.asarray(data["item_ids"], np.int64)
    values = np.array([name.partition("=")[2] for name in data["item_feature_names"]], dtype=object)
    rng = np.random.default_rng(0)
    for part, start in enumerate(range(0, n_items, FILE_ROWS)):
        stop = min(start + FILE_ROWS, n_items)
        ids = np.arange(start, stop, dtype=np.int64) + 10_000_000  # new ids, after the catalogue's
        head = max(0, min(len(known), stop) - start)
        ids[:head] = known[start : start + head]
        picks = values[rng.integers(0, len(values), (stop - start, 3))]
        cells = [f"{a}|{b}|{c}" for a, b, c in picks.tolist()]
        table = pa.table({"item": ids, "item_attr": cells})
        pq.write_table(table, folder / f"part-{part:03d}.parquet", row_group_size=131_072)
    done.write_text(json.dumps({"rows": n_items}))
    return folder


def run_embed(bundle: Path, items: Path, out: Path, args) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = recindex("embed", str(bundle), "--items", str(items), "--out", str(out), "--quiet")
    command += ["--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size)]
    command += ["--dtype", args.dtype, "--threads", str(args.threads)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=child_env(args.threads), stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    print(output, end="")
    if child.returncode:
        raise SystemExit(f"recindex embed failed with status {child.returncode}")
    return {
        "command": " ".join(command[1:]),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # the child's own: the machine may be shared
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "load_average_1m": [load_before, os.getloadavg()[0]],  # before and after: how busy the machine was
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "embed_10m")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--shard-size", type=int, default=1_000_000)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rss-limit-gb", type=float, default=4.0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bundle = train_bundle(args.work, args.threads)
    items = write_items(args.work, args.items, bundle)
    prepared = time.perf_counter() - started
    measured = run_embed(bundle, items, args.work / "vectors", args)
    manifest = json.loads((args.work / "vectors" / "manifest.json").read_text())
    shards = sum((args.work / "vectors" / s["vectors"]).stat().st_size for s in manifest["shards"])
    limit = args.rss_limit_gb * 1e9
    report = {
        "items": manifest["count"],
        "cold_items": manifest["cold"],
        "dim": manifest["dim"],
        "dtype": manifest["dtype"],
        "shards": len(manifest["shards"]),
        "shard_bytes": shards,
        "items_per_s": manifest["count"] / measured["wall_s"],
        **measured,
        "rss_limit_bytes": limit,
        "rss_under_limit": measured["peak_rss_bytes"] < limit,
        "prepare_s": prepared,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "machine": run_info(),
    }
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    print(
        f"{report['items']:,} items ({report['cold_items']:,} cold) in {measured['wall_s']:.1f}s: "
        f"{report['items_per_s']:,.0f} items/s (CPU {measured['cpu_s']:.1f}s); "
        f"peak RSS {measured['peak_rss_bytes'] / 1e9:.2f} GB "
        f"({'under' if report['rss_under_limit'] else 'OVER'} {args.rss_limit_gb:g} GB); "
        f"shards {shards / 1e9:.2f} GB; report {args.work / 'report.json'}"
    )
    if not report["rss_under_limit"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
