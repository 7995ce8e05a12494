"""Search latency of the learned indexes (mfli, uri, ci) on synthetic data, batched and one query per call.

    python benchmarks/learned_latency.py                          # 100k items, d=64, about 3 minutes
    python benchmarks/learned_latency.py --items 20000 --json out.json

Every index is built from the same seeded data: clustered unit vectors (d = --dim) for mfli and ci; for
uri, items and queries in its three-block layout ([ranker | 0 | router] and [ranker | router | 0]),
random balanced codes of k x k tokens and an untrained decoder of the served shape (seeded weights: the
decoder's cost per query does not depend on what it learned). Indexes use their default search
parameters; k = 100.

Reported per index: p50 milliseconds of one call with --batch queries (over --repeats calls) and the
same per query, and p50 milliseconds of a one-query call (over --single queries, after 20 warm-up
calls); for uri also the decoder's beam search alone on the batch (the rest is rescoring). Everything
runs on one thread (BLAS, torch and FAISS's OpenMP), so that figures taken on a shared machine are
comparable between runs. The script only uses the public index API, so it runs against older
checkouts too (PYTHONPATH=OLD/src python benchmarks/learned_latency.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from threadpoolctl import threadpool_limits

import recindex
from recindex.pipelines.indexes import make_index
from recindex.uri.decoder import TokenDecoder

K = 100
MAX_ITEMS = 2_000_000
MAX_QUERIES = 20_000


def bounded(low: int, high: int):
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    label = rng.integers(0, len(centres), n)
    return unit(centres[label] + 0.5 * rng.standard_normal((n, centres.shape[1])))


def data(items: int, queries: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim))
    return {"items": clustered(rng, centres, items), "queries": clustered(rng, centres, queries)}


def build_mfli(d: dict, dim: int):
    index = make_index("mfli", dim)
    index.add(np.arange(len(d["items"])), d["items"])
    return index, d["queries"]


def build_ci(d: dict, dim: int):
    index = make_index("ci", dim)
    index.add(np.arange(len(d["items"])), d["items"])
    return index, d["queries"]


def build_uri(d: dict, dim: int, tokens: int, seed: int):
    n, q = len(d["items"]), len(d["queries"])
    rng = np.random.default_rng(seed + 1)
    ranker, router = d["items"], unit(rng.standard_normal((n, dim)))
    items = np.concatenate([ranker, np.zeros((n, dim), np.float32), router], 1)
    queries = np.concatenate(
        [d["queries"], unit(rng.standard_normal((q, dim))), np.zeros((q, dim), np.float32)], 1
    )
    leaf = rng.permutation(n) % (tokens * tokens)  # balanced: every leaf holds n / tokens^2 items
    codes = np.stack([leaf // tokens, leaf % tokens], 1)
    torch.manual_seed(seed)
    decoder = TokenDecoder(dim, [tokens, tokens], dim=dim)
    options = {
        "decoder": {name: value.numpy() for name, value in decoder.state_dict().items()},
        "token_sizes": [tokens, tokens],
        "leaf_layers": 2,
        "codes": codes,
    }
    index = make_index("uri", 3 * dim, options=options)
    index.add(np.arange(n), items)
    return index, queries


def p50_ms(times: list[float]) -> float:
    return round(float(np.median(times)) * 1000, 3)


def measure(index, queries: np.ndarray, batch: int, repeats: int, single: int) -> dict:
    batch_queries = queries[:batch]
    route = None
    if index.backend == "uri":  # the decoder's beam search alone, so that rescoring = batch - this
        d, beam = index.model_dim, index.search_params["beam"]
        route = lambda: index.leaves(batch_queries[:, d : 2 * d], beam, index.leaf_layers)  # noqa: E731
    batched, routing = [], []
    index.search(batch_queries, K)  # warm-up
    for _ in range(repeats):  # a search and its routing alone in turn, so that both see the same load
        started = time.perf_counter()
        index.search(batch_queries, K)
        batched.append(time.perf_counter() - started)
        if route is not None:
            started = time.perf_counter()
            route()
            routing.append(time.perf_counter() - started)
    ones = []
    for row in range(single + 20):
        query = queries[row % len(queries)][None, :]
        started = time.perf_counter()
        index.search(query, K)
        if row >= 20:
            ones.append(time.perf_counter() - started)
    index.count_candidates = True
    scored = float(np.mean(index.search(batch_queries, K).scored))
    index.count_candidates = False
    out = {
        "batch_ms": p50_ms(batched),
        "batch_us_per_query": round(float(np.median(batched)) / len(batch_queries) * 1e6, 1),
        "single_ms": p50_ms(ones),
        "scored_per_query": round(scored, 1),
    }
    if routing:
        out["batch_routing_ms"] = p50_ms(routing)
    return out


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(recindex.__file__).resolve().parent,  # the code measured, which PYTHONPATH may move
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=bounded(1_000, MAX_ITEMS), default=100_000)
    parser.add_argument("--dim", type=bounded(4, 512), default=64)
    parser.add_argument(
        "--batch", type=bounded(1, MAX_QUERIES), default=1_000, help="queries per batched call"
    )
    parser.add_argument("--repeats", type=bounded(1, 100), default=5, help="batched calls timed")
    parser.add_argument("--single", type=bounded(1, MAX_QUERIES), default=300, help="one-query calls timed")
    parser.add_argument("--uri-tokens", type=bounded(2, 256), default=32, help="tokens per layer (2 layers)")
    parser.add_argument("--indexes", nargs="+", choices=("mfli", "uri", "ci"), default=["mfli", "uri", "ci"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    d = data(args.items, max(args.batch, args.single), args.dim, args.seed)
    builders = {
        "mfli": lambda: build_mfli(d, args.dim),
        "uri": lambda: build_uri(d, args.dim, args.uri_tokens, args.seed),
        "ci": lambda: build_ci(d, args.dim),
    }
    results = {}
    with threadpool_limits(1):
        for name in args.indexes:
            started = time.perf_counter()
            index, queries = builders[name]()
            build = time.perf_counter() - started
            results[name] = {
                "build_s": round(build, 2),
                **measure(index, queries, args.batch, args.repeats, args.single),
            }
            print(f"{name}: {results[name]}", flush=True)
    print(f"\n| index | batch of {args.batch}: ms | of which routing | single query: p50 ms | scored/query |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        routing = f"{row['batch_routing_ms']:.1f}" if "batch_routing_ms" in row else "-"
        print(
            f"| {name} | {row['batch_ms']:.1f} | {routing} | {row['single_ms']:.3f} "
            f"| {row['scored_per_query']:,.0f} |"
        )
    if args.json:
        report = {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": {"platform": platform.platform(), "processor": platform.processor()},
            "code_version": code_version(),
            "k": K,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
