"""Interactions from a directory of Parquet files, read batch by batch: the raw table is never whole
in memory.

One streaming pass over the files (in `data.parquet_source` order) numbers users and items in order of
first appearance (the id maps), turns each batch into compact codes (user and item as int32, the
timestamp as int64) and keeps each item's and user's first feature value. What stays in memory is
those codes, 16 bytes per interaction, sorted at the end into the per-user sequences of `Interactions`
(int64 items and timestamps: 16 bytes per interaction, plus 8 per user), and one entry per distinct id
in the id maps. The result is the same `Interactions`, fingerprint included, as the single-file loader
(`data.tabular`) gives for the concatenated files.

The pass is `CodeStream`, which `data.user_shards` shares to write the same codes into shards of users
on disk instead of memory.

`shard=(rank, world)` keeps the sequences of users `rank, rank + world, ...` only (the other users'
are empty): each of `world` processes then holds a share of the interactions, with the global id maps,
so that item and user numbers agree across them. Every process still reads all files once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recindex.data.interactions import Interactions, ItemFeatures, UserFeatures
from recindex.data.parquet_source import BATCH_ROWS, Rows, open_parquet
from recindex.data.table_features import cell_text, item_features_of, user_features_of
from recindex.data.tabular import INT_PATTERN, NUMERIC_BUCKETS, TableRows, timestamps_of
from recindex.errors import DataFormatError, RecIndexError


class IdMap:
    """Raw ids -> dense codes in order of first appearance, grown batch by batch.

    Ids are typed as the single-file loader types them: integer (and whole float) columns give ints;
    text gives ints when every id in the whole column is a canonical integer, else text."""

    def __init__(self, column: str):
        self.column = column
        self.codes: dict = {}
        self.all_integer_text = True

    def encode(self, rows: Rows) -> np.ndarray:
        """The codes of this batch's ids (int64), new ids numbered as they first appear."""
        values = self._values(rows)
        uniques, first, inverse = np.unique(values, return_index=True, return_inverse=True)
        for value in uniques[np.argsort(first, kind="stable")].tolist():
            self.codes.setdefault(value, len(self.codes))
        lookup = np.fromiter((self.codes[v] for v in uniques.tolist()), np.int64, len(uniques))
        return lookup[inverse.reshape(-1)]

    def _values(self, rows: Rows) -> np.ndarray:
        column = rows.table.column(self.column)
        nulls = pc.is_null(column).to_numpy(zero_copy_only=False)
        if nulls.any():
            row = rows.first_row + int(np.flatnonzero(nulls)[0]) + 1
            expected = f"an id in column '{self.column}' (row {row})"
            raise DataFormatError(rows.file, None, expected, "an empty cell")
        if pa.types.is_integer(column.type):
            return column.to_numpy().astype(np.int64)
        if pa.types.is_floating(column.type):
            values = column.to_numpy()
            whole = np.isfinite(values) & (values == np.floor(values))
            if not whole.all():
                row = rows.first_row + int(np.flatnonzero(~whole)[0]) + 1
                expected = f"whole-number ids in column '{self.column}' (row {row})"
                raise DataFormatError(rows.file, None, expected, str(values[~whole][0]))
            return values.astype(np.int64)
        text = column.cast(pa.string())
        if self.all_integer_text:
            self.all_integer_text = pc.all(pc.match_substring_regex(text, INT_PATTERN)).as_py()
        return np.asarray(text.to_pylist(), dtype=object)

    def ids(self) -> np.ndarray:
        keys = list(self.codes)  # insertion order is code order
        if keys and isinstance(keys[0], str):
            if self.all_integer_text:
                return np.asarray([int(k) for k in keys], np.int64)
            return np.asarray(keys, object)
        return np.asarray(keys, np.int64)

    def __len__(self) -> int:
        return len(self.codes)


class FirstValues:
    """Each entity's first non-empty value of one feature column, in row order."""

    def __init__(self) -> None:
        self.values: dict[int, str] = {}

    def update(self, codes: np.ndarray, column: pa.ChunkedArray) -> None:
        texts = cell_text(column)
        present = np.flatnonzero([v is not None for v in texts])
        owners, first = np.unique(codes[present], return_index=True)
        for owner, row in zip(owners.tolist(), present[first].tolist(), strict=True):
            if owner not in self.values:
                self.values[owner] = texts[row]

    def as_list(self, n: int) -> list[str | None]:
        return [self.values.get(i) for i in range(n)]


class CodeStream:
    """One streaming pass over a Parquet file or folder: `batches()` yields each batch's user and item
    codes (int64, numbered by the id maps as they first appear) and timestamps (int64, or None); once it
    is spent, `users` and `items` are the id maps and `item_features()` / `user_features()` the
    features of each entity's first value. The one reader of `load_parquet_dir` and `data.user_shards`,
    so that both number ids alike."""

    def __init__(self, path: Path, numeric_buckets: int = NUMERIC_BUCKETS, batch_rows: int = BATCH_ROWS):
        if not isinstance(numeric_buckets, int) or numeric_buckets < 0:
            raise RecIndexError(
                f"numeric_buckets must be a whole number >= 0 (0: off), got {numeric_buckets!r}"
            )
        self.numeric_buckets, self.batch_rows = numeric_buckets, batch_rows
        self.source = source = open_parquet(Path(path), ("user", "item"), "interactions")
        if source.n_rows == 0:
            raise DataFormatError(source.path, None, "at least one row of data", "no rows")
        names = source.columns
        self.item_fields = [n for n in names if n.startswith("item_") and len(n) > len("item_")]
        self.user_fields = [n for n in names if n.startswith("user_") and len(n) > len("user_")]
        known = ("user", "item", "timestamp", *self.item_fields, *self.user_fields)
        ignored = [n for n in names if n not in known]
        if ignored:
            warnings.warn(
                f"{source.path}: ignoring column(s) {', '.join(ignored)} (only user, item, timestamp, "
                "item_<field> and user_<field> are used)",
                stacklevel=3,
            )
        self.has_time = "timestamp" in names
        self.users, self.items = IdMap("user"), IdMap("item")
        self.firsts = {column: FirstValues() for column in (*self.item_fields, *self.user_fields)}
        self.name = source.path.name if source.path.is_dir() else source.path.stem

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        time = ["timestamp"] if self.has_time else []
        read = ["user", "item", *time, *self.item_fields, *self.user_fields]
        for rows in self.source.batches(read, batch_rows=self.batch_rows):
            user, item = self.users.encode(rows), self.items.encode(rows)
            for column, first in self.firsts.items():
                first.update(item if column.startswith("item_") else user, rows.table.column(column))
            stamp = None
            if self.has_time:
                stamp = timestamps_of(TableRows(rows.file, rows.table, None, rows.first_row))
            yield user, item, stamp

    def item_features(self) -> ItemFeatures | None:
        if not self.item_fields:
            return None
        n = len(self.items)
        first = {c[len("item_") :]: self.firsts[c].as_list(n) for c in self.item_fields}
        return item_features_of(first, n, self.numeric_buckets)

    def user_features(self) -> UserFeatures | None:
        if not self.user_fields:
            return None
        n = len(self.users)
        first = {c[len("user_") :]: self.firsts[c].as_list(n) for c in self.user_fields}
        return user_features_of(first, self.numeric_buckets)


def load_parquet_dir(
    path: Path,
    numeric_buckets: int = NUMERIC_BUCKETS,
    *,
    shard: tuple[int, int] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Interactions:
    """The interactions of a Parquet file or folder (columns as in docs/data.md), streamed in batches."""
    rank, world = _check_shard(shard)
    stream = CodeStream(path, numeric_buckets, batch_rows)
    user_codes, item_codes, stamps = [], [], []
    for user, item, stamp in stream.batches():
        keep = slice(None) if world == 1 else user % world == rank
        user_codes.append(_int32(user[keep], "users"))
        item_codes.append(_int32(item[keep], "items"))
        if stamp is not None:
            stamps.append(stamp[keep])
    offsets, sequence_items, sequence_stamps = _sequences(
        user_codes, item_codes, stamps if stream.has_time else None, len(stream.users)
    )
    return Interactions(
        user_ids=stream.users.ids(),
        item_ids=stream.items.ids(),
        offsets=offsets,
        items=sequence_items,
        timestamps=sequence_stamps,
        item_features=stream.item_features(),
        user_features=stream.user_features(),
        name=stream.name,
    )


def _check_shard(shard: tuple[int, int] | None) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    rank, world = shard
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise RecIndexError(f"a user shard is (rank, world) with 0 <= rank < world, got {shard!r}")
    return rank, world


def _int32(codes: np.ndarray, what: str) -> np.ndarray:
    if len(codes) and codes.max() >= np.iinfo(np.int32).max:
        raise RecIndexError(f"more than {np.iinfo(np.int32).max:,} {what}: more than this loader numbers")
    return codes.astype(np.int32)


def _sequences(
    user_codes: list[np.ndarray], item_codes: list[np.ndarray], stamps: list[np.ndarray] | None, n_users: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """CSR per user, time-ordered; ties (and data without time) keep row order, as `from_triples`."""
    users = np.concatenate(user_codes)
    user_codes.clear()  # each list is dropped as soon as it is joined: one copy at a time in memory
    times = None
    if stamps is not None:
        times = np.concatenate(stamps)
        stamps.clear()
        order = np.lexsort((times, users))
    else:
        order = np.argsort(users, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))]).astype(np.int64)
    del users
    items = np.concatenate(item_codes)
    item_codes.clear()
    items = items[order].astype(np.int64)
    if times is not None:
        times = times[order]
    return offsets, items, times
