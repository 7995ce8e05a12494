"""What the runner measures beside the protocol's metrics, for the tables the docs report:

- recall on two subsets of the test cases, from each configuration's per-case ranks:
  `tail_recall@K` (targets in the least popular half of the items, by training count) and
  `short_history_recall@K` (at most SHORT_HISTORY items before the target);
- the partitions of an index (`ape:NAME`, `largest_bucket:NAME`, `buckets_used:NAME` for each of its
  partitions, e.g. `ape:leaves`, `ape:layer 1`, `ape:IVF lists`), with the users' training items as each
  query's positives (recindex.eval.ape);
- the popularity baseline (`[indexes.NAME] spec = "popularity"`): the most popular training items, the
  history masked, on the same test cases as the cell's model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recindex.bundle import Bundle
from recindex.data.splits import split_for
from recindex.errors import InvalidRequest
from recindex.eval.ape import average_partition_entropy, bucket_report
from recindex.eval.metrics import ranking_report
from recindex.experiments.spec import POPULARITY
from recindex.index.base import BaseIndex
from recindex.sci.alignment import tail_subsets

SHORT_HISTORY = 5  # a "short history": at most this many items before the target


def case_subsets(bundle: Bundle) -> dict[str, np.ndarray]:
    """Boolean masks over the test cases: `tail` targets and `short_history` users."""
    split = split_for(bundle.config.data, bundle.data)
    cases = split.test
    counts = np.bincount(split.train_items, minlength=bundle.model.n_items)
    masks = tail_subsets(np.diff(cases.history_offsets), cases.targets, counts, SHORT_HISTORY)
    return {"tail": masks["tail_target"], "short_history": masks["short_history"]}


def subset_recalls(ranks: np.ndarray, subsets: dict[str, np.ndarray], ks: tuple[int, ...]) -> dict:
    """`tail_recall@K` and `short_history_recall@K` for each cut-off (NaN-free: an empty subset is left
    out)."""
    out = {}
    for name, mask in subsets.items():
        if not mask.any():
            continue
        for k in ks:
            out[f"{name}_recall@{k}"] = float((ranks[mask] < k).mean())
    return out


def partition_measures(bundle: Bundle, index: BaseIndex) -> dict[str, float]:
    """APE, the largest bucket and the buckets in use of each partition of the index; {} for an index
    that does not partition its items (HNSW, exact)."""
    try:
        buckets = index.partitions().buckets
    except InvalidRequest:  # an index without partitions says so: nothing to report
        return {}
    split = split_for(bundle.config.data, bundle.data)
    out = {}
    for name, bucket_of in buckets.items():
        bucket_of = np.asarray(bucket_of)[: bundle.model.n_items]
        sizes = bucket_report(bucket_of)
        out[f"ape:{name}"] = average_partition_entropy(bucket_of, split.train_offsets, split.train_items)
        out[f"largest_bucket:{name}"] = float(sizes["size_max"])
        out[f"buckets_used:{name}"] = sizes["used"]
    return out


def popularity_configuration(bundle: Bundle, name: str) -> dict[str, Any]:
    """The popularity baseline on the cell's test cases, shaped as a configuration of the cell."""
    config = bundle.config
    split = split_for(config.data, bundle.data)
    counts = np.bincount(split.train_items, minlength=bundle.model.n_items)
    ranking = np.argsort(-counts, kind="stable")
    position = np.empty_like(ranking)
    position[ranking] = np.arange(len(ranking))
    cases = split.test
    k = max(config.eval.ks)
    ranks = np.empty(len(cases), np.int64)
    top = np.empty((len(cases), k), np.int64)
    for case in range(len(cases)):
        seen = np.unique(cases.history(case)) if config.eval.exclude_seen else np.empty(0, np.int64)
        target = cases.targets[case]
        # the history's items ranked above the target are masked, so they do not count against it
        ranks[case] = position[target] - np.count_nonzero(position[seen] < position[target])
        mask = np.ones(len(ranking), bool)
        mask[position[seen]] = False
        top[case] = ranking[mask][:k]
    cold = np.isin(cases.targets, split.cold_items) if len(split.cold_items) else None
    n_items = float(len(counts))
    return {
        "index": name,
        "spec": POPULARITY,
        "params": {},
        "valid": {},
        "test": ranking_report(ranks, top, counts, config.eval.ks, cold),
        "cost": {"catalogue_size": n_items},
        "reached": True,
        "ranks": ranks.astype(np.int32),
    }
