"""The exact backend: every query scored against every eligible item, by batched BLAS matrix products.

It is the reference every other backend is tested against. Storage can be float32, float16 (half the
memory) or int8 with a per-dimension scale (a quarter; per-dimension because one global scale on unit
vectors caps recall@100 near 0.95). The scale is fixed by the first `add` with 10% headroom, and later
values outside it are clipped. Reduced storage is widened to float32 one chunk of items at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.attributes import attribute_rows
from recindex.index.base import BaseIndex, Capabilities, Metric, SearchResult, top_k
from recindex.index.filters import Filter
from recindex.index.slots import SlotTable

Storage = Literal["float32", "float16", "int8"]
STORAGES = ("float32", "float16", "int8")
SCORE_BLOCK = 1 << 24  # scores held at once (64 MB of float32): queries per block = this / items
WIDEN_CHUNK = 1 << 15  # items widened to float32 at once for reduced storage


class ExactIndex(BaseIndex):
    backend = "exact"
    default_search_params = {}

    def __init__(self, dim: int, metric: Metric = "ip", storage: Storage = "float32", search_params=None):
        super().__init__(dim, metric, search_params)
        if storage not in STORAGES:
            raise InvalidRequest(f"exact storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.storage = storage
        self.table = SlotTable()
        self._dtype = {"float32": np.float32, "float16": np.float16, "int8": np.int8}[storage]
        self._rows = np.empty((0, dim), self._dtype)
        self._scale: np.ndarray | None = None  # int8 only: (dim,) value of one step per dimension
        self._sq_norms = np.empty(0, np.float32)  # l2 only: squared norms of what is stored

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(upsert=True, remove=True, filter="native", persist=True, attributes=True)

    def __len__(self) -> int:
        return len(self.table)

    # ---- writes ----------------------------------------------------------------------------------

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        if self.storage == "int8":
            if self._scale is None:
                self._scale = np.maximum(np.abs(vectors).max(axis=0) * 1.1, 1e-12).astype(np.float32) / 127
            return np.clip(np.rint(vectors / self._scale), -127, 127).astype(np.int8)
        return vectors.astype(self._dtype)

    def _decode(self, rows: np.ndarray) -> np.ndarray:
        wide = rows.astype(np.float32)
        return wide * self._scale if self.storage == "int8" else wide

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        slots = self.table.lookup(ids)
        old = slots >= 0
        encoded = self._encode(vectors)
        if old.any():
            subset = attribute_rows(attributes, old)
            self.table.overwrite(slots[old], subset)
            self._rows[slots[old]] = encoded[old]
        new = ~old
        if new.any():
            subset = attribute_rows(attributes, new)
            new_slots = self.table.append(ids[new], subset)
            self._ensure_rows(self.table.used)
            self._rows[new_slots] = encoded[new]
            slots[new] = new_slots
        if self.metric == "l2":
            self._sq_norms[slots] = (self._decode(self._rows[slots]) ** 2).sum(axis=1)

    def _ensure_rows(self, n: int) -> None:
        if n <= len(self._rows):
            return
        capacity = max(n, 2 * len(self._rows), 1024)
        rows = np.zeros((capacity, self.dim), self._dtype)
        rows[: len(self._rows)] = self._rows
        self._rows = rows
        norms = np.zeros(capacity, np.float32)
        norms[: len(self._sq_norms)] = self._sq_norms
        self._sq_norms = norms

    def _remove(self, ids: np.ndarray) -> int:
        slots = self.table.lookup(ids)
        slots = slots[slots >= 0]
        self.table.kill(slots)
        if self.table.dead > max(1024, self.table.used // 2):
            self._compacted(self.table.compact())
        return len(slots)

    def _compacted(self, keep: np.ndarray) -> None:
        """The slot table dropped its dead slots; `keep` are the old slots of the rows that remain."""
        self._rows = self._rows[keep].copy()
        self._sq_norms = self._sq_norms[keep].copy()

    # ---- search ----------------------------------------------------------------------------------

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        if flt is None and not self.table.dead:
            slots = None  # every stored row is eligible: no per-query pass over the catalogue
        else:
            eligible = self.table.eligible(flt)
            slots = None if eligible.all() else np.flatnonzero(eligible)
        n = self.table.used if slots is None else len(slots)
        ids = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        if n:
            rows = self._rows[: self.table.used] if slots is None else self._rows[slots]
            sq_norms = self._sq_norms[: self.table.used] if slots is None else self._sq_norms[slots]
            item_ids = self.table.ids[: self.table.used] if slots is None else self.table.ids[slots]
            take = min(k, n)
            block = max(1, SCORE_BLOCK // n)
            for start in range(0, len(queries), block):
                chunk = self.score(queries[start : start + block], rows, sq_norms)  # (b, n)
                positions, values = top_k(chunk, take)
                ids[start : start + block, :take] = item_ids[positions]
                scores[start : start + block, :take] = values
            # Slots that are dead or filtered out never reach `rows`; any -inf left is a padded place.
            ids[~np.isfinite(scores)] = -1
        return SearchResult(ids, scores, np.full(len(queries), n, np.int64))

    def score(self, queries: np.ndarray, rows: np.ndarray, sq_norms: np.ndarray) -> np.ndarray:
        """(Q, n) scores of queries against stored rows, higher is better."""
        if self.storage == "float32":
            scores = queries @ rows.T
        else:
            scaled = queries * self._scale if self.storage == "int8" else queries
            scores = np.empty((len(queries), len(rows)), np.float32)
            for start in range(0, len(rows), WIDEN_CHUNK):
                scores[:, start : start + WIDEN_CHUNK] = (
                    scaled @ rows[start : start + WIDEN_CHUNK].astype(np.float32).T
                )
        if self.metric == "l2":
            scores = 2 * scores - sq_norms[None, :] - (queries**2).sum(axis=1, keepdims=True)
        return scores.astype(np.float32, copy=False)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of live ids (decoded to float32)."""
        slots = self.table.lookup(ids)
        if (slots < 0).any():
            raise InvalidRequest(f"item {int(ids[slots < 0][0])} is not in the index")
        return self._decode(self._rows[slots])

    # ---- persistence -----------------------------------------------------------------------------

    def _save(self, folder: Path) -> dict:
        self.table.save(folder)
        np.save(folder / "vectors.npy", self._rows[: self.table.used], allow_pickle=False)
        if self._scale is not None:
            np.save(folder / "scale.npy", self._scale, allow_pickle=False)
        return {"storage": self.storage}

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> ExactIndex:
        index = cls(manifest["dim"], manifest["metric"], manifest["state"]["storage"])
        index.table = SlotTable.load(folder)
        rows = np.load(folder / "vectors.npy", allow_pickle=False)
        if rows.shape != (index.table.used, index.dim) or rows.dtype != index._dtype:
            raise InvalidRequest(
                f"{folder}/vectors.npy has shape {rows.shape} {rows.dtype}, expected "
                f"({index.table.used}, {index.dim}) {index.storage}"
            )
        index._rows = rows
        if (folder / "scale.npy").is_file():
            index._scale = np.load(folder / "scale.npy", allow_pickle=False)
        index._sq_norms = np.zeros(len(rows), np.float32)
        if index.metric == "l2" and len(rows):
            index._sq_norms = (index._decode(rows) ** 2).sum(axis=1).astype(np.float32)
        return index
