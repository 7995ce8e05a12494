"""The Milvus backend: items live in a Milvus collection, on a server or in a Milvus Lite file.

    index = MilvusIndex(64, "ip", "HNSW", uri="items.db", collection="bundle_2024_06")
    index.add(ids, vectors, attributes={"brand": [...], "price": [...]})    # upsert
    ids, scores = index.search(queries, 100, filter="price < 50"); index.save(folder); index.close()

A uri ending in `.db` is a Milvus Lite file (same API as a server); anything else (`http://host:19530`)
is a server. One collection per bundle version; its name keeps letters, digits and `_` (others become
`_`). It holds `id` (INT64 primary key), `vector` (FLOAT_VECTOR) and one nullable field per attribute
(str -> VARCHAR(1024), num -> DOUBLE, bool -> BOOL, str_list -> ARRAY of VARCHAR(1024), at most 256
per item), a schema fixed by the first `add`: later adds may leave attributes out (null) but not bring
new ones. Consistency is Strong, so a write is visible to the
next search or count. Scores are higher-is-better: IP and COSINE similarities as Milvus returns them,
and for L2 the negated distance, which Milvus (Lite included) reports squared, as the exact backend does.

Filters: ours are two-valued (an item without an attribute fails every comparison on it, so
`not (price > 5)` matches it), Milvus's three-valued (null stays null under `not`). Each comparison is
compiled as `(attr is not null and <comparison>)`, never null, so the two agree. On a multi-valued
attribute (an ARRAY field) `==` and `in` become `array_contains` / `array_contains_any`, any-of, as the
filter language defines them. A filtered approximate
search can come back short; a row with fewer hits than min(k, matching items) is searched again with
ef / nprobe x4 and x16, then, if at most 16,384 items match, scored exactly over their vectors.

Persistence: `save` writes only the manifest (uri, collection, index settings, attribute schema). It
points at live data, not a snapshot. The token is never written; a load reads RECINDEX_MILVUS_TOKEN.
Counts (len, matches of a filter) are cached until this index writes: writes by other clients to the
same collection are searched at once but counted only after this index's next write.

Index builds: Milvus searches unindexed rows by brute force and indexes them in the background after a
flush. `wait_for_index` flushes and waits: on a server until describe_index has no pending rows; Milvus
Lite reports its index finished at once, so there it releases and reloads the collection, which builds
missing segment indexes synchronously. On Lite, `save` and a search after 1,000 or more unindexed
writes call it first, so results come from the index a restart reads back: the same before and after.

A Lite file can be open in one process at a time. `close()` disconnects and, once no MilvusIndex in this
process uses the file, stops its local server (no finalizer is relied on); the next call reconnects.
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recindex.errors import BundleError, InvalidRequest, RecIndexError
from recindex.index.attribute_values import MAX_VALUES, NAME, value_set
from recindex.index.attributes import MAX_ATTRIBUTES, MAX_STRING_CHARS, _kind_of
from recindex.index.base import BaseIndex, Capabilities, Metric, SearchResult, top_k
from recindex.index.filters import AllOf, AnyOf, Expr, Filter, Member, Negation, milvus_expression

TOKEN_ENV = "RECINDEX_MILVUS_TOKEN"
ID, VECTOR = "id", "vector"
METRIC_NAMES = {"ip": "IP", "cosine": "COSINE", "l2": "L2"}
UPSERT_BATCH = 10_000  # rows per upsert call
ID_BATCH = 10_000  # ids per `id in [...]` query or delete
QUERY_BATCH = 1_000  # queries per search call (Milvus caps nq)
QUERY_WINDOW = 16_384  # Milvus returns at most this many rows per query (offset + limit)
LITE_SYNC_ROWS = 1_000  # Lite: a search after this many unindexed writes first builds their index
COUNT_CACHE = 256  # filter expressions whose match counts are kept
RETRY_GROWTH = (4, 16)  # ef / nprobe multipliers tried on rows that came back short
MAX_EF, MAX_NPROBE = 32_768, 65_536
# Milvus expression keywords (any case) cannot name a field; id and vector are our own fields.
RESERVED = {"and", "or", "not", "in", "like", "is", "null", "exists", "true", "false"}
BUILD_DEFAULTS = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF": {"nlist": 128}}
_lite_users: dict[str, int] = {}  # Lite file -> open MilvusIndex clients in this process
_lite_lock = threading.Lock()


def _pymilvus():
    # Imported on first use: pymilvus is optional and takes half a second to import.
    try:
        import pymilvus
    except ImportError:
        raise RecIndexError("the milvus backend needs pymilvus: pip install pymilvus milvus-lite") from None
    return pymilvus


def collection_name(name: str) -> str:
    """`name` as a Milvus collection name: other characters become `_`, a leading digit gets `_`."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest(f"a Milvus collection name must be a non-empty string, got {name!r}")
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name.strip())
    if not re.match(r"[A-Za-z_]", clean):
        clean = "_" + clean
    if len(clean) > 255:
        raise InvalidRequest(
            f"Milvus collection names are at most 255 characters; {name[:40]!r}... is {len(clean)}"
        )
    return clean


def _is_lite(uri: str) -> bool:
    return uri.endswith(".db")


class MilvusIndex(BaseIndex):
    backend = "milvus"
    default_search_params: ClassVar[dict[str, Any]] = {"ef": 64, "nprobe": 16}

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
        search_params=None,
    ):
        super().__init__(dim, metric, search_params)
        if not isinstance(index_type, str) or not re.fullmatch(r"[A-Za-z0-9_]+", index_type):
            raise InvalidRequest(f"a Milvus index type is a name like HNSW or IVF_FLAT, got {index_type!r}")
        if index_params is not None and not isinstance(index_params, dict):
            raise InvalidRequest(f"index_params must be a dict, got {type(index_params).__name__}")
        uri = str(uri)
        # A Lite file is pinned to an absolute path now, so a later chdir or a saved manifest can't move it.
        self.uri = os.path.abspath(uri) if _is_lite(uri) else uri
        self.token = token
        self.collection = collection_name(collection)
        self.index_type = index_type.upper()
        family = next((f for f in BUILD_DEFAULTS if self.index_type.startswith(f)), None)
        self.index_params = {**BUILD_DEFAULTS.get(family, {}), **(index_params or {})}
        self.schema: dict[str, str] | None = None  # attribute -> kind; None until the collection exists
        self.lite = _is_lite(self.uri)
        self._client = None
        self._counts: dict[str, int] = {}  # filter expression ("" = all) -> live matches, until a write
        self._unindexed = 0  # rows written by this process since its last index build (Lite)

    # ---- connection ------------------------------------------------------------------------------

    @property
    def client(self):
        """The MilvusClient, connected on first use (and again after `close`)."""
        if self._client is None:
            pymilvus = _pymilvus()
            if self.lite:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            hint = (
                " (a Milvus Lite file can be open in one process at a time: close it elsewhere)"
                if self.lite
                else ""
            )
            with self._errors(f"connecting to {self.uri}", hint):
                self._client = pymilvus.MilvusClient(uri=self.uri, token=self.token or "")
            if self.lite:
                with _lite_lock:
                    _lite_users[self.uri] = _lite_users.get(self.uri, 0) + 1
        return self._client

    def close(self) -> None:
        """Disconnect; for a Lite file, stop its local server once no index here uses it."""
        client, self._client = self._client, None
        if client is None:
            return
        client.close()
        if self.lite:
            with _lite_lock:
                _lite_users[self.uri] -= 1
                last = _lite_users[self.uri] == 0
                if last:
                    del _lite_users[self.uri]
            if last:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _errors(self, action: str, hint: str = ""):
        # Milvus errors arrive as MilvusException with grpc detail; the user gets one clear line.
        try:
            yield
        except _pymilvus().MilvusException as error:
            message = getattr(error, "message", None) or str(error)
            raise RecIndexError(
                f"Milvus {action} (collection {self.collection!r}) failed: {message}{hint}"
            ) from None

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
            with self._errors("count"):
                rows = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
            self._counts[expr] = int(rows[0]["count(*)"])
        return self._counts[expr]

    # ---- writes ----------------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        columns = self._columns(attributes or {}, len(ids))
        if self.schema is None:
            self._create({name: kind for name, (kind, _) in columns.items()})
        unknown = sorted(set(columns) - set(self.schema))
        if unknown:
            known = ", ".join(sorted(self.schema)) or "no attributes"
            raise InvalidRequest(
                f"attribute {unknown[0]!r} is not in this Milvus collection's schema, "
                f"which the first add fixed ({known})"
            )
        for name, (kind, values) in columns.items():
            if (self.schema[name], kind) == ("str_list", "str"):  # a single string is a set of one
                columns[name] = (self.schema[name], _convert(name, "str_list", values))
            elif kind != self.schema[name] and any(v is not None for v in values):
                raise InvalidRequest(f"attribute {name!r} holds {self.schema[name]} values, got {kind}")
        self._counts.clear()
        self._unindexed += len(ids)
        for start in range(0, len(ids), UPSERT_BATCH):
            rows = [
                {ID: int(item), VECTOR: vector}
                for item, vector in zip(
                    ids[start : start + UPSERT_BATCH].tolist(),
                    vectors[start : start + UPSERT_BATCH],
                    strict=True,
                )
            ]
            # Every attribute field is written (None where absent): an upsert replaces the whole item.
            for name in self.schema:
                values = columns[name][1][start : start + UPSERT_BATCH] if name in columns else None
                for offset, row in enumerate(rows):
                    row[name] = None if values is None else values[offset]
            with self._errors("upsert"):
                self.client.upsert(self.collection, rows)

    def _columns(self, attributes, n: int) -> dict[str, tuple[str, list]]:
        """name -> (kind, values as Milvus takes them, None where missing), checked."""
        columns = {}
        for name, values in attributes.items():
            if not isinstance(name, str) or not NAME.match(name):
                raise InvalidRequest(f"attribute name {name!r} must be an identifier of at most 64 chars")
            if name in (ID, VECTOR) or name.lower() in RESERVED:
                raise InvalidRequest(f"attribute name {name!r} is reserved in a Milvus collection; rename it")
            if isinstance(values, str | bytes) or len(values) != n:
                raise InvalidRequest(f"attribute {name!r} needs one value per item ({n})")
            kind = _kind_of(name, values)
            columns[name] = (kind, _convert(name, kind, values))
        if len(columns) > MAX_ATTRIBUTES:
            raise InvalidRequest(f"at most {MAX_ATTRIBUTES} attributes per index")
        return columns

    def _create(self, schema: dict[str, str]) -> None:
        client, pymilvus = self.client, _pymilvus()
        with self._errors("create collection"):
            if client.has_collection(self.collection):
                raise RecIndexError(
                    f"Milvus collection {self.collection!r} already exists at {self.uri}; it belongs to "
                    "another index. Load that index from its saved folder, or pass another collection name."
                )
            fields = client.create_schema(auto_id=False, enable_dynamic_field=False)
            fields.add_field(ID, pymilvus.DataType.INT64, is_primary=True)
            fields.add_field(VECTOR, pymilvus.DataType.FLOAT_VECTOR, dim=self.dim)
            types = {
                "str": pymilvus.DataType.VARCHAR,
                "num": pymilvus.DataType.DOUBLE,
                "bool": pymilvus.DataType.BOOL,
                "list": pymilvus.DataType.ARRAY,
            }
            for name, kind in schema.items():
                extra = {"max_length": MAX_STRING_CHARS} if kind == "str" else {}
                if kind == "str_list":
                    kind, extra = "list", {
                        "element_type": pymilvus.DataType.VARCHAR,
                        "max_capacity": MAX_VALUES,
                        "max_length": MAX_STRING_CHARS,
                    }
                fields.add_field(name, types[kind], nullable=True, **extra)
            index = client.prepare_index_params()
            index.add_index(
                field_name=VECTOR,
                index_type=self.index_type,
                metric_type=METRIC_NAMES[self.metric],
                params=self.index_params,
            )
            client.create_collection(
                self.collection, schema=fields, index_params=index, consistency_level="Strong"
            )
        self.schema = schema

    def _remove(self, ids: np.ndarray) -> int:
        if self.schema is None:
            return 0
        removed = 0
        self._counts.clear()
        for start in range(0, len(ids), ID_BATCH):
            batch = ids[start : start + ID_BATCH].tolist()
            with self._errors("remove"):
                present = self.client.query(
                    self.collection, filter=f"{ID} in {batch}", output_fields=[ID], limit=len(batch)
                )
                found = [row[ID] for row in present]
                if found:
                    self.client.delete(self.collection, ids=found)
            removed += len(found)
        return removed

    def wait_for_index(self, timeout_s: float = 600.0, poll_s: float = 0.5) -> None:
        """Flush, then return once every row is in an index (see the module notes on Milvus Lite)."""
        if self.schema is None:
            return
        if self.lite:
            # Lite's describe_index always says "finished"; its load builds missing segment indexes
            # synchronously. Released during the flush so its background worker skips the new segment
            # and exactly one build happens, the one whose file a restart reads back.
            with self._errors("index build"):
                self.client.release_collection(self.collection)
                try:
                    self.client.flush(self.collection)
                finally:
                    self.client.load_collection(self.collection)
            self._unindexed = 0
            return
        deadline = time.monotonic() + timeout_s
        with self._errors("flush"):
            self.client.flush(self.collection)
        while True:
            with self._errors("describe index"):
                pending = self.client.describe_index(self.collection, VECTOR).get("pending_index_rows", 0)
            if not pending:
                self._unindexed = 0
                return
            if time.monotonic() > deadline:
                raise RecIndexError(
                    f"Milvus index on {self.collection!r} still has {pending:,} rows to "
                    f"index after {timeout_s:g} s"
                )
            time.sleep(poll_s)

    # ---- search ----------------------------------------------------------------------------------

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        expr = self._expression(flt)
        if self.lite and self._unindexed >= LITE_SYNC_ROWS:
            self.wait_for_index()
        ids = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        every = np.arange(len(queries))
        self._search_rows(queries, every, k, expr, self._ann_params(params, k, 1), ids, scores)
        found = (ids >= 0).sum(axis=1)
        if (found < k).any():
            # Short rows are normal when fewer than k items match; only those below that count are retried.
            matches = self._matching(expr)
            short = np.flatnonzero(found < min(k, matches))
            if len(short):
                self._complete(queries, short, k, expr, params, matches, ids, scores)
        return SearchResult(ids, scores, None)

    def _ann_params(self, params: dict, k: int, growth: int) -> dict:
        if self.index_type.startswith("HNSW"):
            return {"ef": min(max(params["ef"], k) * growth, MAX_EF)}  # Milvus requires ef >= k
        if self.index_type.startswith("IVF"):
            nlist = int(self.index_params.get("nlist", MAX_NPROBE))
            return {"nprobe": min(params["nprobe"] * growth, nlist, MAX_NPROBE)}
        return {}  # FLAT, AUTOINDEX, ...: nothing to tune

    def _search_rows(self, queries, rows, k, expr, ann, ids, scores) -> None:
        """Search `queries[rows]`, writing each row's hits into ids/scores if it found more than before."""
        request = {"metric_type": METRIC_NAMES[self.metric], "params": ann}
        sign = -1.0 if self.metric == "l2" else 1.0  # Milvus reports L2 as a squared distance
        for start in range(0, len(rows), QUERY_BATCH):
            batch = rows[start : start + QUERY_BATCH]
            with self._errors("search"):
                hits = self.client.search(
                    self.collection,
                    data=queries[batch],
                    limit=k,
                    filter=expr,
                    anns_field=VECTOR,
                    search_params=request,
                    output_fields=[ID],
                )
            for row, row_hits in zip(batch.tolist(), hits, strict=True):
                if len(row_hits) <= (ids[row] >= 0).sum():
                    continue
                ids[row] = -1
                scores[row] = -np.inf
                ids[row, : len(row_hits)] = [hit["id"] for hit in row_hits]
                scores[row, : len(row_hits)] = [sign * hit["distance"] for hit in row_hits]

    def _complete(self, queries, short, k, expr, params, matches, ids, scores) -> None:
        """Fill rows with fewer than min(k, matches) hits: a wider search, then exact scoring."""
        needed = min(k, matches)
        if self._ann_params(params, k, 1):
            for growth in RETRY_GROWTH:
                self._search_rows(queries, short, k, expr, self._ann_params(params, k, growth), ids, scores)
                short = short[(ids[short] >= 0).sum(axis=1) < needed]
                if not len(short):
                    return
        if matches > QUERY_WINDOW:
            return  # too many matches to fetch; a short row here means the index itself is the limit
        with self._errors("query"):
            rows = self.client.query(
                self.collection, filter=expr, output_fields=[ID, VECTOR], limit=QUERY_WINDOW
            )
        if not rows:
            return
        item_ids = np.array([row[ID] for row in rows], np.int64)
        vectors = np.array([row[VECTOR] for row in rows], np.float32)
        block = queries[short] @ vectors.T
        if self.metric == "l2":
            block = 2 * block - (vectors**2).sum(axis=1)[None, :] - (queries[short] ** 2).sum(axis=1)[:, None]
        take = min(k, len(rows))
        positions, values = top_k(block.astype(np.float32), take)
        ids[short] = -1
        scores[short] = -np.inf
        ids[short, :take] = item_ids[positions]
        scores[short, :take] = values

    # ---- filters ---------------------------------------------------------------------------------

    def _expression(self, flt: Filter | None) -> str:
        """The filter as a Milvus expression (null-safe, see filters.py); "" for no filter."""
        if flt is None:
            return ""
        if flt.where is not None:
            self._check_operands(flt.where)
        lists = [name for name, kind in (self.schema or {}).items() if kind == "str_list"]
        return milvus_expression(flt, ID, lists)

    def _check_operands(self, expr: Expr) -> None:
        if isinstance(expr, Negation):
            self._check_operands(expr.part)
        elif isinstance(expr, AllOf | AnyOf):
            for part in expr.parts:
                self._check_operands(part)
        else:
            for value in expr.values if isinstance(expr, Member) else (expr.value,):
                self._check_operand(expr.attribute, value)

    def _check_operand(self, name: str, value) -> None:
        # The same errors the exact backend gives, rather than Milvus's parse errors.
        kind = (self.schema or {}).get(name)
        if kind is None:
            known = ", ".join(sorted(self.schema or {})) or "none"
            raise InvalidRequest(f"filter uses unknown attribute {name!r} (this index has: {known})")
        expected = {"str": str, "str_list": str, "bool": bool}.get(kind)
        ok = isinstance(value, expected) if expected else not isinstance(value, str | bool)
        if not ok:
            shown = {"str": "strings", "str_list": "strings", "bool": "true/false", "num": "numbers"}[kind]
            raise InvalidRequest(f"attribute {name!r} holds {shown}; compared with {value!r}")

    # ---- persistence -----------------------------------------------------------------------------

    def _save(self, folder: Path) -> dict:
        # Lite: index what is unindexed, so that a restart reads back the index searched here. A server
        # flushes and indexes on its own schedule; waiting for it is left to `wait_for_index`.
        if self.schema is not None and self.lite and self._unindexed:
            self.wait_for_index()
        elif self.schema is not None:
            with self._errors("flush"):
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
        }

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
        )
        try:
            if state.get("attributes") is not None:  # None: saved before the first add
                index._attach(state["attributes"], folder)
        except BaseException:
            index.close()
            raise
        return index

    def _attach(self, schema: dict[str, str], folder: Path) -> None:
        """Adopt the saved collection after checking it is the one the manifest describes."""
        with self._errors("load"):
            if not self.client.has_collection(self.collection):
                raise BundleError(
                    f"{folder}: Milvus collection {self.collection!r} is not at {self.uri} "
                    "(dropped, or the uri/token points elsewhere)"
                )
            fields = {f["name"]: f for f in self.client.describe_collection(self.collection)["fields"]}
            dim = int(fields.get(VECTOR, {}).get("params", {}).get("dim", -1))
            if dim != self.dim or not set(schema) <= set(fields):
                raise BundleError(
                    f"{folder}: Milvus collection {self.collection!r} does not match the "
                    f"manifest (vector dim {dim}, fields {sorted(fields)})"
                )
            self.client.load_collection(self.collection)
        self.schema = dict(schema)


def _convert(name: str, kind: str, values) -> list:
    """Values as Milvus stores them for a field of `kind`; None (and NaN for numbers) is missing."""
    if kind == "str_list":
        return [value_set(name, v) for v in values]  # an empty list is stored as null: no values
    if kind != "num":
        if kind == "str" and any(v is not None and len(v) > MAX_STRING_CHARS for v in values):
            raise InvalidRequest(f"attribute {name!r}: values are at most {MAX_STRING_CHARS} chars")
        return [None if v is None else (str(v) if kind == "str" else bool(v)) for v in values]
    numbers = np.asarray([np.nan if v is None else v for v in values], np.float64)
    if np.isinf(numbers).any():
        raise InvalidRequest(f"attribute {name!r}: values must be finite numbers")
    return [None if np.isnan(v) else v for v in numbers.tolist()]
