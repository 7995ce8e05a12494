"""History masking (`exclude=`) has one implementation, in the index contract: a backend's lean path
(FAISS's, for the serving hot loop) is asked for the same over-fetch and its rows are dropped the
same way as on the checked path."""

from __future__ import annotations

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.base import SearchResult
from recindex.index.exact_index import ExactIndex
from recindex.index.exclusions import drop_excluded, excluded_fetch

DIM, N, K = 8, 60, 5


class LeanExact(ExactIndex):
    """The exact backend with a lean path that records the k it is asked for."""

    lean_path = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lean_calls: list[int] = []

    def _lean(self, queries, k, params):
        self.lean_calls.append(k)
        return self._search(queries, k, None, self.search_params)


def filled(kind):
    rng = np.random.default_rng(4)
    index = kind(DIM)
    index.add(np.arange(N), rng.standard_normal((N, DIM)).astype(np.float32))
    return index, rng.standard_normal((3, DIM)).astype(np.float32)


def test_the_lean_path_masks_as_the_checked_path_does():
    lean, queries = filled(LeanExact)
    checked, _ = filled(ExactIndex)
    history = [np.asarray(row[: 2 + i]) for i, row in enumerate(checked.search(queries, K).ids)]
    got, expected = lean.search(queries, K, exclude=history), checked.search(queries, K, exclude=history)
    assert lean.lean_calls == [K + 4]  # k + the longest history, once for the whole batch
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.scores, expected.scores)
    assert not any(np.isin(row, seen).any() for row, seen in zip(got.ids, history, strict=True))
    assert (got.ids >= 0).all()


def test_the_lean_path_leaves_errors_and_filters_to_the_checked_path():
    lean, queries = filled(LeanExact)
    with pytest.raises(InvalidRequest, match="one id list per query"):
        lean.search(queries, K, exclude=[[1]])
    with pytest.raises(InvalidRequest, match="larger than the index"):
        lean.search(queries, N + 1, exclude=[[1]] * 3)
    lean.search(queries, K, filter={"deny_ids": [1]}, exclude=[[2]] * 3)
    assert lean.lean_calls == []


def test_drop_keeps_the_order_and_pads_short_rows():
    result = SearchResult(
        np.array([[5, 3, -1, 9], [1, 2, 3, 4]]), np.array([[4, 3, -np.inf, 1], [8, 7, 6, 5]], np.float32)
    )
    dropped = drop_excluded(result, [np.array([3]), np.array([], np.int64)], 3)
    np.testing.assert_array_equal(dropped.ids, [[5, 9, -1], [1, 2, 3]])
    np.testing.assert_array_equal(dropped.scores, np.array([[4, 1, -np.inf], [8, 7, 6]], np.float32))
    assert excluded_fetch(3, [np.arange(2), np.arange(7)], 100) == 10
    assert excluded_fetch(3, [np.arange(200)], 100) == 100
