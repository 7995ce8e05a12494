"""Evaluation of a model on a dataset held in user shards (`data.user_shards`), one shard's users in memory
at a time, with the metrics merged into those the whole dataset's cases give.

A shard holds whole users, so a per-user split of the shard (leave-one-out; cold-item, whose cold items
depend on the item set alone) gives exactly the whole split's cases of those users. Each protocol metric
of `metrics.ranking_report` is a sum over cases divided by their count (recall@k, ndcg@k, mrr, the
training popularity of the recommended items) or a function of how often each item is recommended
(coverage@k, gini@k): `MetricSums` adds the sums, the counts and the per-item recommendation counts up
shard by shard, so the merged report equals the whole evaluation's (the counts, coverage, gini and
popularity exactly; ndcg and mrr to the rounding of a float sum taken in another order).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recindex.data.interactions import Interactions
from recindex.data.splits import EvalCases, Split
from recindex.data.user_shards import UserShards
from recindex.eval.evaluate import CaseShard, rank_cases
from recindex.eval.metrics import gini_of_counts
from recindex.models.two_tower import TwoTowerModel


class MetricSums:
    """The sums and counts `metrics.ranking_report` is computed from, added up over parts of the cases."""

    def __init__(self, item_counts: np.ndarray, ks: tuple[int, ...]):
        self.item_counts, self.ks = np.asarray(item_counts), tuple(ks)
        n_items = len(self.item_counts)
        self.width = min(max(self.ks), n_items)  # exact_search's top-k width
        self.cases = self.cold_cases = 0
        self.hits = dict.fromkeys(self.ks, 0)
        self.cold_hits = dict.fromkeys(self.ks, 0)
        self.gains = dict.fromkeys(self.ks, 0.0)
        self.reciprocal = 0.0
        heads = [k for k in self.ks if k <= self.width]
        self.recommended = {k: np.zeros(n_items, np.int64) for k in heads}  # per item, in the top k
        self.popularity = dict.fromkeys(heads, 0)  # training counts of the items in the top k

    def add(self, ranks: np.ndarray, top_items: np.ndarray, cold_mask: np.ndarray | None = None) -> None:
        """One part's cases: their targets' ranks (n,) and top items (n, width)."""
        self.cases += len(ranks)
        for k in self.ks:
            self.hits[k] += int(np.count_nonzero(ranks < k))
            self.gains[k] += float(np.sum(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)))
        self.reciprocal += float(np.sum(1.0 / (ranks + 1.0)))
        for k in self.recommended:
            head = top_items[:, :k]
            self.recommended[k] += np.bincount(head.ravel(), minlength=len(self.item_counts))
            self.popularity[k] += int(self.item_counts[head].sum())
        if cold_mask is not None:
            self.cold_cases += int(cold_mask.sum())
            for k in self.ks:
                self.cold_hits[k] += int(np.count_nonzero(ranks[cold_mask] < k))

    def report(self) -> dict[str, float]:
        """`metrics.ranking_report` of every case added: the same keys in the same order."""
        n, n_items = self.cases, len(self.item_counts)
        report: dict[str, float] = {"cases": float(n)}
        for k in self.ks:
            report[f"recall@{k}"] = self.hits[k] / n if n else 0.0
            report[f"ndcg@{k}"] = self.gains[k] / n if n else 0.0
        report["mrr"] = self.reciprocal / n if n else 0.0
        for k, counts in self.recommended.items():
            report[f"coverage@{k}"] = float(np.count_nonzero(counts) / n_items) if n_items else 0.0
            report[f"popularity@{k}"] = float(self.popularity[k]) / (n * k) if n else 0.0
            report[f"gini@{k}"] = gini_of_counts(counts, n_items)
        if self.cold_cases:
            report["cold_cases"] = float(self.cold_cases)
            for k in self.ks:
                report[f"cold_recall@{k}"] = self.cold_hits[k] / self.cold_cases
        return report


def evaluate_shards(
    model: TwoTowerModel,
    shards: UserShards,
    which: str,
    item_counts: np.ndarray,
    split_of: Callable[[Interactions], Split],
    *,
    ks: tuple[int, ...] = (5, 10, 20, 50, 100),
    exclude_seen: bool = True,
    batch_size: int = 1024,
    progress: bool = False,
    shard: CaseShard | None = None,
) -> dict[str, float]:
    """`evaluate.evaluate_model`'s metrics for split part `which` ('valid' or 'test') of every user,
    computed one user shard at a time: shard s is read, split by `split_of` and its cases ranked.
    `shard`: each shard's cases are ranked in blocks by the processes (data parallelism), and every
    process adds up every shard, so all return the same metrics."""
    sums = MetricSums(item_counts, ks)
    for number in range(shards.n_shards):
        split = split_of(shards.read(number))
        cases = _numbered_globally(split.eval_cases(which), shards.users_of(number).start)
        if not len(cases):
            continue
        top, ranks = rank_cases(
            model,
            cases,
            f"{which}, shard {number + 1}/{shards.n_shards}",
            max(ks),
            exclude_seen=exclude_seen,
            batch_size=batch_size,
            progress=progress,
            shard=shard,
        )
        cold = np.isin(cases.targets, split.cold_items) if len(split.cold_items) else None
        sums.add(ranks, top, cold)
    return sums.report()


def _numbered_globally(cases: EvalCases, first_user: int) -> EvalCases:
    """A shard's cases with its users numbered as in the whole dataset (the model's user numbers)."""
    return EvalCases(cases.users + first_user, cases.history_offsets, cases.history_items, cases.targets)
