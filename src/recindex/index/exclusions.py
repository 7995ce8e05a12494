"""History masking, the one implementation behind `BaseIndex.search(..., exclude=...)`: each query
asks the backend for k + its longest exclusion list, then drops its excluded ids and keeps the best k.
The serving hot loop (FAISS's lean path) masks through the same two functions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np


def excluded_fetch(k: int, exclude: list[np.ndarray], size: int) -> int:
    """How many results to ask for so that `k` are left after each row drops its excluded ids:
    k + the longest exclusion list, which leaves at least k whenever the backend returns full lists,
    so history masking never shortens a list (at most the whole index)."""
    return min(size, int(k) + max(len(row) for row in exclude))


def drop_excluded(result, exclude: list[np.ndarray], k: int):
    """`result` (a SearchResult) with each row's excluded ids removed and the best k of what is left
    kept, in order; rows with fewer are padded with -1 and -inf."""
    ids = np.full((len(result.ids), k), -1, np.int64)
    scores = np.full((len(result.ids), k), -np.inf, result.scores.dtype)
    for row, excluded in enumerate(exclude):
        found = result.ids[row]
        keep = found >= 0
        if len(excluded):
            keep &= ~in_sorted(found, np.sort(excluded))
        kept = found[keep][:k]
        ids[row, : len(kept)] = kept
        scores[row, : len(kept)] = result.scores[row][keep][:k]
    return replace(result, ids=ids, scores=scores)


def in_sorted(ids: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Which of `ids` are in the non-empty `sorted_ids` (np.isin's answer; a binary search is cheaper
    for a short history than isin's sort of both arrays)."""
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[at] == ids
