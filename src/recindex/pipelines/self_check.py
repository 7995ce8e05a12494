"""How good an index is, checked where it is made: index recall against exact search on sample queries.

An index can be quietly poor (an IVF probed too narrowly, a learned index on towers it does not suit):
its results look like results. So every `recindex index build` searches a sample of queries with the
index's stored search parameters, compares with exact search over the same item vectors, and keeps the
figures in the index manifest; below a threshold it says so and names the search parameter value that
reaches it (a short sweep of the parameter that widens the search). The service's promotion gate runs
the same check, on the same queries, so the figure it reads is the one the build printed.

Queries are the bundle's validation users (their histories encoded by the bundle's own query tower:
the vectors the index will serve), or item vectors when the bundle has no validation users. History
masking and filters are left out: the check measures the index, not the protocol.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recindex.bundle import Bundle
from recindex.config import IndexConfig
from recindex.data.splits import split_for
from recindex.errors import RecIndexError
from recindex.eval.evaluate import encode_cases
from recindex.index.base import BaseIndex
from recindex.index.exact_index import ExactIndex

CHECK_QUERIES = IndexConfig.check_queries  # the [index] settings' defaults; 500 queries put recall@100
WARN_RECALL = IndexConfig.warn_recall  # within about +-0.01 (its spread over queries is ~0.1)
LATENCY_QUERIES = 100  # single-query timings, a subset of the check's queries
# The search parameter that widens a backend's search, most specific first: IVF-style lists, HNSW's
# candidate list, DiskANN's (Milvus), MFLI's leaves per facet, URI's beam. A backend with none of them
# cannot be swept.
WIDENING = ("nprobe", "ef", "search_list", "leaves", "beam")
SWEEP_DOUBLINGS = 6  # the sweep tries the current value times 2, 4, ..., 64


class IndexCheckFailed(RecIndexError):
    """An index below the recall a build or a promotion requires."""


@dataclass(frozen=True)
class CheckQueries:
    vectors: np.ndarray  # (n, d) float32
    source: str  # "validation users" or "item vectors"


@dataclass(frozen=True)
class SelfCheck:
    queries: int
    source: str
    k: int  # the deep cut-off: 100, or the catalogue when smaller
    recall_at_10: float
    recall_at_k: float
    candidates_per_query: float | None  # the backend's own count; None where it keeps none
    single_query_p50_ms: float
    batched_ms_per_query: float
    search_params: dict[str, Any]
    suggestion: dict[str, Any] = field(default_factory=dict)  # {param: value, recall: r} or {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        scored = (
            "" if self.candidates_per_query is None else f", {self.candidates_per_query:,.0f} scored/query"
        )
        return (
            f"index recall@10 {self.recall_at_10:.3f}, @{self.k} {self.recall_at_k:.3f} against exact search "
            f"on {self.queries} {self.source}{scored}, single-query p50 {self.single_query_p50_ms:.2f} ms"
        )


def check_queries(bundle: Bundle, n: int = CHECK_QUERIES, seed: int = 0) -> CheckQueries:
    """Up to `n` query vectors for the check: validation users' histories, else item vectors."""
    rng = np.random.default_rng(seed)
    cases = split_for(bundle.config.data, bundle.data).eval_cases("valid")
    if len(cases):
        rows = np.sort(rng.choice(len(cases), min(n, len(cases)), replace=False))
        vectors = encode_cases(bundle.model, cases.subset(rows)).numpy()
        return CheckQueries(np.ascontiguousarray(vectors, np.float32), "validation users")
    items = bundle.item_embeddings
    rows = np.sort(rng.choice(len(items), min(n, len(items)), replace=False))
    return CheckQueries(np.ascontiguousarray(items[rows], np.float32), "item vectors")


def exact_top(
    item_vectors: np.ndarray, metric: str, queries: np.ndarray, k: int, item_ids: np.ndarray | None = None
) -> np.ndarray:
    """Exact search's top-k ids; `item_ids`: the id of each row (default: the row numbers)."""
    exact = ExactIndex(item_vectors.shape[1], metric)
    exact.add(np.arange(len(item_vectors)) if item_ids is None else item_ids, item_vectors)
    return exact.search(queries, k).ids


def recall_against(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of exact search's top-k that the index's top-k holds."""
    shares = [
        len(np.intersect1d(f[:k][f[:k] >= 0], t[:k])) / len(t[:k]) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(shares)) if shares else 0.0


def run_check(
    index: BaseIndex,
    item_vectors: np.ndarray,
    queries: CheckQueries,
    *,
    params: dict[str, Any] | None = None,
    truth: np.ndarray | None = None,
    timings: bool = True,
    item_ids: np.ndarray | None = None,
) -> SelfCheck:
    """The index's recall against exact search over `item_vectors`, the items it holds (`item_ids`: the
    id of each row; default the row numbers)."""
    k = min(100, len(item_vectors))
    if truth is None:
        truth = exact_top(item_vectors, index.metric, queries.vectors, k, item_ids)
    counting, index.count_candidates = index.count_candidates, True
    try:
        started = time.perf_counter()
        result = index.search(queries.vectors, k, params=params)
        batched = (time.perf_counter() - started) / max(1, len(queries.vectors))
    finally:
        index.count_candidates = counting
    latencies = _single_query_ms(index, queries.vectors[:LATENCY_QUERIES], k, params) if timings else []
    return SelfCheck(
        queries=len(queries.vectors),
        source=queries.source,
        k=k,
        recall_at_10=recall_against(result.ids, truth, min(10, k)),
        recall_at_k=recall_against(result.ids, truth, k),
        candidates_per_query=None if result.scored is None else float(np.mean(result.scored)),
        single_query_p50_ms=float(np.percentile(latencies, 50)) if len(latencies) else float("nan"),
        batched_ms_per_query=1000 * batched,
        search_params={**index.search_params, **(params or {})},
    )


def _single_query_ms(index: BaseIndex, queries: np.ndarray, k: int, params) -> list[float]:
    latencies = []
    for row in range(len(queries)):
        started = time.perf_counter()
        index.search(queries[row : row + 1], k, params=params)
        latencies.append(1000 * (time.perf_counter() - started))
    return latencies


def widening_parameter(index: BaseIndex) -> str | None:
    return next((name for name in WIDENING if name in index.search_params), None)


def suggest(
    index: BaseIndex,
    item_vectors: np.ndarray,
    queries: CheckQueries,
    target: float,
    item_ids: np.ndarray | None = None,
) -> dict:
    """The smallest doubling of the widening parameter whose recall@k reaches `target`:
    {param: value, "recall": r}; {"recall": best} with the largest value tried when none does; {} when
    the index has no such parameter."""
    name = widening_parameter(index)
    if name is None:
        return {}
    k = min(100, len(item_vectors))
    truth = exact_top(item_vectors, index.metric, queries.vectors, k, item_ids)
    value, tried = int(index.search_params[name]), {}
    for _ in range(SWEEP_DOUBLINGS):
        value *= 2
        check = run_check(index, item_vectors, queries, params={name: value}, truth=truth, timings=False)
        tried = {name: value, "recall": round(check.recall_at_k, 4)}
        if check.recall_at_k >= target:
            return {**tried, "reaches": True}
    return {**tried, "reaches": False}


def advice(check: SelfCheck, target: float) -> str:
    """One line for a check below `target`: what the index finds, and what would reach the target."""
    line = f"index recall@{check.k} {check.recall_at_k:.3f} is below {target:.2f}"
    hint = dict(check.suggestion)
    if not hint:
        return line + " and this backend has no search parameter that widens the search"
    reaches = hint.pop("reaches")
    recall = hint.pop("recall")
    ((name, value),) = hint.items()
    if reaches:
        return line + f"; --param {name}={value} reaches {recall:.3f} (searches are slower)"
    return line + f"; even --param {name}={value} reaches only {recall:.3f}: choose another backend or spec"
