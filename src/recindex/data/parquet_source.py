"""A Parquet file or a directory of Parquet files, checked up front and read in batches of rows.

The files of a directory are its `*.parquet` / `*.pq` files below it, in sorted path order (hidden
files and names starting with `_` left out, as pyarrow.dataset does), read as one table: rows of the
first file, then of the second, and so on. Every file must have the same columns with the same types;
one that does not is refused with its name and what it has. Row counts come from the files' metadata,
so a range of rows (`batches(start, stop)`) is read from the row groups that hold it, without reading
what lies before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recindex.errors import DataFormatError, RecIndexError

PARQUET_SUFFIXES = (".parquet", ".pq")
BATCH_ROWS = 65_536


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet files below `folder`, sorted by path (hidden and `_`-prefixed names left out)."""
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and path.suffix.lower() in PARQUET_SUFFIXES and not _hidden(parts):
            found.append(path)
    return found


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith((".", "_")) for part in parts)


@dataclass(frozen=True)
class Rows:
    """One batch: the file it comes from, where it starts in that file, and its rows."""

    file: Path
    first_row: int  # 0-based row of the file where this batch starts
    table: pa.Table


@dataclass(frozen=True)
class ParquetSource:
    path: Path  # as given: a file or a folder
    files: tuple[Path, ...]
    file_rows: tuple[int, ...]  # rows per file, from the metadata
    schema: pa.Schema  # the first file's, which every other file matches

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    @property
    def n_rows(self) -> int:
        return sum(self.file_rows)

    def batches(
        self, columns: list[str], start: int = 0, stop: int | None = None, batch_rows: int = BATCH_ROWS
    ) -> Iterator[Rows]:
        """Rows `start` to `stop` (of all files in order) of `columns`, at most `batch_rows` at a time."""
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        file_start = 0
        for file, rows in zip(self.files, self.file_rows, strict=True):
            lo, hi = max(start, file_start) - file_start, min(stop, file_start + rows) - file_start
            file_start += rows
            if lo < hi:
                yield from _file_batches(file, columns, lo, hi, batch_rows)


def _file_batches(file: Path, columns: list[str], lo: int, hi: int, batch_rows: int) -> Iterator[Rows]:
    """Rows lo..hi of one file, read from the row groups that hold them."""
    handle = pq.ParquetFile(file)
    groups, group_start, first = [], 0, None
    for group in range(handle.metadata.num_row_groups):
        size = handle.metadata.row_group(group).num_rows
        if group_start < hi and group_start + size > lo:
            groups.append(group)
            first = group_start if first is None else first
        group_start += size
    if not groups:
        return
    row = first
    try:
        for batch in handle.iter_batches(batch_rows, row_groups=groups, columns=columns):
            end = row + batch.num_rows
            if end > lo and row < hi:
                piece = batch.slice(max(lo - row, 0), min(hi, end) - max(lo, row))
                yield Rows(file, max(lo, row), pa.Table.from_batches([piece]))
            row = end
    except (pa.ArrowInvalid, OSError) as error:
        raise DataFormatError(file, None, "a readable Parquet file", str(error)) from None


def open_parquet(path: Path, required: tuple[str, ...], what: str = "table") -> ParquetSource:
    """Check a Parquet file or folder: it has Parquet files, each names the `required` columns, and
    all have the first one's columns and types. Reads metadata only."""
    path = Path(path)
    if path.is_dir():
        files = parquet_files(path)
        if not files:
            raise RecIndexError(
                f"{path}: no Parquet files (*.parquet, *.pq) in this folder; a {what} folder holds "
                "Parquet files with the same columns"
            )
    elif path.is_file():
        files = [path]
    else:
        raise RecIndexError(f"{path}: no such file or folder")
    schema, rows = None, []
    for file in files:
        try:
            found = pq.read_schema(file)
            rows.append(pq.read_metadata(file).num_rows)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataFormatError(file, None, "a Parquet file", str(error)) from None
        for column in required:
            if column not in found.names:
                hint = f"; rename '{column}_id' to '{column}'" if f"{column}_id" in found.names else ""
                names = ", ".join(found.names) or "none"
                raise DataFormatError(file, None, f"a column named '{column}' (columns found: {names}){hint}")
        if schema is None:
            schema = found
        elif not _same_columns(schema, found):
            raise DataFormatError(
                file,
                None,
                f"the columns of {files[0].name}: {_describe(schema)}",
                _describe(found),
            )
    return ParquetSource(path, tuple(files), tuple(rows), schema)


def _same_columns(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and all(x.type == y.type for x, y in zip(a, b, strict=True))


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{field.name}: {field.type}" for field in schema)
