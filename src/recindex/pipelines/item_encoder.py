"""Vectors of an item table's rows with a bundle's item tower.

An item the bundle knows (its id is in the bundle's catalogue) is encoded as the bundle encodes it:
its ID embedding and the content stored with the model (the table's feature columns are not read for
it), so its vector is the one in `item_embeddings.npy`. Any other item is a cold item, encoded from
its `item_<field>` cells alone (the content path the service takes for new items), when the tower reads
content. A cold item is refused, with its id, file and row, when the tower reads ids only, or when none
of its values is a token the bundle knows: a vector from nothing would be served as if it meant
something.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import torch

from recindex.bundle import Bundle
from recindex.data.item_table import ItemRows
from recindex.data.item_tokens import ItemTokens
from recindex.data.tabular import INT_PATTERN
from recindex.errors import RecIndexError
from recindex.models.devices import model_device

_CANONICAL_INT = re.compile(INT_PATTERN)


class CatalogueLookup:
    """Raw item ids -> the bundle's item indices (-1 for ids it does not know)."""

    def __init__(self, item_ids: np.ndarray):
        self.integer = item_ids.dtype.kind in "iu"
        if self.integer:
            self.order = np.argsort(item_ids, kind="stable")
            self.sorted = item_ids[self.order].astype(np.int64)
        else:
            self.index = {value: i for i, value in enumerate(item_ids.tolist())}

    def find(self, ids: np.ndarray) -> np.ndarray:
        if not self.integer:
            keys = ids.tolist() if ids.dtype == object else [str(i) for i in ids.tolist()]
            return np.fromiter((self.index.get(k, -1) for k in keys), np.int64, len(keys))
        if ids.dtype == object:  # text ids against integer ones: '42' is 42, 'x' and '042' are unknown
            valid = np.array([_CANONICAL_INT.match(v) is not None for v in ids.tolist()], bool)
            numbers = np.zeros(len(ids), np.int64)
            numbers[valid] = [int(v) for v in ids[valid].tolist()]
        else:
            valid, numbers = np.ones(len(ids), bool), ids.astype(np.int64)
        if not len(self.sorted):
            return np.full(len(ids), -1, np.int64)
        at = np.minimum(np.searchsorted(self.sorted, numbers), len(self.sorted) - 1)
        hit = valid & (self.sorted[at] == numbers)
        return np.where(hit, self.order[at], -1).astype(np.int64)


class ItemEncoder:
    def __init__(self, bundle: Bundle, device: torch.device | None = None):
        """`device`: where the item tower runs (the bundle's model is moved there; None: where it is).
        Vectors come back to the CPU as numpy arrays whatever the device."""
        self.bundle = bundle
        self.model = bundle.model if device is None else bundle.model.to(device)
        self.device = model_device(self.model)
        self.dim = int(bundle.manifest["embedding"]["dim"])
        self.lookup = CatalogueLookup(bundle.data.item_ids)
        features = bundle.data.item_features
        self.reads_content = getattr(self.model.shape, "n_tokens", 0) > 0 and features is not None
        self.tokens = ItemTokens(features.names) if self.reads_content else None
        self.cold = 0  # items encoded from content

    def encode(self, rows: ItemRows) -> tuple[np.ndarray, np.ndarray]:
        """((n, dim) float32 vectors, (n,) the bundle's index of each item or -1 for a cold item)."""
        index = self.lookup.find(rows.ids)
        vectors = np.empty((len(rows), self.dim), np.float32)
        known = np.flatnonzero(index >= 0)
        cold = np.flatnonzero(index < 0)
        with torch.no_grad():
            if len(known):
                items = torch.as_tensor(index[known]).to(self.device)
                vectors[known] = self.model.item_vectors(items).cpu().numpy()
            if len(cold):
                vectors[cold] = self._content(rows, cold)
        self.cold += len(cold)
        return vectors, index

    def _content(self, rows: ItemRows, cold: np.ndarray) -> np.ndarray:
        if not self.reads_content:
            where = f"{rows.file}, row {rows.first_row + int(cold[0]) + 1}: item {_shown(rows.ids, cold[0])}"
            raise RecIndexError(
                f"{where} is not in the catalogue of bundle {self.bundle.bundle_id} ({len(cold):,} such "
                "items in this batch), and its item tower reads ids only, so it cannot encode an item it "
                "was not trained on; give items of the bundle, or train with item features "
                "(model.item_features)"
            )
        columns = {field: cells.take(pa.array(cold)) for field, cells in rows.fields.items()}
        token_lists = self.tokens.of_rows(columns, len(cold))
        empty = [row for row, tokens in zip(cold.tolist(), token_lists, strict=True) if not tokens]
        if empty:
            where = f"{rows.file}, row {rows.first_row + empty[0] + 1}: item {_shown(rows.ids, empty[0])}"
            fields = ", ".join(f"item_{f}" for f in rows.fields) or "none"
            raise RecIndexError(
                f"{where} is not in the catalogue of bundle {self.bundle.bundle_id} and has no feature "
                f"value its item tower knows (feature columns: {fields}; {len(empty):,} such items in this "
                "batch), so it has nothing to be encoded from"
            )
        return self.model.content_vectors(token_lists).cpu().numpy()


def _shown(ids: np.ndarray, row: int) -> str:
    return repr(ids[row : row + 1].tolist()[0])  # 42 or 'sku-42', not np.int64(42)
