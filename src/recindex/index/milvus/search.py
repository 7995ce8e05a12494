"""Searching a Milvus index's collection: filters as Milvus expressions, the search calls, and results
in the contract's form.

Scores are higher-is-better: IP and COSINE similarities as Milvus returns them, and for L2 the negated
distance, which Milvus (Lite included) reports squared, as the exact backend does.

Filters: ours are two-valued (an item without an attribute fails every comparison on it, so
`not (price > 5)` matches it), Milvus's three-valued (null stays null under `not`). Each comparison is
compiled as `(attr is not null and <comparison>)`, never null, so the two agree (the compiler is
`filters.milvus_expression`); without nullable fields the presence test is the attribute's presence
field instead (`milvus.features.Layout`). On a multi-valued attribute (an ARRAY field) `==` and `in` become
`array_contains` / `array_contains_any`, any-of, as the filter language defines them. Operands are
checked against the collection's attribute kinds here, so a bad filter gets the exact backend's error
rather than Milvus's parse error.

A filtered approximate search can come back short; a row with fewer hits than min(k, matching items)
is searched again with the index type's search parameter (nprobe, ef or search_list, see
`milvus.search_params`) x4 and x16 within Milvus's range, then, if at most 16,384 items match, scored
exactly over their vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.base import SearchResult, top_k
from recindex.index.filters import AllOf, AnyOf, Expr, Filter, Member, Negation, milvus_expression
from recindex.index.milvus.connection import MilvusConnection
from recindex.index.milvus.features import READ, Layout
from recindex.index.milvus.schema import ID, METRIC_NAMES, VECTOR, VectorField
from recindex.index.milvus.search_params import ann_params as type_params

QUERY_BATCH = 1_000  # queries per search call (Milvus caps nq)
QUERY_WINDOW = 16_384  # Milvus returns at most this many rows per query (offset + limit)
RETRY_GROWTH = (4, 16)  # search parameter multipliers tried on rows that came back short


def expression(flt: Filter | None, schema: dict[str, str] | None, layout: Layout) -> str:
    """The filter as a Milvus expression (missing-value-safe, see filters.py); "" for no filter."""
    if flt is None:
        return ""
    if flt.where is not None:
        _check_operands(flt.where, schema or {})
    lists = {name for name, kind in (schema or {}).items() if kind == "str_list"}
    return milvus_expression(flt, ID, lists, lambda name: layout.present(name, name in lists))


def _check_operands(expr: Expr, schema: dict[str, str]) -> None:
    if isinstance(expr, Negation):
        _check_operands(expr.part, schema)
    elif isinstance(expr, AllOf | AnyOf):
        for part in expr.parts:
            _check_operands(part, schema)
    else:
        for value in expr.values if isinstance(expr, Member) else (expr.value,):
            _check_operand(expr.attribute, value, schema)


def _check_operand(name: str, value, schema: dict[str, str]) -> None:
    # The same errors the exact backend gives, rather than Milvus's parse errors.
    kind = schema.get(name)
    if kind is None:
        known = ", ".join(sorted(schema)) or "none"
        raise InvalidRequest(f"filter uses unknown attribute {name!r} (this index has: {known})")
    expected = {"str": str, "str_list": str, "bool": bool}.get(kind)
    ok = isinstance(value, expected) if expected else not isinstance(value, str | bool)
    if not ok:
        shown = {"str": "strings", "str_list": "strings", "bool": "true/false", "num": "numbers"}[kind]
        raise InvalidRequest(f"attribute {name!r} holds {shown}; compared with {value!r}")


def ann_params(field: VectorField, params: dict, k: int, growth: int) -> dict:
    """The index type's search parameters, widened `growth` times; {} where it has none to tune."""
    return type_params(field.index_type, field.params, params, k, growth)


def search_collection(
    connection: MilvusConnection,
    field: VectorField,
    queries: np.ndarray,
    k: int,
    expr: str,
    params: dict,
    matching: Callable[[str], int],
    level: str,
) -> SearchResult:
    """Top-k items per query among those matching `expr`, read at consistency `level`;
    `matching(expr)` counts them."""
    ids = np.full((len(queries), k), -1, np.int64)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    every = np.arange(len(queries))
    first = ann_params(field, params, k, 1)
    _search_rows(connection, field, queries, every, k, expr, first, ids, scores, level)
    found = (ids >= 0).sum(axis=1)
    if (found < k).any():
        # Short rows are normal when fewer than k items match; only those below that count are retried.
        matches = matching(expr)
        short = np.flatnonzero(found < min(k, matches))
        if len(short):
            _complete(connection, field, queries, short, k, expr, params, matches, ids, scores)
    return SearchResult(ids, scores, None)


def _search_rows(connection, field, queries, rows, k, expr, ann, ids, scores, level=READ) -> None:
    """Search `queries[rows]`, writing each row's hits into ids/scores if it found more than before."""
    request = {"metric_type": METRIC_NAMES[field.metric], "params": ann}
    sign = -1.0 if field.metric == "l2" else 1.0  # Milvus reports L2 as a squared distance
    for start in range(0, len(rows), QUERY_BATCH):
        batch = rows[start : start + QUERY_BATCH]
        with connection.errors("search"):
            hits = connection.client.search(
                connection.collection,
                data=queries[batch],
                limit=k,
                filter=expr,
                anns_field=VECTOR,
                search_params=request,
                output_fields=[ID],
                consistency_level=level,
            )
        for row, row_hits in zip(batch.tolist(), hits, strict=True):
            if len(row_hits) <= (ids[row] >= 0).sum():
                continue
            ids[row] = -1
            scores[row] = -np.inf
            ids[row, : len(row_hits)] = [hit["id"] for hit in row_hits]
            scores[row, : len(row_hits)] = [sign * hit["distance"] for hit in row_hits]


def _complete(connection, field, queries, short, k, expr, params, matches, ids, scores) -> None:
    """Fill rows with fewer than min(k, matches) hits: a wider search, then exact scoring."""
    needed = min(k, matches)
    if ann_params(field, params, k, 1):
        for growth in RETRY_GROWTH:
            wider = ann_params(field, params, k, growth)
            _search_rows(connection, field, queries, short, k, expr, wider, ids, scores)
            short = short[(ids[short] >= 0).sum(axis=1) < needed]
            if not len(short):
                return
    if matches > QUERY_WINDOW:
        return  # too many matches to fetch; a short row here means the index itself is the limit
    with connection.errors("query"):
        rows = connection.client.query(
            connection.collection,
            filter=expr,
            output_fields=[ID, VECTOR],
            limit=QUERY_WINDOW,
            consistency_level=READ,
        )
    if not rows:
        return
    item_ids = np.array([row[ID] for row in rows], np.int64)
    vectors = np.array([row[VECTOR] for row in rows], np.float32)
    block = queries[short] @ vectors.T
    if field.metric == "l2":
        block = 2 * block - (vectors**2).sum(axis=1)[None, :] - (queries[short] ** 2).sum(axis=1)[:, None]
    take = min(k, len(rows))
    positions, values = top_k(block.astype(np.float32), take)
    ids[short] = -1
    scores[short] = -np.inf
    ids[short, :take] = item_ids[positions]
    scores[short, :take] = values
