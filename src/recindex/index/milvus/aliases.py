"""A fleet's live version in Milvus: one collection per bundle version, and an alias naming the live one.

    fleet = FleetVersions(connection, "shop")            # alias "shop", its table "shop__versions"
    fleet.record("recindex_b2", bundle_id="b2", bundle="/bundles/b2", index="milvus")
    fleet.point("recindex_b2")                           # create_alias, or alter_alias if it exists
    fleet.live()                                         # -> "recindex_b2" (None: no alias yet)
    fleet.version_of("recindex_b2")                      # -> {"bundle_id", "bundle", "index", ...}

The alias is Milvus's own switch (`alter_alias` moves it in one metadata operation on the root
coordinator, which every client reads the same way), so the fleet needs no protocol of its own to agree
on which version is live. The versions table says what each collection is: the bundle id whose item
tower filled it (its version tag), and the bundle path and index name a replica loads to serve it.
Replicas search the collection their encoder belongs to, never the alias, so an answer cannot pair one
bundle's query encoder with another bundle's items.

Consistency: `describe_alias` is a metadata call (always current); the versions table is read at Strong,
rarely (a replica's start and its switches), so a record written just before the alias moved is seen.
"""

from __future__ import annotations

import json
import time

from recindex.errors import RecIndexError
from recindex.index.milvus.connection import MilvusConnection, collection_name, load_pymilvus

TEXT = 65_535  # the longest VARCHAR Milvus accepts
KEY_CHARS = 255
PLACEHOLDER = "_placeholder"  # Milvus 2.3 needs a vector field (indexed, to load); these tables search none
PLACEHOLDER_VECTOR = [0.0, 0.0]
CREATOR_WAIT_S = 30.0  # how long a replica waits for the one creating a shared table to index it


def create_table(connection: MilvusConnection, key: str, fields: dict[str, str]) -> None:
    """A table of records keyed by the VARCHAR `key`, with `fields` (name -> "text", "int", "bool",
    "float"), created and loaded if it does not exist yet (several replicas may race to create it)."""
    client, pymilvus = connection.client, load_pymilvus()
    name = connection.collection
    with connection.errors("create table"):
        if not client.has_collection(name):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(key, pymilvus.DataType.VARCHAR, is_primary=True, max_length=KEY_CHARS)
            types = {
                "text": pymilvus.DataType.VARCHAR,
                "int": pymilvus.DataType.INT64,
                "bool": pymilvus.DataType.BOOL,
                "float": pymilvus.DataType.DOUBLE,
            }
            for field, kind in fields.items():
                extra = {"max_length": TEXT} if kind == "text" else {}
                schema.add_field(field, types[kind], **extra)
            schema.add_field(PLACEHOLDER, pymilvus.DataType.FLOAT_VECTOR, dim=len(PLACEHOLDER_VECTOR))
            index = client.prepare_index_params()
            index.add_index(field_name=PLACEHOLDER, index_type="FLAT", metric_type="L2")
            try:
                client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
            except load_pymilvus().MilvusException:
                if not client.has_collection(name):  # not a replica that created it first
                    raise
        load_once_indexed(client, name)


def load_once_indexed(client, name: str, wait_s: float = CREATOR_WAIT_S) -> None:
    """Load `name`, waiting up to `wait_s` for its index: a replica that found the table created by
    another one may get there between that one's create and its create_index (Milvus's create with
    index params is three calls), and Milvus refuses to load a collection without an index."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.load_collection(name)
            return
        except load_pymilvus().MilvusException:
            if client.list_indexes(name) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


class FleetVersions:
    """The fleet's alias and its table of bundle versions (one row per collection)."""

    def __init__(self, connection: MilvusConnection, fleet: str):
        self.alias = collection_name(fleet)
        self.table = MilvusConnection(connection.uri, connection.token, f"{self.alias}__versions")
        self._ready = False

    @property
    def client(self):
        return self.table.client

    def _open(self) -> None:
        if not self._ready:
            fields = {"bundle_id": "text", "bundle": "text", "index_name": "text", "recorded_ms": "int"}
            create_table(self.table, "collection", fields)
            self._ready = True

    def _aliases(self) -> list[str]:
        # every alias of the database (a look-up of a missing alias would fail, and log an error)
        listed = self.client.list_aliases("")
        return list(listed["aliases"] if isinstance(listed, dict) else listed)

    def live(self) -> str | None:
        """The collection the alias names now; None before the fleet's first version."""
        with self.table.errors("describe alias"):
            if self.alias not in self._aliases():
                return None
            return str(self.client.describe_alias(self.alias)["collection_name"])

    def point(self, collection: str) -> None:
        """Make the alias name `collection` (the fleet's switch)."""
        with self.table.errors("alias"):
            if self.alias in self._aliases():
                self.client.alter_alias(collection, self.alias)
            else:
                self.client.create_alias(collection, self.alias)

    def claim(self, collection: str) -> str:
        """Create the alias on `collection` unless a replica did already; the collection it names."""
        with self.table.errors("alias"):
            if self.alias not in self._aliases():
                try:
                    self.client.create_alias(collection, self.alias)
                except load_pymilvus().MilvusException:
                    pass  # another replica created it between the check and here: its choice stands
        live = self.live()
        if live is None:
            raise RecIndexError(f"Milvus alias {self.alias!r} could not be created on {collection!r}")
        return live

    def record(self, collection: str, *, bundle_id: str, bundle: str, index: str) -> None:
        """Say which bundle (and index in it) serves `collection`, before the alias may name it."""
        self._open()
        row = {
            "collection": collection,
            "bundle_id": bundle_id,
            "bundle": bundle,
            "index_name": index,
            "recorded_ms": int(time.time() * 1000),
            PLACEHOLDER: PLACEHOLDER_VECTOR,
        }
        with self.table.errors("record version"):
            self.client.upsert(self.table.collection, [row])

    def version_of(self, collection: str) -> dict:
        """The bundle that serves `collection`: {"bundle_id", "bundle", "index"}."""
        self._open()
        with self.table.errors("read version"):
            rows = self.client.query(
                self.table.collection,
                filter=f"collection == {json.dumps(collection)}",
                output_fields=["bundle_id", "bundle", "index_name"],
                consistency_level="Strong",
            )
        if not rows:
            raise RecIndexError(
                f"Milvus alias {self.alias!r} names collection {collection!r}, which no bundle version of "
                f"this fleet recorded (table {self.table.collection!r}); promote a bundle through the service"
            )
        row = rows[0]
        return {"bundle_id": row["bundle_id"], "bundle": row["bundle"], "index": row["index_name"]}

    def close(self) -> None:
        self.table.close()
