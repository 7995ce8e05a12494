"""Item writes of a fleet replica (serve.fleet): recorded in the fleet's Milvus item table, then written
to the collection of the version this replica serves, with no log in between.

    writer = FleetWriter(version, fleet)     # fleet: the Milvus side (alias, versions, item table)
    writer.upsert([ItemChange("sku-9", features=["brand=acme"])])

An upsert or delete is acknowledged once (1) its record is in the item table (the fleet's shared
record of the item: content features or vector, attributes, popularity, deleted or not) and (2) its
vector is in the live collection. After (2) the writer reads the alias: when a promotion moved it in
the meantime, the writer switches to the version the alias names and applies the change there too,
encoded by that version's item tower; a promotion carries every record written before it moved the
alias (see FleetRegistry.promote), so no acknowledged write is missing from the new version.

`absorb` brings the records other replicas wrote into what a replica keeps beside the collection: new
items' raw ids, their vectors (item-to-item queries) and descriptions, the popularity fallback list
(new items at popularity 0, deleted items out). With `write_index` it also writes them to the version's
collection, which is how a promotion carries the fleet's items over to a new bundle version.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.milvus.item_table import ItemRecord, fleet_item_id, now_ms
from recindex.serve.items import ItemChange, ItemWriter, attribute_columns, describe_change
from recindex.serve.recommender import ServingVersion

MAX_SWITCHES_PER_WRITE = 3  # promotions a single write follows before giving up (each one loads a bundle)


class FleetSide(Protocol):
    """What a writer needs of the fleet: its item table, and the alias (serve.fleet.Fleet)."""

    items: object

    def live(self) -> str | None: ...

    def follow(self, collection: str) -> None: ...  # serve the version `collection` holds (locks held)


def register(version: ServingVersion, raw_ids: list[str]) -> np.ndarray:
    """Internal ids of `raw_ids` in `version`: a catalogue item's bundle index, else the fleet's id."""
    ids = []
    for raw in map(str, raw_ids):
        internal = version.item_lookup.get(raw)
        if internal is None:
            internal = version.item_lookup[raw] = fleet_item_id(raw)
            version.named_items[internal] = raw
            version.new_items.append(raw)
        ids.append(internal)
    return np.asarray(ids, np.int64)


def fleet_ids(version: ServingVersion, raw_ids: list[str]) -> np.ndarray:
    """Internal ids without registering new names (for deletes: an item another replica added)."""
    return np.asarray(
        [version.item_lookup.get(str(raw), fleet_item_id(str(raw))) for raw in raw_ids], np.int64
    )


def absorb(version: ServingVersion, records: list[ItemRecord], *, write_index: bool = False) -> dict:
    """Apply item records to `version` (see the module notes); counts of what was carried or dropped."""
    live = [r for r in records if not r.deleted]
    gone = [r.raw_id for r in records if r.deleted]
    scratch = ItemWriter(version, None)
    dim = version.index.dim
    known = version.token_lookup
    # A vector of another dimension, or content this bundle's tower knows none of, cannot be placed here.
    fits = [
        r
        for r in live
        if (r.vector is not None and len(r.vector) == dim)
        or (r.vector is None and r.features is not None and any(name in known for name in r.features))
    ]
    dropped = len(live) - len(fits)
    if fits:
        changes = [ItemChange(r.raw_id, r.features, r.vector, r.attributes) for r in fits]
        vectors = scratch._vectors(changes)
        raw_ids = [r.raw_id for r in fits]
        attributes = attribute_columns([r.attributes for r in fits])
        ids = register(version, raw_ids)
        if write_index:
            version.index.add(ids, vectors, attributes=attributes or None)
        _remember(version, ids, vectors, changes, attributes)
    if gone:
        ids = fleet_ids(version, gone)
        if write_index:
            version.index.remove(ids)
        version.popular.remove(ids)
    return {"carried": len(fits), "dropped": dropped, "deleted": len(gone)}


def _remember(version, ids, vectors, changes, attributes) -> None:
    for row, internal in enumerate(ids.tolist()):
        version.changed_vectors[internal] = vectors[row].copy()
        version.changed_descriptions[internal] = describe_change(changes[row])
    version.popular.add(ids, np.zeros((len(ids), 1), np.float32), attributes=attributes or None)


class FleetWriter(ItemWriter):
    """`ItemWriter` for a fleet replica: the item table instead of a log (see the module notes)."""

    def __init__(self, version: ServingVersion, fleet: FleetSide):
        super().__init__(version, None)
        self.fleet = fleet

    def upsert(self, changes: list[ItemChange]) -> int:
        with self.lock:
            _, _, vectors = self._checked(changes)
            stamp = now_ms()
            records = [
                ItemRecord(
                    c.item_id,
                    c.features,
                    None if c.features is not None else vectors[row].tolist(),
                    {k: v for k, v in c.attributes.items() if v is not None},
                    changed_ms=stamp,
                )
                for row, c in enumerate(changes)
            ]
            self.fleet.items.put(records)  # (1) the fleet's record first
            for _ in range(MAX_SWITCHES_PER_WRITE + 1):
                absorb(self.version, records, write_index=True)  # (2) this version's collection
                if not self._moved():
                    return stamp
            raise InvalidRequest("the fleet's live version kept changing during this write; retry it")

    def delete(self, raw_ids: list[str]) -> tuple[int, int]:
        with self.lock:
            stamp = now_ms()
            records = [ItemRecord(str(raw), deleted=True, changed_ms=stamp) for raw in raw_ids]
            self.fleet.items.put(records)
            for _ in range(MAX_SWITCHES_PER_WRITE + 1):
                ids = fleet_ids(self.version, [r.raw_id for r in records])
                present = self.version.index.remove(ids)
                self.version.popular.remove(ids)
                if not self._moved():
                    return stamp, present
            raise InvalidRequest("the fleet's live version kept changing during this write; retry it")

    def _moved(self) -> bool:
        """Whether the alias names another collection than this writer's; if so, switch to it."""
        live = self.fleet.live()
        if live is None or live == self.version.index.collection:
            return False
        self.fleet.follow(live)
        return True
