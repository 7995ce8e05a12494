"""An item table: one row per item, an `item` id column and `item_<field>` content columns, in a
Parquet file or a folder of them (`data.parquet_source`), read in batches of rows.

The columns mean what they mean in an interaction table (docs/data.md), so the interaction log itself
can give the content of its items; other columns are left out. Ids are integers when the column holds
integers (or whole floats), else text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from recindex.data.parquet_source import BATCH_ROWS, ParquetSource, open_parquet
from recindex.data.table_features import text_cells
from recindex.data.tabular import id_values
from recindex.errors import DataFormatError


@dataclass(frozen=True)
class ItemRows:
    file: Path
    first_row: int  # where these rows start in `file` (0-based)
    start: int  # where they start in the whole table
    ids: np.ndarray  # int64, or object (text)
    fields: dict[str, pa.Array]  # field (without `item_`) -> each row's cell as text (null: empty)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ItemTable:
    source: ParquetSource
    fields: list[str]  # the `item_<field>` columns' fields, in column order

    @property
    def n_rows(self) -> int:
        return self.source.n_rows

    def rows(
        self, start: int = 0, stop: int | None = None, batch_rows: int = BATCH_ROWS
    ) -> Iterator[ItemRows]:
        columns = ["item", *(f"item_{f}" for f in self.fields)]
        position = start
        for rows in self.source.batches(columns, start, stop, batch_rows):
            ids = _ids(rows.table.column("item"), rows.file, rows.first_row)
            fields = {f: text_cells(rows.table.column(f"item_{f}")).combine_chunks() for f in self.fields}
            yield ItemRows(rows.file, rows.first_row, position, ids, fields)
            position += len(ids)


def open_item_table(path: Path) -> ItemTable:
    source = open_parquet(Path(path), ("item",), "item table")
    fields = [n[len("item_") :] for n in source.columns if n.startswith("item_") and len(n) > len("item_")]
    return ItemTable(source, fields)


def _ids(column: pa.ChunkedArray, file: Path, first_row: int) -> np.ndarray:
    """The item ids read as the interaction tables read them (`tabular.id_values`), so they match."""

    def empty_cell(row: int) -> DataFormatError:
        return DataFormatError(
            file, None, f"an item id in column 'item' (row {first_row + row + 1})", "an empty cell"
        )

    return id_values(column, empty_cell)
