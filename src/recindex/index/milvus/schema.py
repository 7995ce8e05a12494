"""The layout of a Milvus index's collection: its fields, its vector index, and attribute values as
Milvus stores them.

A collection holds `id` (INT64 primary key), `vector` (FLOAT_VECTOR) and one field per attribute
(str -> VARCHAR(1024), num -> DOUBLE, bool -> BOOL, str_list -> ARRAY of VARCHAR(1024), at most 256 per
item), a schema fixed by the first `add`: later adds may leave attributes out (missing) but not bring
new ones, and an upsert writes every attribute field (missing where absent) because it replaces the
whole item. A missing value is null where the server has nullable fields, and otherwise a placeholder
with `<attribute>__present` false (see `milvus.features`, which also says which consistency level each
operation uses and why).

The vector index is a Milvus index type (HNSW, IVF_FLAT, FLAT, AUTOINDEX, ...) with its build
parameters; HNSW types and the types searched with nprobe (IVF types, SCANN, GPU IVF types: all need an
nlist) start from the defaults in BUILD_DEFAULTS. Attribute names that Milvus
expressions reserve, or that name our own fields, are refused with a request to rename.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recindex.errors import BundleError, InvalidRequest, RecIndexError
from recindex.index.attribute_values import MAX_VALUES, NAME, value_set
from recindex.index.attributes import MAX_ATTRIBUTES, MAX_STRING_CHARS, _kind_of
from recindex.index.milvus.connection import MilvusConnection, load_pymilvus
from recindex.index.milvus.features import PRESENT_SUFFIX, READ, Layout, layout_of_fields
from recindex.index.milvus.partition_key import field_options
from recindex.index.milvus.search_params import search_parameter

ID, VECTOR = "id", "vector"
METRIC_NAMES = {"ip": "IP", "cosine": "COSINE", "l2": "L2"}
UPSERT_BATCH = 10_000  # rows per upsert call
# Milvus expression keywords (any case) cannot name a field; id and vector are our own fields.
RESERVED = {"and", "or", "not", "in", "like", "is", "null", "exists", "true", "false"}
# build defaults by the search parameter the type takes: HNSW's graph, the lists nprobe picks from
BUILD_DEFAULTS = {"ef": {"M": 16, "efConstruction": 200}, "nprobe": {"nlist": 128}}
# What a field without nullable support holds where the item has no value (its presence field says so).
PLACEHOLDERS = {"str": "", "num": 0.0, "bool": False, "str_list": []}

Columns = dict[str, tuple[str, list]]  # attribute -> (kind, values as Milvus takes them, None if missing)


@dataclass(frozen=True)
class VectorField:
    """How the vector field is stored and indexed: dimension, metric, Milvus index type, build params."""

    dim: int
    metric: str
    index_type: str
    params: dict[str, Any]


def vector_field(dim: int, metric: str, index_type: str, index_params: dict[str, Any] | None) -> VectorField:
    """The vector field for a checked index type, its build parameters over the type's defaults."""
    if not isinstance(index_type, str) or not re.fullmatch(r"[A-Za-z0-9_]+", index_type):
        raise InvalidRequest(f"a Milvus index type is a name like HNSW or IVF_FLAT, got {index_type!r}")
    if index_params is not None and not isinstance(index_params, dict):
        raise InvalidRequest(f"index_params must be a dict, got {type(index_params).__name__}")
    index_type = index_type.upper()
    defaults = BUILD_DEFAULTS.get(search_parameter(index_type), {})
    return VectorField(dim, metric, index_type, {**defaults, **(index_params or {})})


def attribute_columns(attributes, n: int) -> Columns:
    """name -> (kind, values as Milvus takes them, None where missing), checked."""
    columns = {}
    for name, values in attributes.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidRequest(f"attribute name {name!r} must be an identifier of at most 64 chars")
        if name in (ID, VECTOR) or name.lower() in RESERVED or name.endswith(PRESENT_SUFFIX):
            raise InvalidRequest(f"attribute name {name!r} is reserved in a Milvus collection; rename it")
        if isinstance(values, str | bytes) or len(values) != n:
            raise InvalidRequest(f"attribute {name!r} needs one value per item ({n})")
        kind = _kind_of(name, values)
        columns[name] = (kind, convert(name, kind, values))
    if len(columns) > MAX_ATTRIBUTES:
        raise InvalidRequest(f"at most {MAX_ATTRIBUTES} attributes per index")
    return columns


def fit_columns(columns: Columns, schema: dict[str, str]) -> None:
    """Check `columns` against the collection's schema, in place: a single string joins a multi-valued
    attribute as a set of one; new attributes and other kinds of values are refused."""
    unknown = sorted(set(columns) - set(schema))
    if unknown:
        known = ", ".join(sorted(schema)) or "no attributes"
        raise InvalidRequest(
            f"attribute {unknown[0]!r} is not in this Milvus collection's schema, "
            f"which the first add fixed ({known})"
        )
    for name, (kind, values) in columns.items():
        if (schema[name], kind) == ("str_list", "str"):  # a single string is a set of one
            columns[name] = (schema[name], convert(name, "str_list", values))
        elif kind != schema[name] and any(v is not None for v in values):
            raise InvalidRequest(f"attribute {name!r} holds {schema[name]} values, got {kind}")


def convert(name: str, kind: str, values) -> list:
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


def upsert_batches(
    ids: np.ndarray, vectors: np.ndarray, columns: Columns, schema: dict[str, str], layout: Layout
) -> Iterator[list[dict]]:
    """The rows of one upsert call at a time, every attribute field of the schema in each row (and,
    without nullable fields, each scalar attribute's presence field)."""
    for start in range(0, len(ids), UPSERT_BATCH):
        rows = [
            {ID: int(item), VECTOR: vector}
            for item, vector in zip(
                ids[start : start + UPSERT_BATCH].tolist(),
                vectors[start : start + UPSERT_BATCH],
                strict=True,
            )
        ]
        # Every attribute field is written (missing where absent): an upsert replaces the whole item.
        for name, kind in schema.items():
            values = columns[name][1][start : start + UPSERT_BATCH] if name in columns else None
            for offset, row in enumerate(rows):
                value = None if values is None else values[offset]
                if layout.nullable:
                    row[name] = value
                    continue
                row[name] = PLACEHOLDERS[kind] if value is None else value
                if kind != "str_list":  # an empty list says it has no values by itself
                    row[name + PRESENT_SUFFIX] = value is not None
        yield rows


def create_collection(
    connection: MilvusConnection,
    field: VectorField,
    schema: dict[str, str],
    layout: Layout,
    partition_key: str = "",
) -> None:
    """Create the collection with `schema`'s attribute fields (in `layout`) and the vector index; refuse
    to reuse one."""
    client, pymilvus = connection.client, load_pymilvus()
    with connection.errors("create collection"):
        if client.has_collection(connection.collection):
            raise RecIndexError(
                f"Milvus collection {connection.collection!r} already exists at {connection.uri}; it "
                "belongs to another index. Load that index from its saved folder, or pass another "
                "collection name."
            )
        fields = client.create_schema(auto_id=False, enable_dynamic_field=False)
        fields.add_field(ID, pymilvus.DataType.INT64, is_primary=True)
        fields.add_field(VECTOR, pymilvus.DataType.FLOAT_VECTOR, dim=field.dim)
        types = {
            "str": pymilvus.DataType.VARCHAR,
            "num": pymilvus.DataType.DOUBLE,
            "bool": pymilvus.DataType.BOOL,
            "list": pymilvus.DataType.ARRAY,
        }
        for name, kind in schema.items():
            extra = {"max_length": MAX_STRING_CHARS} if kind == "str" else {}
            if kind == "str_list":
                kind, extra = (
                    "list",
                    {
                        "element_type": pymilvus.DataType.VARCHAR,
                        "max_capacity": MAX_VALUES,
                        "max_length": MAX_STRING_CHARS,
                    },
                )
            extra.update(field_options(name, partition_key))
            if layout.nullable:  # a partition key is never null: every item has a value
                fields.add_field(name, types[kind], nullable=name != partition_key, **extra)
                continue
            fields.add_field(name, types[kind], **extra)
            if kind != "list":
                fields.add_field(name + PRESENT_SUFFIX, pymilvus.DataType.BOOL)
        index = client.prepare_index_params()
        index.add_index(
            field_name=VECTOR,
            index_type=field.index_type,
            metric_type=METRIC_NAMES[field.metric],
            params=field.params,
        )
        client.create_collection(
            connection.collection, schema=fields, index_params=index, consistency_level=READ
        )


def open_collection(
    connection: MilvusConnection, dim: int, schema: dict[str, str], folder: Path
) -> Layout | None:
    """Load a saved index's collection after checking it is the one its manifest (in `folder`)
    describes; its layout, read from its fields (None: it has no attribute fields)."""
    with connection.errors("load"):
        client = connection.client
        if not client.has_collection(connection.collection):
            raise BundleError(
                f"{folder}: Milvus collection {connection.collection!r} is not at {connection.uri} "
                "(dropped, or the uri/token points elsewhere)"
            )
        fields = {f["name"]: f for f in client.describe_collection(connection.collection)["fields"]}
        found = int(fields.get(VECTOR, {}).get("params", {}).get("dim", -1))
        if found != dim or not set(schema) <= set(fields):
            raise BundleError(
                f"{folder}: Milvus collection {connection.collection!r} does not match the "
                f"manifest (vector dim {found}, fields {sorted(fields)})"
            )
        client.load_collection(connection.collection)
    return layout_of_fields(list(fields.values()), schema)
