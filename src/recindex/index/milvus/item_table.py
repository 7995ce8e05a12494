"""A fleet's item records in a Milvus collection of their own: what the service keeps per item besides
the vector, where every replica reads it.

    table = ItemTable(connection, "shop")                 # collection "shop__items"
    table.put([ItemRecord("sku-9", features=["brand=acme"], attributes={"price": 9.5})])
    table.changed_since(ms)                               # records written at or after `ms`
    table.names([fleet_item_id("sku-9")])                 # -> {id: "sku-9"}

One row per raw item id ever written through the fleet: its content features (the attribute tokens a
new bundle's item tower encodes again at promotion), or the vector it was given; its filter attributes;
its popularity (0 for an item added since the bundle: no interactions yet); whether it was deleted (the
row stays, so a promotion also deletes it from the next version's collection); and when it was written.

Item ids: a new item's id in every collection is `fleet_item_id(raw)`, a hash of its raw id at 2**62 and
above (catalogue items keep their bundle index, below that), so replicas agree on it without asking
anyone. A search hit on an id a replica does not know yet is named from this table.

Consistency: writes are upserts, done before the item's vector is written to a collection, so a replica
that finds the vector finds its record at Strong. `names` reads Eventually first (cheap, usually
enough) and Strong for ids it did not find; `changed_since` is a replica's cache refresh (Eventually,
polled again with a margin); `everything` is what a promotion carries over (Strong: every acknowledged
write before the call).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from recindex.errors import RecIndexError
from recindex.index.milvus.aliases import KEY_CHARS, PLACEHOLDER, PLACEHOLDER_VECTOR, TEXT, create_table
from recindex.index.milvus.connection import MilvusConnection, collection_name

NEW_ITEM_BASE = 1 << 62  # new items' ids: this plus a 62-bit hash of the raw id
ID_BATCH = 1_000
PAGE = 4_000  # rows per query page
FIELDS = ["raw_id", "item_id", "features", "vector", "attributes", "deleted", "changed_ms", "popularity"]


def fleet_item_id(raw: str) -> int:
    """The id every replica gives a new item with raw id `raw`."""
    digest = hashlib.blake2b(str(raw).encode("utf-8"), digest_size=8).digest()
    return NEW_ITEM_BASE + int.from_bytes(digest, "big") % NEW_ITEM_BASE


@dataclass
class ItemRecord:
    raw_id: str
    features: list[str] | None = None
    vector: list[float] | None = None
    attributes: dict = field(default_factory=dict)
    deleted: bool = False
    changed_ms: int = 0
    popularity: float = 0.0

    @property
    def item_id(self) -> int:
        return fleet_item_id(self.raw_id)

    def row(self) -> dict:
        row = {
            "raw_id": self.raw_id,
            "item_id": self.item_id,
            "features": json.dumps(self.features),
            "vector": json.dumps(self.vector),
            "attributes": json.dumps(self.attributes),
            "deleted": self.deleted,
            "changed_ms": self.changed_ms,
            "popularity": self.popularity,
            PLACEHOLDER: PLACEHOLDER_VECTOR,
        }
        for name in ("features", "vector", "attributes"):
            if len(row[name]) > TEXT:
                raise RecIndexError(f"item {self.raw_id!r}: its {name} take over {TEXT} characters as JSON")
        return row

    @classmethod
    def of(cls, row: dict) -> ItemRecord:
        return cls(
            row["raw_id"],
            json.loads(row["features"]),
            json.loads(row["vector"]),
            json.loads(row["attributes"]),
            bool(row["deleted"]),
            int(row["changed_ms"]),
            float(row["popularity"]),
        )


def now_ms() -> int:
    return int(time.time() * 1000)


class ItemTable:
    def __init__(self, connection: MilvusConnection, fleet: str):
        name = f"{collection_name(fleet)}__items"
        self.table = MilvusConnection(connection.uri, connection.token, name)
        self._ready = False

    @property
    def client(self):
        if not self._ready:
            fields = {name: "text" for name in ("features", "vector", "attributes")}
            fields |= {"item_id": "int", "deleted": "bool", "changed_ms": "int", "popularity": "float"}
            create_table(self.table, "raw_id", fields)
            self._ready = True
        return self.table.client

    def put(self, records: list[ItemRecord]) -> None:
        long = [r.raw_id for r in records if len(r.raw_id.encode("utf-8")) > KEY_CHARS]
        if long:
            raise RecIndexError(f"item id {long[0][:40]!r}... is over {KEY_CHARS} bytes")
        rows = [record.row() for record in records]
        with self.table.errors("write items"):
            self.client.upsert(self.table.collection, rows)

    def names(self, ids: Iterable[int]) -> dict[int, str]:
        """Raw ids of fleet item ids (those found: Eventually first, then Strong for the rest)."""
        wanted = sorted({int(i) for i in ids})
        found: dict[int, str] = {}
        for level in ("Eventually", "Strong"):
            missing = [i for i in wanted if i not in found]
            for start in range(0, len(missing), ID_BATCH):
                batch = missing[start : start + ID_BATCH]
                for row in self._query(f"item_id in {batch}", ["raw_id", "item_id"], level):
                    found[int(row["item_id"])] = row["raw_id"]
            if len(found) == len(wanted):
                break
        return found

    def changed_since(self, ms: int, level: str = "Eventually") -> list[ItemRecord]:
        return [ItemRecord.of(row) for row in self._query(f"changed_ms >= {int(ms)}", FIELDS, level)]

    def everything(self) -> list[ItemRecord]:
        return self.changed_since(-1, "Strong")

    def _query(self, expr: str, output: list[str], level: str) -> list[dict]:
        """Every row matching `expr`, a page at a time (by raw id, which Milvus returns in order)."""
        rows: list[dict] = []
        last = None
        while True:
            bound = expr if last is None else f"({expr}) and raw_id > {json.dumps(last)}"
            with self.table.errors("read items"):
                page = self.client.query(
                    self.table.collection,
                    filter=bound,
                    output_fields=sorted({*output, "raw_id"}),
                    limit=PAGE,
                    consistency_level=level,
                )
            rows += page
            if len(page) < PAGE:
                return rows
            last = max(row["raw_id"] for row in page)

    def close(self) -> None:
        self.table.close()
