"""Ranking metrics, pure numpy. `ranks` are 0-based ranks of the single held-out target per case."""

from __future__ import annotations

import numpy as np


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of cases whose target is in the top k (= HR@k with one target)."""
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG = 1 / log2(rank + 2) inside the top k."""
    if not len(ranks):
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(np.mean(gains))


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the full ranking (no cut-off)."""
    return float(np.mean(1.0 / (ranks + 1.0))) if len(ranks) else 0.0


def coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one recommendation list."""
    return float(len(np.unique(top_items)) / n_items) if n_items else 0.0


def mean_popularity(top_items: np.ndarray, item_counts: np.ndarray) -> float:
    """Average training-interaction count of recommended items."""
    return float(item_counts[top_items].mean()) if top_items.size else 0.0


def gini(top_items: np.ndarray, n_items: int) -> float:
    """Gini coefficient of how often each catalogue item is recommended (0 = even, 1 = one item)."""
    return gini_of_counts(np.bincount(top_items.ravel(), minlength=n_items), n_items)


def gini_of_counts(counts: np.ndarray, n_items: int) -> float:
    """`gini` from how many times each of the `n_items` items is recommended."""
    counts = np.sort(counts).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    index = np.arange(1, n_items + 1)
    return float((2.0 * np.sum(index * counts)) / (n_items * total) - (n_items + 1.0) / n_items)


def ranking_report(
    ranks: np.ndarray,
    top_items: np.ndarray,
    item_counts: np.ndarray,
    ks: tuple[int, ...],
    cold_mask: np.ndarray | None = None,
) -> dict[str, float]:
    """All protocol metrics in one flat dict (`recall@10`, `ndcg@10`, `mrr`, `coverage@10`, ...)."""
    n_items = len(item_counts)
    report: dict[str, float] = {"cases": float(len(ranks))}
    for k in ks:
        report[f"recall@{k}"] = recall_at_k(ranks, k)
        report[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    report["mrr"] = mrr(ranks)
    for k in ks:
        if k <= top_items.shape[1]:
            head = top_items[:, :k]
            report[f"coverage@{k}"] = coverage(head, n_items)
            report[f"popularity@{k}"] = mean_popularity(head, item_counts)
            report[f"gini@{k}"] = gini(head, n_items)
    if cold_mask is not None and cold_mask.any():
        report["cold_cases"] = float(cold_mask.sum())
        for k in ks:
            report[f"cold_recall@{k}"] = recall_at_k(ranks[cold_mask], k)
    return report
