"""Item and user features of a table from each entity's first value per column.

Shared by the single-file loader (`data.tabular`) and the Parquet-directory loader
(`data.parquet_dir`): both find, per `item_<field>` / `user_<field>` column, each item's or user's first
non-empty cell in file order, as text, and hand the lists here, so the same data gives the same
features (and fingerprint) however it was read.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recindex.data.interactions import ItemFeatures, UserFeatures
from recindex.data.numeric import numbers_of, quantile_buckets


def cell_text(data: pa.Array | pa.ChunkedArray) -> list[str | None]:
    """Each cell as text, None where empty (a Parquet NaN is a missing number, not the text "nan")."""
    return text_cells(data).to_pylist()


def text_cells(data: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The cells as an Arrow string column, null where empty (NaN included), as `cell_text` reads them."""
    if pa.types.is_floating(data.type):
        data = pc.if_else(pc.is_nan(data), pa.scalar(None, data.type), data)
    return data.cast(pa.string())


def numeric_of(values: list[str | None], buckets: int) -> tuple[np.ndarray | None, tuple | None]:
    """(the column's numbers if it is numeric, its quantile buckets if it has more distinct numbers
    than `buckets`); a numeric column with fewer distinct values keeps a token per value."""
    numbers = numbers_of(values) if buckets else None
    if numbers is None or len(np.unique(numbers[~np.isnan(numbers)])) <= buckets:
        return numbers, None
    return numbers, quantile_buckets(numbers, buckets)


def item_features_of(columns: dict[str, list[str | None]], n_items: int, buckets: int) -> ItemFeatures:
    """Token bags from field -> each item's first value (None: none), in column order."""
    token_index: dict[str, int] = {}
    token_lists: list[list[int]] = [[] for _ in range(n_items)]
    numeric: dict[str, np.ndarray] = {}
    split: dict[str, list[str]] = {}  # distinct values repeat a lot (genres): split each once
    for field_name, values in columns.items():
        numbers, bucketed = numeric_of(values, buckets)
        if numbers is not None:
            numeric[field_name] = numbers
        if bucketed is not None:
            labels, which = bucketed
            tokens = [token_index.setdefault(f"{field_name}={label}", len(token_index)) for label in labels]
            for item in np.flatnonzero(which >= 0).tolist():
                token_lists[item].append(tokens[which[item]])
            continue
        for item, value in enumerate(values):
            if value is None:
                continue
            if value not in split:
                split[value] = split_values(value)
            for part in split[value]:
                token = token_index.setdefault(f"{field_name}={part}", len(token_index))
                token_lists[item].append(token)
    return ItemFeatures.from_lists(token_lists, list(token_index), numeric)


def split_values(value: str) -> list[str]:
    """The values of one cell: `A|B` gives A and B, stripped, repeats dropped, order kept."""
    return list(dict.fromkeys(p.strip() for p in value.split("|") if p.strip()))


def user_features_of(columns: dict[str, list[str | None]], buckets: int) -> UserFeatures:
    """Categorical codes from field -> each user's first value (code 0: unknown)."""
    result_codes: dict[str, np.ndarray] = {}
    vocab: dict[str, list[str]] = {}
    for field_name, values in columns.items():
        bucketed = numeric_of(values, buckets)[1]
        if bucketed is not None:
            labels, which = bucketed
            result_codes[field_name] = which + 1  # code 0 stays 'unknown'
            vocab[field_name] = ["unknown", *labels]
            continue
        # Sorted vocabulary: codes do not depend on row order; code 0 stays 'unknown'.
        distinct = sorted({v for v in values if v is not None})
        lookup = {value: k + 1 for k, value in enumerate(distinct)}
        result_codes[field_name] = np.asarray([lookup.get(v, 0) for v in values], np.int64)
        vocab[field_name] = ["unknown", *distinct]
    return UserFeatures(codes=result_codes, vocab=vocab)
