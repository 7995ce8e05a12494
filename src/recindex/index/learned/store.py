"""The items of a learned index by slot: ids, attributes, vectors and the columns its placement writes.

A partitioned index keeps, per item, its id and attributes (the slot table, for lookups and filters), its
float32 vector (candidates are rescored exactly) and what its placement decided: MFLI's leaf per facet,
URI's tokens, CI's lists and fine codes. Those arrays must stay aligned with the slots through upserts,
growth, compaction and loading; holding them in one store, declared as columns, is what keeps them in
step, so no index grows or compacts arrays of its own by hand.

Growth doubles the capacity (single-item upserts stay amortised O(1)). A removed item's slot stays dead
until `compact` renumbers the live items; the caller decides when, because partitions that hold slots
(FAISS lists) must be rebuilt with them. Files: `slot_ids.npy` and the attribute files (the slot
table's), `vectors.npy`, and one `.npy` per column, named by the column: the layout the learned indexes
have always written, so an index saved before the store existed loads unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.attributes import attribute_rows
from recindex.index.learned.kernels import ids_of_slots
from recindex.index.slots import SlotTable


@dataclass(frozen=True)
class Column:
    """A per-slot array of `width` values: its dtype, the value of slots never written, its file."""

    width: int
    dtype: type
    fill: int
    file: str


class RowStore:
    def __init__(self, dim: int, columns: Mapping[str, Column] | None = None):
        self.dim = dim
        self.specs = dict(columns or {})
        self.table = SlotTable()
        self.rows = np.empty((0, dim), np.float32)
        self.columns = {name: np.full((0, c.width), c.fill, c.dtype) for name, c in self.specs.items()}

    def __len__(self) -> int:
        return len(self.table)

    @property
    def used(self) -> int:
        return self.table.used

    def column(self, name: str) -> np.ndarray:
        return self.columns[name]

    # ---- writes ----------------------------------------------------------------------------------

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> tuple[np.ndarray, np.ndarray]:
        """Store the items' vectors and attributes; returns each item's slot and whether it is new.
        An item already stored keeps its slot; its vector and attributes are replaced."""
        slots = self.table.lookup(ids)
        old = slots >= 0
        if old.any():
            self.table.overwrite(slots[old], attribute_rows(attributes, old))
        new = ~old
        if new.any():
            slots[new] = self.table.append(ids[new], attribute_rows(attributes, new))
            self._reserve(self.table.used)
        self.rows[slots] = vectors
        return slots, new

    def _reserve(self, n: int) -> None:
        if n <= len(self.rows):
            return
        capacity = max(n, 2 * len(self.rows), 1024)
        rows = np.zeros((capacity, self.dim), np.float32)
        rows[: len(self.rows)] = self.rows
        self.rows = rows
        for name, spec in self.specs.items():
            grown = np.full((capacity, spec.width), spec.fill, spec.dtype)
            grown[: len(self.columns[name])] = self.columns[name]
            self.columns[name] = grown

    def kill(self, ids: np.ndarray) -> np.ndarray:
        """Mark the stored ones among `ids` removed; returns their slots (columns keep their values)."""
        slots = self.table.lookup(ids)
        slots = slots[slots >= 0]
        self.table.kill(slots)
        return slots

    def compact(self) -> np.ndarray:
        """Renumber the live items to slots 0..live-1; returns the old slot of each new slot."""
        keep = self.table.compact()
        self.rows = self.rows[keep].copy()
        self.columns = {name: values[keep].copy() for name, values in self.columns.items()}
        return keep

    # ---- reads -----------------------------------------------------------------------------------

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        slots = self.table.lookup(np.asarray(ids, np.int64))
        if (slots < 0).any():
            raise InvalidRequest(f"item {int(np.asarray(ids)[slots < 0][0])} is not in the index")
        return self.rows[slots]

    def ids_of(self, slots: np.ndarray) -> np.ndarray:
        """Item ids of slots, -1 where the slot is -1 (a padded place in a result)."""
        if len(self.table.ids) and slots.ndim == 2:  # a result: one compiled pass, -1 kept
            return ids_of_slots(self.table.ids, slots)
        missing = slots < 0
        if not len(self.table.ids):
            return np.where(missing, -1, slots).astype(np.int64)
        ids = self.table.ids[np.where(missing, 0, slots)]
        ids[missing] = -1
        return ids

    # ---- persistence -----------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        used = self.table.used
        self.table.save(folder)
        np.save(folder / "vectors.npy", self.rows[:used], allow_pickle=False)
        for name, spec in self.specs.items():
            np.save(folder / spec.file, self.columns[name][:used], allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, dim: int, columns: Mapping[str, Column] | None = None) -> RowStore:
        store = cls(dim, columns)
        store.table = SlotTable.load(folder)
        used = store.table.used
        rows = np.load(folder / "vectors.npy", allow_pickle=False)
        if rows.shape != (used, dim) or rows.dtype.kind != "f":
            raise InvalidRequest(
                f"{folder}/vectors.npy has shape {rows.shape} {rows.dtype}, expected ({used}, {dim}) float32"
            )
        store.rows = rows.astype(np.float32, copy=False)
        for name, spec in store.specs.items():
            values = np.load(folder / spec.file, allow_pickle=False)
            if values.shape != (used, spec.width) or values.dtype.kind not in "iu":
                raise InvalidRequest(
                    f"{folder}/{spec.file} has shape {values.shape} {values.dtype}, expected "
                    f"({used}, {spec.width}) integers"
                )
            store.columns[name] = values.astype(spec.dtype, copy=False)
        return store
