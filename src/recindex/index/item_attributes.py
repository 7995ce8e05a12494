"""Filterable item attributes derived from an `Interactions`' item features, for indexes and the service.

- `popularity`: the item's interactions in the data (a number).
- Every feature token named `key=value` (`brand=OPI`, `genre=Comedy`, `year=1995`) gives attribute `key`
  (when `key` is an identifier the filter language accepts). A key of which some item has two or more
  values is multi-valued: each item gets the list of its values (`genre`, `category`), queried with
  `contains` / `in` (index/filters.py). A key with at most one value per item is one-valued, a number
  when every value reads as one (`year`), else a string (`brand`).
- Raw numbers kept beside the tokens (`ItemFeatures.numeric`: a table's numeric columns, whose tokens
  are quantile buckets) are numeric attributes under their field's name: `10 <= price < 50` reads the
  price itself, not its bucket.

Items without a value get None. Columns are sequences, the form `Index.add(attributes=...)` takes:
lists, and for multi-valued attributes a compact `ValueLists` that reads as a list of lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recindex.data.interactions import Interactions
from recindex.index.attribute_values import NAME, ValueLists

POPULARITY = "popularity"


def item_attributes(data: Interactions) -> dict[str, Sequence]:
    """name -> one value per item (None where an item has none; a list for multi-valued attributes)."""
    attributes: dict[str, Sequence] = {POPULARITY: data.item_counts().astype(float).tolist()}
    features = data.item_features
    if features is None:
        return attributes
    for key, numbers in features.numeric.items():
        if NAME.match(key) and key != POPULARITY:
            attributes[key] = [None if np.isnan(v) else v for v in np.asarray(numbers, np.float64).tolist()]
    parsed = [name.partition("=") for name in features.names]
    keys = sorted({key for key, sep, _ in parsed if sep and NAME.match(key)} - set(attributes))
    key_of_token = np.full(len(parsed), -1, np.int64)
    for k, key in enumerate(keys):
        key_of_token[[t for t, (name, sep, _) in enumerate(parsed) if sep and name == key]] = k
    tokens = np.asarray(features.tokens, np.int64)
    entry_items = np.repeat(np.arange(data.n_items), np.diff(features.offsets))
    entry_keys = key_of_token[tokens] if len(tokens) else np.zeros(0, np.int64)
    values = [value for _, _, value in parsed]
    for k, key in enumerate(keys):
        entries = np.flatnonzero(entry_keys == k)  # in item order, each item's tokens in their order
        attributes[key] = _column(entry_items[entries], tokens[entries], values, data.n_items)
    return attributes


def _column(items: np.ndarray, tokens: np.ndarray, values: list[str], n_items: int) -> Sequence:
    """One key's column from its (item, token) entries, sorted by item."""
    counts = np.bincount(items, minlength=n_items)
    starts = np.cumsum(counts) - counts
    # Multi-valued when some item has two different tokens of the key.
    if (tokens != tokens[starts[items]]).any():
        pairs = items * len(values) + tokens
        order = np.argsort(pairs, kind="stable")  # a repeated token sorts after its first place
        repeat = np.diff(pairs[order]) == 0
        if repeat.any():  # a token listed twice for one item is one value
            keep = np.ones(len(tokens), bool)
            keep[order[1:][repeat]] = False
            items, tokens = items[keep], tokens[keep]
            counts = np.bincount(items, minlength=n_items)
        distinct = np.flatnonzero(np.bincount(tokens, minlength=len(values)))  # O(n): tokens are small ints
        code_of = np.zeros(len(values), np.int64)
        code_of[distinct] = np.arange(len(distinct))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return ValueLists(offsets, code_of[tokens], [values[t] for t in distinct.tolist()])
    first = starts[counts > 0]  # one-valued: each item's first entry
    items, tokens = items[first], tokens[first]
    distinct = np.flatnonzero(np.bincount(tokens, minlength=len(values))).tolist()
    column: list = [None] * n_items
    numbers = all(_is_number(values[t]) for t in distinct)
    as_value = {t: float(values[t]) if numbers else values[t] for t in distinct}
    for item, token in zip(items.tolist(), tokens.tolist(), strict=True):
        column[item] = as_value[token]
    return column


def _is_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False
