"""The unchecked entry of `BaseIndex.search` for plain queries, shared by the backends that have one.

The serving hot loop asks one query at a time, and at a few hundred microseconds a query the general
path's conversions, checks and dispatch cost several percent of it. A backend with `lean_path` answers
a plain query (a C-contiguous float32 (n, dim) matrix, a Python int k in range, no filter) straight
away; anything else, and any input that needs an error message, goes the general way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.base import MAX_K, MAX_QUERIES

CACHED_PARAMS = 256  # distinct per-call parameter sets remembered (a service asks for a few)


def is_plain_query(queries, k, dim: int, size: int) -> bool:
    """Whether `queries` and `k` are what the general path would pass on unchanged (finiteness aside:
    each backend checks it where it costs least)."""
    return (
        type(queries) is np.ndarray
        and queries.dtype == np.float32
        and queries.ndim == 2
        and queries.shape[1] == dim
        and 0 < len(queries) <= MAX_QUERIES
        and type(k) is int
        and 0 < k <= min(size, MAX_K)
        and queries.flags.c_contiguous
    )


class ResolvedParams:
    """Per-call search parameters merged with an index's defaults, cached by value: resolving them
    (and checking each) costs more than a small search."""

    def __init__(self):
        self._cache: dict = {}

    def get(self, index, params: Mapping[str, Any] | None) -> dict | None:
        """The parameters a search with `params` runs with, or None where they need the general path
        (which explains what is wrong with them)."""
        if params is None:
            return index.search_params
        if type(params) is not dict:
            return None
        try:
            key = (tuple(params.items()), tuple(index.search_params.items()))
            resolved = self._cache.get(key)
        except TypeError:  # an unhashable value
            return None
        if resolved is None:
            try:
                resolved = {**index.search_params, **index.resolve_params(params, merge=False)}
            except InvalidRequest:
                return None
            if len(self._cache) > CACHED_PARAMS:
                self._cache.clear()
            self._cache[key] = resolved
        return resolved
