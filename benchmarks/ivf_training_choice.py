"""How the recommended fast-scan IVF's training was chosen: lists and k-means iterations against build
CPU and recall@100, in raw FAISS (the layers recindex builds for `IVF{lists},PQ{d}x4fsr,RFlat`).

    python benchmarks/ivf_training_choice.py                       # 1M items, about 4 minutes of CPU
    python benchmarks/ivf_training_choice.py --items 100000 --configs 1024:25:64 512:10:64

Each configuration is LISTS:ITERATIONS:POINTS_PER_LIST (the coarse k-means trains on max(50,000,
points x lists) sampled vectors). Per configuration: CPU seconds of the coarse k-means, of the whole
training and of the whole build (one thread: CPU seconds are what a build costs, whatever else runs),
then recall@100 against exact search and batched queries/s at a few nprobe, k_factor 4.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from bench_common import exact_top, log, machine_info, recall_at, synthetic

DEFAULT_CONFIGS = ["4096:25:64", "4096:10:64", "4096:10:32", "2048:10:64", "2048:10:32"]


def build(items: np.ndarray, lists: int, iterations: int, points: int) -> tuple[faiss.Index, dict]:
    dim = items.shape[1]
    started = time.process_time()
    ivf = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, lists, dim, 4, faiss.METRIC_INNER_PRODUCT)
    ivf.by_residual = True
    index = faiss.IndexRefineFlat(ivf)
    rng = np.random.default_rng(0)
    size = min(len(items), max(50_000, points * lists))
    sample = items[np.sort(rng.choice(len(items), size, replace=False))]
    ivf.cp.niter, ivf.cp.min_points_per_centroid = iterations, 1
    ivf.train_q1(len(sample), faiss.swig_ptr(sample), False, ivf.metric_type)
    coarse = time.process_time() - started
    index.train(sample)  # the coarse quantizer is trained: this trains the PQ
    trained = time.process_time() - started
    index.add(items)
    built = time.process_time() - started
    return index, {"coarse_cpu_s": coarse, "train_cpu_s": trained, "build_cpu_s": built}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    log(f"{machine_info()['cpu_count']} CPUs; faiss {faiss.__version__}; one thread")
    data = synthetic(args.items, args.queries, 64, 0)
    truth = exact_top(data.items, data.queries, 100)
    for config in args.configs:
        lists, iterations, points = (int(part) for part in config.split(":"))
        index, seconds = build(data.items, lists, iterations, points)
        log(
            f"IVF{lists}, {iterations} iterations, {points} points a list: "
            + ", ".join(f"{name} {value:.1f}" for name, value in seconds.items())
        )
        for nprobe in args.nprobe:
            params = faiss.IndexRefineSearchParameters(
                k_factor=4, base_index_params=faiss.IVFSearchParameters(nprobe=min(nprobe, lists))
            )
            started = time.perf_counter()
            _, labels = index.search(data.queries, 100, params=params)
            elapsed = time.perf_counter() - started
            rate = len(data.queries) / elapsed
            log(f"  nprobe {nprobe}: recall@100 {recall_at(labels, truth):.3f}, {rate:,.0f} q/s batched")


if __name__ == "__main__":
    main()
