"""Balanced assignment of items to tokens (URI, section 4: after a layer converges, items are assigned
explicitly before the next layer is trained).

Each token takes at most `capacity` items: by default ceil(n / k) of the items that share a parent
prefix, so every layer splits each parent evenly. Items are placed most confident first (our choice:
the paper sorts each item's own tokens by probability but does not say in which order items go); each
takes its most probable token that still has room.

The greedy loop is per item in Python: O(N * k) in the worst case, about a second at 100k items and
k = 32, which is small next to a layer of training.
"""

from __future__ import annotations

import math

import numpy as np

from recindex.errors import InvalidRequest


def balanced_assignment(
    probabilities: np.ndarray, groups: np.ndarray | None = None, capacity: int | None = None
) -> np.ndarray:
    """(N, k) token probabilities (or any scores, higher is better) -> (N,) tokens, at most
    `capacity` items per (group, token); `groups` (N,) is each item's parent prefix (default: one)."""
    scores = np.asarray(probabilities, dtype=np.float64)
    if scores.ndim != 2 or not scores.shape[0] or scores.shape[1] < 1:
        raise InvalidRequest(f"probabilities must be an (N, k) matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise InvalidRequest("probabilities must be finite")
    n, k = scores.shape
    groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
    if groups.shape != (n,):
        raise InvalidRequest(f"groups must hold one parent per item ({n}), got shape {groups.shape}")
    _, group_index, group_sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if capacity is None:
        limits = np.ceil(group_sizes / k).astype(np.int64)
    else:
        if capacity * k < group_sizes.max():
            raise InvalidRequest(
                f"capacity {capacity} x {k} tokens cannot hold a parent of {group_sizes.max()}"
            )
        limits = np.full(len(group_sizes), capacity, np.int64)
    load = np.zeros((len(group_sizes), k), np.int64)
    preference = np.argsort(-scores, axis=1, kind="stable")
    order = np.argsort(-scores.max(axis=1), kind="stable")  # the most confident items choose first
    tokens = np.empty(n, np.int64)
    for item in order.tolist():
        group = group_index[item]
        for token in preference[item].tolist():
            if load[group, token] < limits[group]:
                load[group, token] += 1
                tokens[item] = token
                break
    return tokens


def max_load(tokens: np.ndarray, k: int, groups: np.ndarray | None = None) -> int:
    """The most items any (group, token) holds."""
    groups = np.zeros(len(tokens), np.int64) if groups is None else np.asarray(groups, np.int64)
    _, group_index = np.unique(groups, return_inverse=True)
    return int(np.bincount(group_index * k + np.asarray(tokens), minlength=1).max())


def even_share(n: int, k: int) -> int:
    return math.ceil(n / k)
