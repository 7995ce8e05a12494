"""10M items on one machine: synthetic vectors, the recommended FAISS index built in process, the same
vectors in a Milvus server, and the service's latency over HTTP. Loopback only, bounded in time.

    nice -n 19 python benchmarks/ten_million.py --items 200000 --work /work/scratch/ten_million_200k
    python benchmarks/ten_million.py --items 10000000 --work /work/scratch/ten_million --deadline 07:00

Steps (--steps, default all; each writes WORK/STEP.json and is skipped when that record is complete, so
an interrupted run resumes at the step it stopped in):

- data: N d=64 vectors (bench_common's seeded clustered unit vectors) written chunk by chunk to the
  memory-mapped WORK/items.npy, 1,000 queries from the same distribution, and their exact top-100 by
  inner product in one blocked pass over the memory map (WORK/truth.npy);
- faiss: `recommended_faiss(N, 64)` through `make_index(...).add(...)` in batches (--batch rows read by
  plain file reads, not a memory map, so the process's RSS is the index's), in a child process whose
  peak RSS the kernel reports (os.wait4); saved (index size on disk), recall@100 at --nprobe values with
  --k-factor, q/s of one query per call on one thread; the peak RSS against `recindex plan --items N
  --dim 64 --index SPEC --json` (the bar: within 20%);
- milvus: a Milvus 2.3.5 standalone server (benchmarks/ten_million_milvus.py), the vectors upserted
  through recindex's Milvus backend (milvus:IVF_PQ by default), its index built by the server, recall@100
  and q/s, the server's RSS and data size;
- service: `recindex serve` over HTTP (benchmarks/service_load.py, open loop): a synthetic bundle of
  --service-items items trained here, its index the recommended spec (`recindex index build --backend
  recommended_faiss(n, d) --param nprobe=..., k_factor=4`), /v1/recommend p50/p99 at --service-rate req/s.
  Its users number 20,000, whose full-ranking evaluation over 10M items takes hours here: the 10M-item
  service figure comes from `bash benchmarks/make_load_bundles.sh 10m` (2,000 users) and
  benchmarks/service_load.py on that bundle (docs/scale.md, "Service at 10M items").

Guards: every step stops when --deadline (HH:MM, UTC today) passes or available memory drops below 3 GB,
and records what it measured with "partial": true. WORK is outside the repository (it holds GBs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from bench_common import log  # noqa: E402 (benchmarks/ is not a package)
from machine import run_info  # noqa: E402
from ten_million_milvus import milvus_step  # noqa: E402
from ten_million_steps import (  # noqa: E402
    ROOT,
    Guards,
    Stop,
    child_env,
    done,
    faiss_child,
    faiss_step,
    make_data,
    parse_deadline,
    record,
    write_record,
)

from recindex.index.specs import recommended_faiss  # noqa: E402

STEPS = ("data", "faiss", "milvus", "service")
SERVICE_DATASET = "synthetic:n_users=20000,n_items={n}"


def recindex(*args: str) -> list[str]:
    return [sys.executable, "-m", "recindex.cli", *args]


def service_step(work: Path, args, guards: Guards) -> dict:
    """A bundle of --service-items items with the recommended index, loaded by `recindex serve` and
    measured by service_load.py (recommend by user id, and /healthz as the HTTP floor)."""
    if found := done(work, "service"):
        return found
    bundle = work / "service" / f"bundle-{args.service_items}"
    env = child_env(1)
    started = time.perf_counter()
    if not (bundle / "manifest.json").is_file():
        guards.check("service bundle")
        command = recindex("train", "--config", str(ROOT / "configs" / "beauty_two_tower.toml"))
        command += ["--dataset", SERVICE_DATASET.format(n=args.service_items), "--out", str(bundle)]
        for setting in ("train.epochs=1", "train.negatives=in_batch", "train.patience=1", "train.threads=1"):
            command += ["--set", setting]
        subprocess.run([*command, "--overwrite", "--quiet"], env=env, check=True)
    train_s = time.perf_counter() - started
    indexes = bundle / "indexes"
    if not indexes.is_dir() or not any(indexes.iterdir()):
        guards.check("service index")
        dim = np.load(bundle / "item_embeddings.npy", mmap_mode="r").shape[1]
        spec = recommended_faiss(args.service_items, dim)
        command = recindex("index", "build", str(bundle), "--backend", spec)
        command += ["--param", f"nprobe={args.service_nprobe}", "--param", "k_factor=4", "--overwrite"]
        subprocess.run(command, env=env, check=True)
    name = sorted(p.name for p in indexes.iterdir() if p.is_dir())[0]
    guards.check("service load")
    out = work / "service" / "load"
    command = [sys.executable, str(ROOT / "benchmarks" / "service_load.py"), "--bundle", str(bundle)]
    command += ["--index", name, "--rate", str(args.service_rate), "--seconds", str(args.service_seconds)]
    command += ["--endpoints", "recommend,healthz", "--out", str(out)]
    subprocess.run(command, env=child_env(1), check=True)
    load = json.loads((out / "results.json").read_text())
    return write_record(
        work,
        "service",
        {"bundle": str(bundle), "items": args.service_items, "index": name, "train_s": train_s,
         "command": " ".join(command[1:]), "load": load},
    )


def main() -> None:
    if sys.argv[1:2] == ["faiss-child"]:
        parser = argparse.ArgumentParser()
        parser.add_argument("faiss_child")
        parser.add_argument("--work", type=Path, required=True)
        parser.add_argument("--batch", type=int, required=True)
        parser.add_argument("--nprobe", required=True)
        parser.add_argument("--k-factor", type=int, required=True)
        child = parser.parse_args()
        faiss_child(child.work, child.batch, [int(p) for p in child.nprobe.split(",")], child.k_factor)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, required=True, help="outputs (GBs); outside the repository")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--deadline", help="HH:MM UTC: every step stops (and records what it has) then")
    parser.add_argument("--batch", type=int, default=1_000_000, help="rows per FAISS add (the first trains)")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--nprobe", default="16,32,64,128")
    parser.add_argument("--k-factor", type=int, default=4)
    parser.add_argument("--milvus-uri", help="a running server or cluster (default: start a standalone one)")
    parser.add_argument("--milvus-index", default="IVF_PQ")
    parser.add_argument("--milvus-nlist", type=int, default=1024, help="lists per sealed segment")
    parser.add_argument("--milvus-m", type=int, default=32, help="IVF_PQ sub-quantizers (8 bits each)")
    parser.add_argument("--milvus-batch", type=int, default=50_000)
    parser.add_argument("--milvus-insert-until", help="HH:MM UTC: stop inserting then, search what is in")
    parser.add_argument("--milvus-index-wait", type=float, default=1800.0, help="seconds, then search")
    parser.add_argument("--milvus-nprobe", default="16,64")
    parser.add_argument("--service-items", type=int, default=100_000)
    parser.add_argument("--service-nprobe", type=int, default=64, help="the service index's nprobe")
    parser.add_argument("--service-rate", type=float, default=200.0)
    parser.add_argument("--service-seconds", type=float, default=15.0)
    args = parser.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if unknown := sorted(set(steps) - set(STEPS)):
        parser.error(f"unknown steps {unknown}; the steps are {', '.join(STEPS)}")
    if not 1000 <= args.items <= 100_000_000 or not 1 <= args.queries <= 10_000:
        parser.error("--items must be in 1,000..100M and --queries in 1..10,000")
    if ROOT in args.work.resolve().parents:
        parser.error(f"--work {args.work} is inside the repository; put the GBs elsewhere")
    args.work.mkdir(parents=True, exist_ok=True)
    guards = Guards(parse_deadline(args.deadline))
    report = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    runners = {
        "data": lambda: make_data(args.work, args.items, args.queries, args.seed, guards),
        "faiss": lambda: faiss_step(args.work, args, guards),
        "milvus": lambda: milvus_step(args.work, args, guards),
        "service": lambda: service_step(args.work, args, guards),
    }
    for step in steps:
        log(f"step {step}")
        try:
            report[step] = runners[step]()
        except Stop as reason:
            log(f"stopped: {reason}")
            report[step] = {"stopped": str(reason), "partial": True}
            break
    for step in STEPS:  # steps of earlier invocations on the same folder
        if step not in report and record(args.work, step).is_file():
            report[step] = json.loads(record(args.work, step).read_text())
    report["machine"] = run_info()
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    log(f"report: {args.work / 'report.json'}")


if __name__ == "__main__":
    main()
