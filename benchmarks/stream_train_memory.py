"""Peak memory of two-tower training on a folder of Parquet files: the in-memory path against user shards.

Writes a synthetic Parquet folder (users uniform, item popularity skewed, timestamps rising), then runs
each path in a fresh process and reads that process's peak RSS:
- memory (`data.shard_users = 0`): the folder loaded whole, split leave-one-out, every user's training
  examples built, then `--steps` training steps;
- shards (`data.shard_users = N`): the folder partitioned into user shards on disk in one pass, then
  `--steps` steps drawn shard by shard (the trainer built without the split: training steps alone).
Both print the seconds of their preparation, the rows/s of reading, the steps' users/s, and peak RSS.

    nice -n 19 python benchmarks/stream_train_memory.py --interactions 2000000 --users 200000 \
        --items 50000 --steps 50

`--whole-run` measures instead a whole `recindex train` command (read, split, `--epochs` epochs with
validation, the final validation and test, the bundle written) in a child process per path, with
`data.shard_users = --shard-users` and with 0, and reads each child's peak RSS; `--scales 1,4` runs it
on folders of 1x and 4x the interactions and users (the same items and history lengths), so that what
grows with the data shows apart from the floor:

    nice -n 10 python benchmarks/stream_train_memory.py --whole-run --scales 1,4 --interactions 1000000 \
        --users 20000 --items 10000 --shard-users 2048 --files 8 --batch-size 64 --max-len 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from recindex.config import EvalConfig, ModelConfig, TrainConfig  # noqa: E402
from recindex.data.parquet_dir import load_parquet_dir  # noqa: E402
from recindex.data.splits import leave_one_out  # noqa: E402
from recindex.data.user_shards import partition  # noqa: E402
from recindex.models.two_tower import TwoTowerModel  # noqa: E402
from recindex.train.batches import iterate_batches, sequence_examples  # noqa: E402
from recindex.train.loop import Trainer  # noqa: E402
from recindex.train.shard_batches import ShardedExamples  # noqa: E402


def write_folder(folder: Path, interactions: int, users: int, items: int, files: int, seed: int) -> None:
    """`interactions` rows in `files` Parquet files, written a file at a time."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, interactions, files + 1).astype(np.int64)
    for part in range(files):
        n = int(bounds[part + 1] - bounds[part])
        table = pa.table(
            {
                "user": rng.integers(0, users, n) * 7 + 11,  # raw ids that are not the dense numbers
                "item": (items * rng.random(n) ** 3).astype(np.int64) * 3 + 5,  # skewed popularity
                "timestamp": 1_600_000_000 + bounds[part] + np.arange(n),
            }
        )
        pq.write_table(table, folder / f"part-{part:04d}.parquet", row_group_size=262_144)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: kilobytes


def run_mode(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_config = ModelConfig(dim=args.dim, max_len=args.max_len, layers=1, heads=1)
    train = TrainConfig(batch_size=args.batch_size, uniform_negatives=256, threads=args.threads, device="cpu")
    started = time.perf_counter()
    if args.mode == "memory":
        data = load_parquet_dir(args.folder)
        read_s = time.perf_counter() - started
        split = leave_one_out(data)
        model = TwoTowerModel.for_data(data, model_config)
        trainer = Trainer(model, split, train, EvalConfig(), progress=False)
        examples = sequence_examples(split, data.n_users, data.n_items, args.max_len)
        batches = iterate_batches(examples, args.batch_size, np.random.default_rng(0))
        rows = data.n_interactions
    else:
        shards = partition(args.folder, args.shard_users)
        read_s = time.perf_counter() - started
        model = TwoTowerModel.for_data(shards.skeleton, model_config)
        sharded = ShardedExamples(shards, args.max_len)
        trainer = Trainer(model, None, train, EvalConfig(), progress=False, sharded=sharded)
        batches = sharded.epoch(args.batch_size, np.random.default_rng(0))
        rows = shards.n_interactions
    prepared = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    steps = users = 0
    for batch in batches:
        trainer.train_step(batch, optimizer)
        steps, users = steps + 1, users + len(batch.users)
        if steps >= args.steps:
            break
    trained = time.perf_counter()
    return {
        "mode": args.mode,
        "interactions": rows,
        "read_s": round(read_s, 1),
        "read_rows_per_s": round(rows / read_s),
        "prepare_s": round(prepared - started, 1),
        "steps": steps,
        "step_users_per_s": round(users / max(trained - prepared, 1e-9), 1),
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }


def whole_run(args, folder: Path, shard_users: int, out: Path) -> dict:
    """One `recindex train` command on `folder` in a child process: its seconds and peak RSS."""
    settings = {
        "data.shard_users": shard_users,
        "model.dim": args.dim,
        "model.max_len": args.max_len,
        "model.layers": 1,
        "model.heads": 1,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "train.uniform_negatives": 256,
        "train.threads": args.threads,
        "train.device": '"cpu"',
    }
    command = [sys.executable, "-m", "recindex", "train", "--dataset", str(folder), "--out", str(out)]
    command += ["--quiet", *(f"--set={key}={value}" for key, value in settings.items())]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    environment["OMP_NUM_THREADS"] = str(args.threads)
    started = time.perf_counter()
    child = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"recindex train failed ({status}):\n{child.stderr.read().decode()[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "path": "shards" if shard_users else "memory",
        "interactions": manifest["dataset"]["n_interactions"],
        "users": manifest["dataset"]["n_users"],
        "seconds": round(seconds, 1),
        "test_recall@10": round(metrics["test"]["recall@10"], 4),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 3),  # Linux: kilobytes
    }


def whole_runs(args, scratch: Path) -> None:
    for scale in (float(value) for value in args.scales.split(",")):
        folder = scratch / f"log-{scale:g}"
        interactions, users = int(args.interactions * scale), int(args.users * scale)
        started = time.perf_counter()
        write_folder(folder, interactions, users, args.items, args.files, seed=0)
        print(f"wrote {interactions:,} rows of {users:,} users in {time.perf_counter() - started:.0f}s")
        for shard_users in (args.shard_users, 0):
            bundle = scratch / f"bundle-{scale:g}-{shard_users}"
            print(json.dumps({"scale": scale, **whole_run(args, folder, shard_users, bundle)}), flush=True)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--items", type=int, default=500_000)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100, help="training steps per path")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-users", type=int, default=65_536)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folder", type=Path, help="an existing folder to read (else one is written)")
    parser.add_argument("--whole-run", action="store_true", help="measure whole `recindex train` runs")
    parser.add_argument("--scales", default="1", help="--whole-run: data sizes, as multiples (1,4)")
    parser.add_argument("--epochs", type=int, default=1, help="--whole-run: training epochs")
    parser.add_argument("--mode", choices=["memory", "shards"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.whole_run:
        with tempfile.TemporaryDirectory(prefix="stream-bench-") as scratch:
            whole_runs(args, Path(scratch))
        return
    if args.mode:  # one path, in this fresh process
        print(json.dumps(run_mode(args)))
        return
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as scratch:
        folder = args.folder
        if folder is None:
            folder = Path(scratch) / "log"
            started = time.perf_counter()
            write_folder(folder, args.interactions, args.users, args.items, args.files, seed=0)
            print(f"wrote {args.interactions:,} rows in {time.perf_counter() - started:.0f}s", flush=True)
        given = [] if args.folder is not None else ["--folder", str(folder)]
        for mode in ("shards", "memory"):
            command = [sys.executable, __file__, *sys.argv[1:], *given, "--mode", mode]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            print(output.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
