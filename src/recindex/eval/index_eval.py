"""Evaluate a bundle through one of its indexes: the protocol's metrics, plus what the index costs.

The user vectors and the exclusion of each user's history are exactly those of the exact evaluation;
only the retrieval goes through the index. Reported on top of the ranking metrics:
- index recall@K: overlap of the index's top-K with exact top-K of the same vectors (K = 10, 100);
- candidates scored per query (the backend's own count: distances computed, cells and refine included);
- latency: batched (all cases, in blocks of `batch_size`) and single-query p50/p99 on a sample.
Metrics beyond the index's top-K are not defined, so MRR is reported over the top K (`mrr@K`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from recindex.bundle import Bundle
from recindex.data.splits import split_for
from recindex.eval.evaluate import encode_cases, evaluate_model
from recindex.eval.metrics import ranking_report
from recindex.index.base import BaseIndex
from recindex.progress import BatchProgress


@dataclass
class IndexEvaluation:
    index: dict[str, float]  # metrics through the index
    exact: dict[str, float]  # the same metrics by exact search
    cost: dict[str, float]  # index recall, candidates scored, latency
    ranks: np.ndarray | None = None  # (cases,) 0-based rank of each target through the index (n_items: miss)
    exact_ranks: np.ndarray | None = None  # (cases,) the same by exact search
    exact_top: np.ndarray | None = None  # (cases, depth) exact search's top items


def ranks_from_lists(top: np.ndarray, targets: np.ndarray, miss_rank: int) -> np.ndarray:
    """0-based rank of each target in its list; `miss_rank` where the list does not hold it."""
    hits = top == targets[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1), miss_rank)


def overlap_at(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean share of b's top-k (the reference) found in a's top-k."""
    shares = []
    for x, y in zip(a[:, :k], b[:, :k], strict=True):
        y = y[y >= 0]
        shares.append(len(np.intersect1d(x[x >= 0], y)) / max(1, len(y)))
    return float(np.mean(shares)) if shares else 0.0


def evaluate_index(
    bundle: Bundle,
    index: BaseIndex,
    which: str = "test",
    *,
    exclude_seen: bool | None = None,
    params: dict | None = None,
    batch_size: int = 1024,
    single_queries: int = 200,
    progress: bool = False,
) -> IndexEvaluation:
    config = bundle.config
    exclude_seen = config.eval.exclude_seen if exclude_seen is None else exclude_seen
    ks = config.eval.ks
    depth = min(max(ks), len(index))  # a catalogue smaller than the deepest cut-off is ranked whole
    split = split_for(config.data, bundle.data)
    cases = split.eval_cases(which)
    counts = np.bincount(split.train_items, minlength=bundle.model.n_items)
    cold = np.isin(cases.targets, split.cold_items) if len(split.cold_items) else None

    encoded = encode_cases(bundle.model, cases)  # once, for the exact reference and the index alike
    exact = evaluate_model(
        bundle.model,
        split,
        which,
        counts,
        ks=ks,
        exclude_seen=exclude_seen,
        progress=progress,
        queries=encoded,
    )
    queries = encoded.numpy()
    exclusions = (cases.history_offsets, cases.history_items) if exclude_seen else None

    index.count_candidates = True
    top = np.empty((len(cases), depth), np.int64)
    scored = np.zeros(len(cases))
    started = time.perf_counter()
    with BatchProgress(-(-len(cases) // batch_size), f"searching {which}", enabled=progress) as bar:
        for start in range(0, len(cases), batch_size):
            stop = min(len(cases), start + batch_size)
            exclude = None
            if exclusions is not None:
                offsets = cases.history_offsets[start : stop + 1]
                exclude = (offsets - offsets[0], cases.history_items[offsets[0] : offsets[-1]])
            result = index.search(queries[start:stop], depth, exclude=exclude, params=params)
            top[start:stop] = result.ids
            if result.scored is not None:
                scored[start:stop] = result.scored
            bar.advance()
    batched_seconds = time.perf_counter() - started

    ranks = ranks_from_lists(top, cases.targets, bundle.model.n_items)
    metrics = ranking_report(ranks, np.where(top >= 0, top, 0), counts, ks, cold)
    metrics[f"mrr@{depth}"] = metrics.pop("mrr")
    exact_metrics = dict(exact.metrics)
    exact_metrics[f"mrr@{depth}"] = float(np.mean(np.where(exact.ranks < depth, 1.0 / (exact.ranks + 1), 0)))
    exact_metrics.pop("mrr")

    latencies = _single_query_latencies(index, queries, cases, exclude_seen, depth, params, single_queries)
    cost = {
        "index_recall@10": overlap_at(top, exact.top_items, 10),
        f"index_recall@{depth}": overlap_at(top, exact.top_items, depth),
        "candidates_scored_per_query": float(scored.mean()),
        "catalogue_size": float(len(index)),
        "batched_ms_per_query": 1000 * batched_seconds / max(1, len(cases)),
        # single_queries=0 skips the timing (sweeps that only need recall)
        "single_query_p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        "single_query_p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else float("nan"),
    }
    return IndexEvaluation(metrics, exact_metrics, cost, ranks, exact.ranks, exact.top_items)


def _single_query_latencies(index, queries, cases, exclude_seen, depth, params, n) -> np.ndarray:
    rows = np.random.default_rng(0).choice(len(queries), min(n, len(queries)), replace=False)
    latencies = []
    for row in rows:
        exclude = [cases.history(int(row))] if exclude_seen else None
        started = time.perf_counter()
        index.search(queries[row : row + 1], depth, exclude=exclude, params=params)
        latencies.append(1000 * (time.perf_counter() - started))
    return np.asarray(latencies)
