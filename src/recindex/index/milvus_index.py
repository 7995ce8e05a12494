"""The Milvus backend: items live in a Milvus collection, on a server or in a Milvus Lite file.

    index = MilvusIndex(64, "ip", "HNSW", uri="items.db", collection="bundle_2024_06")
    index.add(ids, vectors, attributes={"brand": [...], "price": [...]})    # upsert
    ids, scores = index.search(queries, 100, filter="price < 50"); index.save(folder); index.close()

This module is the `Index` contract over the parts in `recindex.index.milvus`: the connection (uri,
Milvus Lite or server, collection name, token), the collection's schema and vector index, and the
search with its filter expressions. One collection per bundle version. It is imported only when the
Milvus backend is used (see `index.factory`), and pymilvus only on first connection.

Persistence: `save` writes only the manifest (uri, collection, index settings, attribute schema). It
points at live data, not a snapshot. The token is never written; a load reads RECINDEX_MILVUS_TOKEN.
Counts (len, matches of a filter) are cached until this index writes: writes by other clients to the
same collection are searched once the server has applied them but counted only after this index's next
write.

Servers: what the server supports decides how missing attribute values are stored (nullable fields, or
presence fields on servers without them), and reads are Session-consistent: a write is visible to this
process's next read without Strong's per-read wait (`milvus.features` says why, and what other processes
see).

On Milvus Lite, `save` and a search after 1,000 or more unindexed writes first wait for the index build
(`wait_for_index`), so results come from the index a restart reads back: the same before and after.

Search parameters follow the index type (`milvus.search_params`): `nprobe` for the IVF types, SCANN and
the GPU IVF types, `ef` for HNSW, `search_list` for DISKANN, none for FLAT and AUTOINDEX; a parameter
the type has no use for is refused rather than ignored.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recindex.errors import BundleError
from recindex.index.base import BaseIndex, Capabilities, Metric, SearchResult
from recindex.index.filters import Filter
from recindex.index.milvus.connection import TOKEN_ENV, MilvusConnection
from recindex.index.milvus.features import CATCH_UP, READ, Layout, server_has_nullable
from recindex.index.milvus.partition_key import check_partition_key_name, check_partition_values, check_server
from recindex.index.milvus.schema import (
    ID,
    VECTOR,
    attribute_columns,
    create_collection,
    fit_columns,
    open_collection,
    upsert_batches,
    vector_field,
)
from recindex.index.milvus.search import expression, search_collection
from recindex.index.milvus.search_params import search_defaults

ID_BATCH = 10_000  # ids per `id in [...]` query or delete
LITE_SYNC_ROWS = 1_000  # Lite: a search after this many unindexed writes first builds their index
COUNT_CACHE = 256  # filter expressions whose match counts are kept


class MilvusIndex(BaseIndex):
    backend = "milvus"
    # Every parameter some index type takes; an instance offers its own type's alone (search_params).
    default_search_params: ClassVar[dict[str, Any]] = {"ef": 64, "nprobe": 16, "search_list": 64}
    waits_on_server = True  # Lite too: its engine is a server process of its own

    def __init__(
        self,
        dim: int,
        metric: Metric = "ip",
        index_type: str = "AUTOINDEX",
        *,
        uri: str | Path = "recindex_milvus.db",
        token: str | None = None,
        collection: str = "recindex_items",
        index_params: dict[str, Any] | None = None,
        partition_key: str = "",
        search_params=None,
    ):
        self.field = vector_field(dim, metric, index_type, index_params)
        self.default_search_params = search_defaults(self.field.index_type)
        super().__init__(dim, metric, search_params)
        check_partition_key_name(partition_key)
        self.partition_key = partition_key  # the attribute that is the collection's partition key
        self.connection = MilvusConnection(uri, token, collection)
        self.schema: dict[str, str] | None = None  # attribute -> kind; None until the collection exists
        self.layout: Layout | None = None  # how missing values are stored; None until known
        # Reads' consistency: Session, or what the caller sets (a fleet of replicas may read at Strong
        # to see each other's writes at once); CATCH_UP once after a load or a delete (features).
        self.read_level = READ
        self._read_level = READ
        self._level_lock = threading.Lock()
        self._counts: dict[str, int] = {}  # filter expression ("" = all) -> live matches, until a write
        self._unindexed = 0  # rows written by this process since its last index build (Lite)

    # ---- where the items live --------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return self.connection.uri

    @property
    def collection(self) -> str:
        return self.connection.collection

    @property
    def lite(self) -> bool:
        return self.connection.lite

    @property
    def index_type(self) -> str:
        return self.field.index_type

    @property
    def index_params(self) -> dict[str, Any]:
        return self.field.params

    @property
    def client(self):
        """The MilvusClient, connected on first use (and again after `close`)."""
        return self.connection.client

    def close(self) -> None:
        """Disconnect; for a Lite file, stop its local server once no index here uses it."""
        self.connection.close()

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the contract ----------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(upsert=True, remove=True, filter="native", persist=True, attributes=True)

    def __len__(self) -> int:
        return 0 if self.schema is None else self._matching("")

    def _matching(self, expr: str) -> int:
        """How many live items satisfy `expr` ("" = all); cached, as a count costs a scan in Milvus Lite."""
        if expr not in self._counts:
            if len(self._counts) >= COUNT_CACHE:
                self._counts.clear()
            with self.connection.errors("count"):
                rows = self.client.query(
                    self.collection,
                    filter=expr,
                    output_fields=["count(*)"],
                    consistency_level=self._next_read_level(),
                )
            self._counts[expr] = int(rows[0]["count(*)"])
        return self._counts[expr]

    def _next_read_level(self) -> str:
        with self._level_lock:  # searches may run in several threads: one of them takes the catch-up
            level, self._read_level = self._read_level, self.read_level
        return level if level == CATCH_UP else self.read_level

    def _server_layout(self) -> Layout:
        """The layout a new collection gets: nullable fields where the server has them."""
        with self.connection.errors("server version"):
            version = self.client.get_server_version()
        check_server(self.partition_key, str(version), self.uri)
        return Layout(nullable=server_has_nullable(str(version)))

    # ---- writes ----------------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        columns = attribute_columns(attributes or {}, len(ids))
        check_partition_values(self.partition_key, columns, len(ids))
        if self.schema is None:
            schema = {name: kind for name, (kind, _) in columns.items()}
            layout = self.layout or self._server_layout()
            create_collection(self.connection, self.field, schema, layout, self.partition_key)
            self.schema, self.layout = schema, layout
        fit_columns(columns, self.schema)
        self._counts.clear()
        self._unindexed += len(ids)
        for rows in upsert_batches(ids, vectors, columns, self.schema, self.layout):
            with self.connection.errors("upsert"):
                self.client.upsert(self.collection, rows)

    def _remove(self, ids: np.ndarray) -> int:
        if self.schema is None:
            return 0
        removed = 0
        self._counts.clear()
        for start in range(0, len(ids), ID_BATCH):
            batch = ids[start : start + ID_BATCH].tolist()
            with self.connection.errors("remove"):
                present = self.client.query(
                    self.collection,
                    filter=f"{ID} in {batch}",
                    output_fields=[ID],
                    limit=len(batch),
                    consistency_level=self._next_read_level(),
                )
                found = [row[ID] for row in present]
                if found:
                    self.client.delete(self.collection, ids=found)
                    self._read_level = CATCH_UP  # a delete carries no Session timestamp (features)
            removed += len(found)
        return removed

    def wait_for_index(
        self, timeout_s: float = 600.0, poll_s: float = 0.5, *, progress: bool = False
    ) -> None:
        """Flush, then return once Milvus has built the index over every row written before (a server's
        query node serves it some seconds later, see `milvus.connection`); `progress`: a bar of the rows
        indexed on a server."""
        if self.schema is None:
            return
        self.connection.wait_for_index(VECTOR, timeout_s, poll_s, progress=progress)
        self._unindexed = 0

    # ---- search ----------------------------------------------------------------------------------

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        expr = expression(flt, self.schema, self.layout or Layout(nullable=True))
        if self.lite and self._unindexed >= LITE_SYNC_ROWS:
            self.wait_for_index()
        level = self._next_read_level()
        return search_collection(self.connection, self.field, queries, k, expr, params, self._matching, level)

    # ---- persistence -----------------------------------------------------------------------------

    def _save(self, folder: Path) -> dict:
        # Lite: index what is unindexed, so that a restart reads back the index searched here. A server
        # flushes and indexes on its own schedule; waiting for it is left to `wait_for_index`.
        if self.schema is not None and self.lite and self._unindexed:
            self.wait_for_index()
        elif self.schema is not None:
            with self.connection.errors("flush"):
                self.client.flush(self.collection)
        uri = self.uri
        if self.lite and Path(self.uri).resolve().is_relative_to(folder.parent.resolve()):
            # A Lite file beside the index (as in a bundle) is recorded relative to the index's parent,
            # so the bundle can be moved or copied whole. `folder` is a staging sibling of the final
            # directory, so both have the same parent.
            uri = "./" + os.path.relpath(self.uri, folder.parent)
        return {
            "uri": uri,
            "collection": self.collection,
            "index_type": self.index_type,
            "index_params": self.index_params,
            "attributes": self.schema,  # None: the collection is created by the first add
            "partition_key": self.partition_key,
        }

    @classmethod
    def from_manifest(cls, path: Path, manifest: dict) -> MilvusIndex:
        # Manifests written before search parameters followed the index type list ef and nprobe for
        # every type: keep what the saved type takes.
        takes = search_defaults(str((manifest.get("state") or {}).get("index_type", "")))
        saved = {key: value for key, value in (manifest.get("search_params") or {}).items() if key in takes}
        return super().from_manifest(path, {**manifest, "search_params": saved})

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> MilvusIndex:
        state = manifest.get("state") or {}
        missing = [key for key in ("uri", "collection", "index_type") if key not in state]
        if missing:
            raise BundleError(f"{folder}: the Milvus index manifest lacks {missing}")
        uri = state["uri"]
        if isinstance(uri, str) and uri.startswith("./"):
            uri = str(folder.parent / uri[2:])
        index = cls(
            manifest["dim"],
            manifest["metric"],
            state["index_type"],
            uri=uri,
            token=os.environ.get(TOKEN_ENV),
            collection=state["collection"],
            index_params=state.get("index_params"),
            partition_key=state.get("partition_key", ""),
        )
        try:
            if state.get("attributes") is not None:  # None: saved before the first add
                layout = open_collection(index.connection, index.dim, state["attributes"], folder)
                index.layout = layout or Layout(nullable=True)  # no attribute fields: either serves
                index.schema = dict(state["attributes"])
                index._read_level = CATCH_UP
        except BaseException:
            index.close()
            raise
        return index
