"""One logical index over one inner index per value of an item attribute (`sharded:by=region:INNER`).

Each item lives in the partition of its value of the partition attribute; an upsert that changes the
value moves the item, and an item without the attribute (no value, None, or an add without attributes)
lives in the default partition. Partitions are made as values first arrive, each an empty index of the
inner spec.

A request whose filter pins the partition attribute (`region == "eu"`, `region in ["eu", "us"]`,
either joined with `and` to other conditions, or alternatives joined with `or` that each pin it)
searches only those partitions: no item elsewhere can match. Every other request searches all
partitions and merges their lists, as the hash-sharded index does. Each partition still applies the
whole filter, so the other conditions hold. The default partition is searched only by requests that do
not pin the attribute, since an item without a value never matches a comparison on it.

The candidates each partition scores are summed into `SearchResult.scored` (where the inner backend
counts them), so a report shows what a pinned request saves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from recindex.errors import BundleError, InvalidRequest
from recindex.index.attributes import AttributeStore
from recindex.index.base import BaseIndex, SearchResult, as_matrix, check_k
from recindex.index.filters import as_filter
from recindex.index.partition_filters import PartitionKey, filter_for_partition, partition_key, pinned_keys
from recindex.index.sharded import ShardedIndex

MAX_PARTITIONS = 256
MAP_FILE = "partition_of.npy"  # (n, 2) int64: item id, partition number


def _key_json(key: PartitionKey):
    return None if key is None else [key[0], key[1]]


def _key_of_json(value) -> PartitionKey:
    return None if value is None else (str(value[0]), value[1])


class PartitionedIndex(ShardedIndex):
    """Partitions of an item attribute, each an index of the inner spec, searched like shards."""

    def __init__(
        self, by: str, make_partition: Callable[[], BaseIndex], spec: str = "", options: dict | None = None
    ):
        self.by = by
        self.options = dict(options or {})  # the inner spec's build options, saved for new partitions
        self._make_partition = make_partition
        default = make_partition()
        caps = default.capabilities
        if not (caps.attributes and caps.remove and caps.upsert):
            raise InvalidRequest(
                f"partitioning by {by!r} needs an inner index that stores attributes, upserts and removes "
                f"items (an upsert that changes {by} moves the item); {spec!r} does not"
            )
        super().__init__([default], spec)
        self.keys: list[PartitionKey] = [None]  # partition number -> its key; 0 is the default
        self._number: dict[PartitionKey, int] = {None: 0}
        self._where: dict[int, int] = {}  # item id -> partition number
        self._kinds: dict[str, str] = {}  # attribute -> its kind, one for the whole index
        # The attributes each partition has a column of: a filter's comparisons on the others are
        # decided before asking it (partition_filters.filter_for_partition).
        self._known: list[set[str]] = [set()]

    def partition_sizes(self) -> dict[str, int]:
        """Items per partition, by value ("" for the default partition), for reports."""
        return {
            ("" if key is None else str(key[1])): len(s)
            for key, s in zip(self.keys, self.shards, strict=True)
        }

    def pool_workers(self) -> int:
        """One thread per core: partitions come and go with the data, and a pinned request searches few."""
        return max(1, os.cpu_count() or 1)

    def _partitions_for(self, keys: Iterable[PartitionKey]) -> np.ndarray:
        """The partition number of each key, making partitions for keys not seen before."""
        keys = list(keys)
        new = list(dict.fromkeys(key for key in keys if key not in self._number))
        if len(self.keys) + len(new) > MAX_PARTITIONS:
            raise InvalidRequest(
                f"partition attribute {self.by!r} would have {len(self.keys) + len(new)} values; at most "
                f"{MAX_PARTITIONS - 1} (and the default partition): partition by a coarser attribute"
            )
        for key in new:
            self._number[key] = len(self.keys)
            self.keys.append(key)
            self.shards.append(self._make_partition())
            self._known.append(set())
        return np.fromiter((self._number[key] for key in keys), np.int64, len(keys))

    def _checked_attributes(self, attributes, n: int) -> tuple[dict[str, list], dict[str, str]]:
        """The attributes that carry a value for some item, checked as one index would check them
        (names, one value per item, one kind per attribute across all partitions) before any
        partition changes. An attribute without any value is left out: a column made of nothing but
        missing values would fix a partition's kind for that attribute by guess."""
        if not attributes:
            return {}, {}
        probe = AttributeStore()
        probe.set(np.arange(n), attributes)  # refuses bad names, lengths and mixed kinds
        out, kinds = {}, {}
        for name, kind in probe.schema.items():
            if not probe.present(name, n).any():
                continue
            known = self._kinds.get(name, kind)
            if kind != known and (known, kind) != ("str_list", "str"):
                raise InvalidRequest(f"attribute {name!r} holds {known} values, got {kind} values")
            out[name], kinds[name] = list(attributes[name]), known
        return out, kinds

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        attributes, kinds = self._checked_attributes(attributes, len(ids))
        values = attributes.get(self.by)
        keys = [None] * len(ids) if values is None else [partition_key(v, self.by) for v in values]
        target = self._partitions_for(keys)
        self._kinds.update(kinds)
        get = self._where.get
        current = np.fromiter((get(i, -1) for i in ids.tolist()), np.int64, len(ids))
        moved = (current >= 0) & (current != target)
        for number in np.unique(current[moved]).tolist():
            self.shards[number].remove(ids[moved & (current == number)])
        for number in np.unique(target).tolist():
            rows = np.flatnonzero(target == number)
            subset = {k: self._values(k, v, rows) for k, v in attributes.items()}
            subset = {k: v for k, v in subset.items() if any(x is not None for x in v)}
            self.shards[number].add(ids[rows], vectors[rows], attributes=subset or None)
            self._known[number] |= set(subset)
        self._where.update(zip(ids.tolist(), target.tolist(), strict=True))

    def _values(self, name: str, values: list, rows: np.ndarray) -> list:
        """The values of `rows`; single strings of a multi-valued attribute as sets of one, so that a
        partition whose items happen to have one value each still holds the attribute as lists."""
        if self._kinds.get(name) == "str_list":
            return [[values[i]] if isinstance(values[i], str) else values[i] for i in rows]
        return [values[i] for i in rows]

    def _remove(self, ids: np.ndarray) -> int:
        get = self._where.get
        current = np.fromiter((get(i, -1) for i in ids.tolist()), np.int64, len(ids))
        removed = 0
        for number in np.unique(current[current >= 0]).tolist():
            removed += self.shards[number].remove(ids[current == number])
        for item in ids[current >= 0].tolist():
            del self._where[item]
        return removed

    def search(self, queries, k: int, *, filter=None, params=None, exclude=None) -> SearchResult:  # noqa: A002
        check_k(k, len(self))
        queries = as_matrix(queries, self.dim, "queries")
        flt = as_filter(filter)
        unknown = sorted(flt.attributes - set(self._kinds)) if flt is not None else []
        if unknown:  # what one index holding every item would say
            known = ", ".join(sorted(self._kinds)) or "none"
            raise InvalidRequest(f"filter uses unknown attribute {unknown[0]!r} (this index has: {known})")
        keys = pinned_keys(flt.where if flt is not None else None, self.by)
        jobs = []
        with self._guard:  # an add may be making partitions; the searches themselves run unguarded
            chosen = (
                range(len(self.shards))
                if keys is None
                else sorted(self._number[key] for key in keys if key in self._number)
            )
            for number in chosen:
                asked = filter_for_partition(flt, self._known[number])
                if asked is not False:  # False: no item of this partition can match
                    jobs.append((self.shards[number], asked))
        return self.fan_out(jobs, queries, int(k), params, exclude)

    def _save(self, folder: Path) -> dict:
        for number, shard in enumerate(self.shards):
            shard.save(folder / f"shard_{number}")
        pairs = np.array(list(self._where.items()), np.int64).reshape(-1, 2)
        np.save(folder / MAP_FILE, pairs, allow_pickle=False)
        try:
            options = json.loads(json.dumps(self.options))
        except TypeError:
            options = {}  # material that is no JSON (none of the in-process backends takes any)
        return {
            "shards": len(self.shards),
            "spec": self.spec,
            "by": self.by,
            "keys": [_key_json(key) for key in self.keys],
            "known": [sorted(known) for known in self._known],
            "kinds": self._kinds,
            "options": options,
        }

    def restore(self, partitions: list[BaseIndex], state: dict, folder: Path) -> None:
        """Take the saved partitions and their item map back (index.factory reads the partitions)."""
        keys = [_key_of_json(value) for value in state["keys"]]
        known = [set(names) for names in state["known"]]
        if not (len(keys) == len(known) == len(partitions)) or keys[0] is not None:
            raise BundleError(f"{folder}: the partition list does not match the saved partitions")
        self.close()
        self.shards, self.keys, self._known = list(partitions), keys, known
        self._kinds = dict(state["kinds"])
        self._number = {key: number for number, key in enumerate(keys)}
        pairs = np.load(folder / MAP_FILE, allow_pickle=False)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or (len(pairs) and pairs[:, 1].max() >= len(keys)):
            raise BundleError(f"{folder / MAP_FILE}: not a map of item ids to {len(keys)} partitions")
        self._where = dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))
        if len(self._where) != len(self):
            raise BundleError(
                f"{folder}: the item map holds {len(self._where)} items, the partitions {len(self)}"
            )
