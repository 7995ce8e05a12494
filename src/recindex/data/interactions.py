"""The `Interactions` type: who interacted with what, in time order, plus optional features.

Users and items get dense internal indices (0..n-1) so that arrays and embedding tables can be indexed
directly; the original ids are kept in `user_ids` / `item_ids` for display and for mapping back.

Sequences are stored in CSR form (`offsets`, `items`), the form every consumer needs: a user's history is
`items[offsets[u]:offsets[u + 1]]`, in time order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ItemFeatures:
    """A bag of categorical attribute tokens per item, in CSR form (an item may have none).

    `names[t]` is the human-readable name of token t (e.g. a brand, a genre, 'year=1995').
    `numeric[field]` keeps the raw numbers of a numeric field whose tokens are buckets (a table's
    `item_price`): one float64 per item, NaN where missing; they become numeric filter attributes.
    """

    offsets: np.ndarray  # (n_items + 1,) int64
    tokens: np.ndarray  # (nnz,) int64, values in [0, len(names))
    names: list[str]
    numeric: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.names)

    def of(self, item: int) -> np.ndarray:
        return self.tokens[self.offsets[item] : self.offsets[item + 1]]

    @staticmethod
    def from_lists(
        token_lists: list[list[int]], names: list[str], numeric: dict[str, np.ndarray] | None = None
    ) -> ItemFeatures:
        lengths = np.fromiter((len(t) for t in token_lists), np.int64, len(token_lists))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = [t for tokens in token_lists for t in tokens]
        return ItemFeatures(offsets, np.asarray(flat, np.int64), list(names), dict(numeric or {}))


@dataclass(frozen=True)
class UserFeatures:
    """Categorical user features: one column per field (e.g. gender), one code per user.

    `vocab[field][code]` names a value; code 0 is reserved for 'unknown'.
    """

    codes: dict[str, np.ndarray]  # field -> (n_users,) int64
    vocab: dict[str, list[str]]


@dataclass(frozen=True)
class Interactions:
    """Per-user, time-ordered item sequences with id maps and optional timestamps and features."""

    user_ids: np.ndarray  # (n_users,) original ids (str or int), index = internal user index
    item_ids: np.ndarray  # (n_items,) original ids
    offsets: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (nnz,) int64 internal item indices, time-ordered within each user
    timestamps: np.ndarray | None = None  # (nnz,) int64 seconds, aligned with `items`
    item_features: ItemFeatures | None = None
    user_features: UserFeatures | None = None
    name: str = "interactions"
    extra: dict = field(default_factory=dict)  # e.g. item titles for display

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.user_ids) + 1:
            raise ValueError("offsets must have n_users + 1 entries")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.items):
            raise ValueError("offsets must start at 0 and end at len(items)")
        if np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must be non-decreasing")
        if len(self.items) and (self.items.min() < 0 or self.items.max() >= len(self.item_ids)):
            raise ValueError("item indices out of range")
        if self.timestamps is not None and len(self.timestamps) != len(self.items):
            raise ValueError("timestamps must align with items")
        if self.item_features is not None and len(self.item_features.offsets) != len(self.item_ids) + 1:
            raise ValueError("item features must cover every item")
        if self.item_features is not None and any(
            len(values) != len(self.item_ids) for values in self.item_features.numeric.values()
        ):
            raise ValueError("numeric item features must have one value per item")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.items)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    def fingerprint(self) -> str:
        """sha256 of the canonical content: ids, sequences, timestamps and features.

        Two loads of the same data give the same fingerprint whatever file format they came from.
        """
        stamps = None if self.timestamps is None else [self.timestamps]
        return fingerprint_of(self, self.offsets, [self.items], stamps)

    @staticmethod
    def from_sequences(
        user_ids: list | np.ndarray,
        item_ids: list | np.ndarray,
        sequences: list[np.ndarray] | list[list[int]],
        timestamps: list[np.ndarray] | None = None,
        **kwargs,
    ) -> Interactions:
        """Build from one internal-index sequence per user (already time-ordered)."""
        lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = (
            np.concatenate([np.asarray(s, np.int64) for s in sequences])
            if len(sequences)
            else np.zeros(0, np.int64)
        )
        stamps = None
        if timestamps is not None:
            stamps = (
                np.concatenate([np.asarray(t, np.int64) for t in timestamps]) if len(timestamps) else None
            )
        return Interactions(
            user_ids=np.asarray(user_ids),
            item_ids=np.asarray(item_ids),
            offsets=offsets,
            items=items.astype(np.int64),
            timestamps=stamps,
            **kwargs,
        )

    @staticmethod
    def from_triples(
        users: np.ndarray, items: np.ndarray, timestamps: np.ndarray | None = None, **kwargs
    ) -> Interactions:
        """Build from parallel arrays of raw user ids, raw item ids and optional timestamps.

        Users and items are indexed in order of first appearance; each user's interactions are sorted
        by timestamp (stable, so ties keep file order), or kept in file order without timestamps.
        """
        user_ids, user_index = _first_appearance_codes(users)
        item_ids, item_index = _first_appearance_codes(items)
        if timestamps is not None:
            order = np.lexsort((np.asarray(timestamps, np.int64), user_index))
        else:
            order = np.argsort(user_index, kind="stable")
        counts = np.bincount(user_index, minlength=len(user_ids))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Interactions(
            user_ids=user_ids,
            item_ids=item_ids,
            offsets=offsets,
            items=item_index[order].astype(np.int64),
            timestamps=None if timestamps is None else np.asarray(timestamps, np.int64)[order],
            **kwargs,
        )


def fingerprint_of(
    data: Interactions,
    offsets: np.ndarray,
    item_parts: Iterable[np.ndarray],
    stamp_parts: Iterable[np.ndarray] | None,
) -> str:
    """`Interactions.fingerprint` of sequences given in consecutive parts (in user order): the ids and
    features of `data`, `offsets`, then every part of the items, then every part of the timestamps
    (None: no timestamps). A dataset read shard by shard (`data.user_shards`) hashes its shards one at a
    time and gets the fingerprint the whole dataset has."""
    digest = hashlib.sha256()
    for ids in (data.user_ids, data.item_ids):
        digest.update("\x1f".join(map(str, ids.tolist())).encode())
        digest.update(b"\x1e")
    digest.update(np.ascontiguousarray(offsets, dtype=np.int64).tobytes())
    # the arrays' buffers, not copies of them: a part may be a memory-mapped file larger than memory
    for part in item_parts:
        digest.update(np.ascontiguousarray(part, dtype=np.int64))
    for part in stamp_parts or ():
        digest.update(np.ascontiguousarray(part, dtype=np.int64))
    if data.item_features is not None:
        digest.update(np.ascontiguousarray(data.item_features.offsets, np.int64).tobytes())
        digest.update(np.ascontiguousarray(data.item_features.tokens, np.int64).tobytes())
        digest.update("\x1f".join(data.item_features.names).encode())
        for key in sorted(data.item_features.numeric):  # nothing added without numeric fields
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(data.item_features.numeric[key], np.float64).tobytes())
    if data.user_features is not None:
        for key in sorted(data.user_features.codes):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(data.user_features.codes[key], np.int64).tobytes())
    return digest.hexdigest()


def _first_appearance_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique values in order of first appearance, and each value's index into them."""
    values = np.asarray(values)
    uniques, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniques[order], rank[inverse].astype(np.int64)
