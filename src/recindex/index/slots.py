"""Item ids <-> storage slots, liveness and attributes: the bookkeeping in-process indexes share.

A slot is a row of the backend's storage (a row of the exact matrix, a FAISS label). Slots are handed
out in increasing order and a removed item's slot stays dead (id -1) until `compact`, because graph
indexes such as HNSW cannot delete a node: dead slots are filtered out at search time instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recindex.index.attributes import AttributeStore
from recindex.index.filters import Filter, expression_mask


class SlotTable:
    def __init__(self) -> None:
        self.ids = np.empty(0, np.int64)  # slot -> item id, -1 if dead
        self.used = 0  # slots handed out so far
        self.live = 0
        # True while every item id equals its slot (a bundle's items 0..n-1 added in order): search
        # results then need no id lookup, which costs cache misses on every query.
        self.identity = True
        # A dict rather than a sorted array: single-item upserts in a serving loop stay O(1).
        self._slot_of: dict[int, int] = {}
        self.attributes = AttributeStore()

    def __len__(self) -> int:
        return self.live

    @property
    def dead(self) -> int:
        return self.used - self.live

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Slot of each id, -1 for ids not in the table."""
        get = self._slot_of.get
        return np.fromiter((get(i, -1) for i in ids.tolist()), np.int64, len(ids))

    def append(self, ids: np.ndarray, attributes) -> np.ndarray:
        """New slots for ids that are not live (callers kill replaced slots first)."""
        slots = np.arange(self.used, self.used + len(ids), dtype=np.int64)
        if self.used + len(ids) > len(self.ids):
            grown = np.full(max(self.used + len(ids), 2 * len(self.ids), 1024), -1, np.int64)
            grown[: self.used] = self.ids[: self.used]
            self.ids = grown
        self.attributes.set(slots, attributes)  # validates before anything changes
        self.identity = self.identity and bool(np.array_equal(ids, slots))
        self.ids[slots] = ids
        self._slot_of.update(zip(ids.tolist(), slots.tolist(), strict=True))
        self.used += len(ids)
        self.live += len(ids)
        return slots

    def overwrite(self, slots: np.ndarray, attributes) -> None:
        self.attributes.set(slots, attributes)

    def kill(self, slots: np.ndarray) -> None:
        slots = slots[slots >= 0]
        for item in self.ids[slots].tolist():
            del self._slot_of[item]
        self.ids[slots] = -1
        self.attributes.clear(slots)
        self.live -= len(slots)

    def live_mask(self) -> np.ndarray:
        return self.ids[: self.used] >= 0

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.live_mask())

    def eligible(self, flt: Filter | None) -> np.ndarray:
        """Boolean mask over slots: live and passing the filter."""
        mask = self.live_mask()
        if flt is None:
            return mask
        ids = self.ids[: self.used]
        if flt.where is not None:
            mask &= expression_mask(flt.where, self.attributes, self.used)
        if flt.allow_ids is not None:
            mask &= np.isin(ids, flt.allow_ids)
        if flt.deny_ids is not None:
            mask &= ~np.isin(ids, flt.deny_ids)
        return mask

    def compact(self) -> np.ndarray:
        """Renumber live items to slots 0..live-1; returns the old slot of each new slot."""
        keep = self.live_slots()
        table = SlotTable.from_ids(self.ids[keep])
        table.attributes = self.attributes.take(keep)
        self.__dict__.update(table.__dict__)
        return keep

    @classmethod
    def from_ids(cls, ids: np.ndarray) -> SlotTable:
        """A table whose slot i holds ids[i] (-1 entries are dead slots)."""
        table = cls()
        table.ids = ids.astype(np.int64).copy()
        table.used = len(ids)
        live = np.flatnonzero(table.ids >= 0)
        table.live = len(live)
        table.identity = bool(np.array_equal(table.ids[live], live))
        table._slot_of = dict(zip(table.ids[live].tolist(), live.tolist(), strict=True))
        return table

    def save(self, folder: Path) -> None:
        np.save(folder / "slot_ids.npy", self.ids[: self.used], allow_pickle=False)
        self.attributes.save(folder, self.used)

    @classmethod
    def load(cls, folder: Path) -> SlotTable:
        table = cls.from_ids(np.load(folder / "slot_ids.npy", allow_pickle=False))
        table.attributes = AttributeStore.load(folder)
        table.attributes.reserve(table.used)
        return table
