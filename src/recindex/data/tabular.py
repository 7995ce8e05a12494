"""Loader for interaction tables: CSV, TSV or Parquet with one row per interaction.

Columns: `user` and `item` (required); `timestamp` (integer epoch seconds or an ISO date/datetime,
naive times read as UTC); `item_<field>` item content features (value `A|B` gives tokens `field=A`,
`field=B`); `user_<field>` categorical user features. Anything else is ignored with a warning, so that
a stray column (say, `rating`) does not silently change meaning.

A feature column whose values are all plain numbers (data.numeric) with more distinct values than
`numeric_buckets` is bucketed by quantiles: item tokens `price=[10, 25)`, user codes per bucket. An item
column's raw numbers are kept too (`ItemFeatures.numeric`), as a numeric filter attribute.
`numeric_buckets=0` turns this off (every distinct value its own token, as for text).

CSV cells are read as text, so that ids like `007` and feature values keep their exact spelling; ids
that are all canonical integers become ints either way, so the same data gives the same
`Interactions` (and fingerprint) from CSV and from Parquet.
"""

from __future__ import annotations

import csv
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recindex.data.interactions import Interactions
from recindex.data.table_features import cell_text, item_features_of, user_features_of
from recindex.errors import DataFormatError, RecIndexError

NUMERIC_BUCKETS = 8  # the [data] numeric_buckets default

_SUFFIXES = {".csv": ",", ".tsv": "\t", ".parquet": None, ".pq": None}
INT_PATTERN = r"^(0|-?[1-9][0-9]{0,17})$"  # canonical integers that fit in int64


class TableRows:
    """Rows read from a file plus how to name a row in messages (CSV line with header = 1, or Parquet
    row; `first_row`: where these rows start in a Parquet file read batch by batch)."""

    def __init__(self, path: Path, table: pa.Table, delimiter: str | None, first_row: int = 0):
        self.path, self.table, self.delimiter, self.first_row = path, table, delimiter, first_row

    def error(self, row: int, expected: str, found: str | None) -> DataFormatError:
        if self.delimiter is None:
            return DataFormatError(self.path, None, f"{expected} (row {self.first_row + row + 1})", found)
        return DataFormatError(self.path, _csv_line_of_row(self.path, self.delimiter, row), expected, found)


def load_table(path: Path, numeric_buckets: int = NUMERIC_BUCKETS) -> Interactions:
    if not isinstance(numeric_buckets, int) or numeric_buckets < 0:
        raise RecIndexError(f"numeric_buckets must be a whole number >= 0 (0: off), got {numeric_buckets!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise RecIndexError(f"{path}: unsupported table type {suffix!r}; expected .csv, .tsv or .parquet")
    source = _read(path, _SUFFIXES[suffix])
    table = source.table
    names = table.column_names
    header_line = None if source.delimiter is None else 1
    for required in ("user", "item"):
        if required not in names:
            hint = f"; rename '{required}_id' to '{required}'" if f"{required}_id" in names else ""
            raise DataFormatError(
                path, header_line, f"a column named '{required}' (columns found: {', '.join(names)}){hint}"
            )
    if table.num_rows == 0:
        raise DataFormatError(path, None, "at least one row of data", "no rows")
    item_fields = [n for n in names if n.startswith("item_") and len(n) > len("item_")]
    user_fields = [n for n in names if n.startswith("user_") and len(n) > len("user_")]
    ignored = [n for n in names if n not in ("user", "item", "timestamp", *item_fields, *user_fields)]
    if ignored:
        warnings.warn(
            f"{path}: ignoring column(s) {', '.join(ignored)} (only user, item, timestamp, "
            "item_<field> and user_<field> are used)",
            stacklevel=2,
        )

    users = _ids(source, "user")
    items = _ids(source, "item")
    stamps = timestamps_of(source) if "timestamp" in names else None
    item_features = user_features = None
    if item_fields:
        codes, n_items = _first_appearance(items)
        first = {c[len("item_") :]: _first_values(table, c, codes, n_items) for c in item_fields}
        item_features = item_features_of(first, n_items, numeric_buckets)
    if user_fields:
        codes, n_users = _first_appearance(users)
        first = {c[len("user_") :]: _first_values(table, c, codes, n_users) for c in user_fields}
        user_features = user_features_of(first, numeric_buckets)
    return Interactions.from_triples(
        users, items, stamps, item_features=item_features, user_features=user_features, name=path.stem
    )


def _read(path: Path, delimiter: str | None) -> TableRows:
    if delimiter is None:
        import pyarrow.parquet as pq

        try:
            return TableRows(path, pq.read_table(path), None)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataFormatError(path, None, "a Parquet file", str(error)) from None
    import pyarrow.csv as pacsv

    header = _csv_header(path, delimiter)
    if header is None:
        raise DataFormatError(path, None, "a header line naming the columns", "an empty file")
    duplicates = sorted({n for n in header if header.count(n) > 1})
    if duplicates:
        raise DataFormatError(path, 1, "distinct column names", ", ".join(duplicates))
    options = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header},  # text as written; we convert ourselves
        strings_can_be_null=True,
        null_values=[""],  # only empty cells are missing: 'NA' may be a real value (a country, a tag)
    )
    try:
        table = pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter=delimiter), convert_options=options
        )
    except pa.ArrowInvalid as error:
        line = _csv_bad_line(path, delimiter, len(header))
        expected = f"{len(header)} {'tab' if delimiter == chr(9) else 'comma'}-separated cells per row"
        raise DataFormatError(path, line, expected, str(error)) from None
    return TableRows(path, table, delimiter)


def _csv_header(path: Path, delimiter: str) -> list[str] | None:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle, delimiter=delimiter), None)
    except UnicodeDecodeError as error:
        raise DataFormatError(path, 1, f"UTF-8 text ({error})") from None


def _csv_rows(path: Path, delimiter: str):
    """(first physical line, cells) of each non-empty row after the header, as pyarrow counts rows."""
    with open(path, encoding="utf-8-sig", newline="", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        last = reader.line_num
        for cells in reader:
            start, last = last + 1, reader.line_num
            if cells:  # pyarrow skips empty lines, so they have no row number
                yield start, cells


def _csv_line_of_row(path: Path, delimiter: str, row: int) -> int | None:
    """The file line where data row `row` (0-based) starts; only computed when reporting an error."""
    for index, (line, _) in enumerate(_csv_rows(path, delimiter)):
        if index == row:
            return line
    return None


def _csv_bad_line(path: Path, delimiter: str, width: int) -> int | None:
    return next((line for line, cells in _csv_rows(path, delimiter) if len(cells) != width), None)


def _ids(source: TableRows, name: str) -> np.ndarray:
    return id_values(
        source.table.column(name), lambda row: source.error(row, f"an id in column '{name}'", "an empty cell")
    )


def id_values(column, empty_cell) -> np.ndarray:
    """Ids as int64 where every one is a whole number (ints, whole floats, digit strings), else as text;
    `empty_cell(row)`: the error for the first empty cell (0-based row of `column`)."""
    nulls = pc.is_null(column).to_numpy(zero_copy_only=False)
    if nulls.any():
        raise empty_cell(int(np.flatnonzero(nulls)[0]))
    if pa.types.is_integer(column.type):
        return column.to_numpy().astype(np.int64)
    if pa.types.is_floating(column.type):
        # Integer ids often come back as floats from tools that had a missing value somewhere.
        values = column.to_numpy()
        if np.all(np.isfinite(values) & (values == np.floor(values))):
            return values.astype(np.int64)
    text = column.cast(pa.string())
    if pc.all(pc.match_substring_regex(text, INT_PATTERN)).as_py():
        return text.cast(pa.int64()).to_numpy()
    return np.asarray(text.to_pylist(), dtype=object)


def timestamps_of(source: TableRows) -> np.ndarray:
    column = source.table.column("timestamp").combine_chunks()
    kind = column.type
    nulls = pc.is_null(column).to_numpy(zero_copy_only=False)
    if nulls.any():
        row = int(np.flatnonzero(nulls)[0])
        raise source.error(row, "a timestamp (epoch seconds or an ISO date)", "an empty cell")
    if pa.types.is_integer(kind):
        return column.to_numpy().astype(np.int64)
    if pa.types.is_floating(kind):
        values = column.to_numpy()
        bad = ~np.isfinite(values) | (values != np.floor(values))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise source.error(row, "a timestamp in whole seconds", repr(float(values[row])))
        return values.astype(np.int64)
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        return column.view(pa.int64()).to_numpy() // per_second  # stored as UTC whatever the zone
    if pa.types.is_date32(kind):
        return column.view(pa.int32()).to_numpy().astype(np.int64) * 86_400
    if pa.types.is_date64(kind):
        return column.view(pa.int64()).to_numpy() // 1_000
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataFormatError(source.path, None, "a timestamp column of integers, dates or text", str(kind))
    text = column.cast(pa.string())
    if pc.all(pc.match_substring_regex(text, INT_PATTERN)).as_py():
        return text.cast(pa.int64()).to_numpy()
    values = np.asarray(text.to_pylist(), dtype=object)
    # Parse each distinct string once: real logs repeat timestamps (dates above all).
    uniques, inverse = np.unique(values, return_inverse=True)
    parsed = np.empty(len(uniques), np.int64)
    for k, value in enumerate(uniques):
        seconds = _parse_time(value)
        if seconds is None:
            row = int(np.flatnonzero(inverse == k)[0])
            raise source.error(row, "a timestamp: epoch seconds or an ISO date/datetime", value)
        parsed[k] = seconds
    return parsed[inverse]


def _parse_time(value: str) -> int | None:
    value = value.strip()
    try:
        return int(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a naive time is read as UTC, so results do not depend on TZ
    return int(moment.timestamp())


def _first_appearance(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's code when ids are numbered in order of first appearance, as in
    `Interactions.from_triples`, and the number of distinct ids."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse], len(order)


def _first_values(table: pa.Table, column: str, codes: np.ndarray, n: int) -> list[str | None]:
    """Each entity's value in its first row where the column is not empty (None if always empty)."""
    values = cell_text(table.column(column))
    present = np.flatnonzero([v is not None for v in values])
    result: list[str | None] = [None] * n
    owners, first = np.unique(codes[present], return_index=True)
    for owner, row in zip(owners.tolist(), present[first].tolist(), strict=True):
        result[owner] = values[row]
    return result
