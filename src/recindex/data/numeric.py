"""Numeric feature columns: which columns are numbers, and their quantile buckets.

A column of prices gives as many distinct values as items; as content tokens each would be a token
seen by a handful of items, which teaches the item tower nothing and bloats its vocabulary. Quantile
buckets (equal-frequency, as feature-engineering libraries such as scikit-learn's KBinsDiscretizer do)
turn it into a few tokens shared by many items, which keep the order information that matters
("cheap", "mid", "expensive"). The raw numbers are kept as well, for filters (`10 <= price < 50`).
"""

from __future__ import annotations

import re

import numpy as np

# A number written plainly: 12, -3.5, 1e3. A leading zero (007, 02139) marks a code, not a number.
NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")


def numbers_of(values: list[str | None]) -> np.ndarray | None:
    """The values as float64 (NaN where None) when every present one is a plain number, else None
    (also when none is present: an empty column says nothing about its type)."""
    present = {v.strip() for v in values if v is not None}
    if not present or not all(NUMBER.match(v) for v in present):
        return None
    numbers = np.array([np.nan if v is None else float(v) for v in values], np.float64)
    return numbers if np.isfinite(numbers[~np.isnan(numbers)]).all() else None


def quantile_buckets(numbers: np.ndarray, buckets: int) -> tuple[list[str], np.ndarray]:
    """Up to `buckets` equal-frequency buckets over the present numbers: their labels (`[10, 25)`,
    the last one closed, `[80, 120]`) and each value's bucket (-1 for NaN). Cut points are values of
    the data, so labels show numbers as they were written; tied values share a bucket, so a column
    with few distinct values gets fewer buckets, and no bucket is empty."""
    present = numbers[~np.isnan(numbers)]
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    which = np.full(len(numbers), -1, np.int64)
    if not len(present):
        return [], which
    ordered = np.sort(present)
    # Bucket b starts at the value of rank ceil(b * n / buckets): n/buckets values each, up to ties.
    ranks = np.ceil(np.arange(1, buckets) * len(ordered) / buckets).astype(np.int64)
    cuts = np.unique(ordered[ranks[ranks < len(ordered)]])
    cuts = cuts[cuts > ordered[0]]  # a cut at the minimum would open an empty bucket
    bounds = [ordered[0], *cuts.tolist(), ordered[-1]]
    labels = []
    for b in range(len(bounds) - 1):
        closing = "]" if b == len(bounds) - 2 else ")"
        labels.append(f"[{_show(bounds[b])}, {_show(bounds[b + 1])}{closing}")
    which[~np.isnan(numbers)] = np.searchsorted(cuts, numbers[~np.isnan(numbers)], side="right")
    return labels, which


def _show(value: float) -> str:
    """The shortest text that reads back as `value` (12, 12.5, 0.001), so labels stay distinct."""
    return np.format_float_positional(value, trim="-")
