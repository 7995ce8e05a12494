"""Answering several recommend queries at once, each exactly as it would be answered alone.

    answers = answer_queries(version, [RecommendQuery(user_id="42", k=100), ...])

`Recommender` answers one query through this, and the request batcher (serve.batching) many: the
queries share one read of the version, one query-tower pass and, where it gives each query its own
answer to the bit, one index search per group of like queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from recindex.errors import InvalidRequest, RecIndexError
from recindex.index.base import BaseIndex
from recindex.index.faiss_index import FaissIndex
from recindex.pipelines.recommend import find_user
from recindex.serve.encoding import encode_histories

MAX_RECENT_ITEMS = 1_000
USER_CACHE_LIMIT = 200_000  # query vectors of known users kept per version (about 50 MB at d=64)


@dataclass(frozen=True)
class Recommendation:
    ids: np.ndarray  # internal item indices, best first
    scores: np.ndarray
    bundle_id: str
    fallback: str | None  # why the popularity list answered, or None
    query: np.ndarray | None = None  # (1, d) the query vector, when the index answered
    seen: np.ndarray | None = None  # the history that was excluded


@dataclass(frozen=True)
class RecommendQuery:
    """One recommend request's question: exactly one of user_id, recent_items or vector."""

    user_id: str | None = None
    recent_items: list | None = None
    vector: list[float] | None = None
    k: int = 10
    filter: dict | None = None
    exclude_seen: bool = True


@dataclass
class _Resolved:
    """A query made ready to search: its vector (or the history still to encode) and what to leave out."""

    row: int
    k: int
    filter: dict | None
    seen: np.ndarray
    vector: np.ndarray | None  # (1, d), None until encoded
    history: np.ndarray | None = None
    user: int | None = None


def answer_queries(version, queries: list[RecommendQuery]) -> list[Recommendation | Exception]:
    """One answer per query from `version` (a ServingVersion), in order: the one the query gets alone,
    or the exception it raises alone (so one query's error is never its neighbours').

    The queries share one query-tower pass (those that need it; see encoding.encode_histories) and
    one index search per group of queries whose searches are the same call but for the query vector:
    the same k, filter and history length (an index fetches k + history items and drops the history,
    and approximate indexes do not promise that a longer fetch starts with the shorter one), where
    that search gives each query its own answer to the bit (`searches_rows_alone`). A group whose
    search fails is searched again query by query, so that one query's failure is its own.
    """
    answers: list = [None] * len(queries)
    ready: list[_Resolved] = []
    for row, query in enumerate(queries):
        try:
            resolved = _resolve(version, row, query)
        except Exception as error:  # this query's own error, not its neighbours'
            answers[row] = error
            continue
        if isinstance(resolved, Recommendation):
            answers[row] = resolved
        else:
            ready.append(resolved)
    for users in (True, False):  # known users (their features join in) and recent items
        todo = [r for r in ready if r.vector is None and (r.user is not None) == users]
        if todo:
            vectors = encode_histories(
                version.bundle, [r.history for r in todo], [r.user for r in todo] if users else None
            )
            for r, vector in zip(todo, vectors, strict=True):
                r.vector = vector[None, :]
                if users and len(version.user_vectors) < USER_CACHE_LIMIT:
                    version.user_vectors[r.user] = r.vector
    groups: dict[tuple, list[_Resolved]] = {}
    for r in ready:
        key = (r.k, len(r.seen), r.vector.shape[1], json.dumps(r.filter, sort_keys=True))
        groups.setdefault(key, []).append(r)
    for group in groups.values():
        for r, answer in _search_group(version, group):
            answers[r.row] = answer
    return answers


def _resolve(version, row: int, query: RecommendQuery) -> _Resolved | Recommendation:
    given = sum(x is not None for x in (query.user_id, query.recent_items, query.vector))
    if given != 1:
        raise InvalidRequest("give exactly one of user_id, recent_items or vector")
    k, flt = query.k, query.filter
    if query.vector is not None:
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused just below
            vector = np.asarray(query.vector, np.float32)[None, :]
        if not np.isfinite(vector).all():
            raise InvalidRequest("vector must hold finite numbers within float32's range")
        return _Resolved(row, k, flt, np.zeros(0, np.int64), vector)
    if query.user_id is not None:
        try:
            user = find_user(version.bundle.data, str(query.user_id))
        except RecIndexError:  # an unknown user is a normal event for a service, not an error
            return popular_answer(version, k, flt, np.zeros(0, np.int64), "unknown user")
        history = version.bundle.data.sequence(user)
        vector = version.user_vectors.get(user)
    else:
        n_catalogue = len(version.bundle.data.item_ids)
        history = _item_indices(version.item_lookup, query.recent_items, n_catalogue)
        user, vector = None, None
    seen = history if query.exclude_seen else np.zeros(0, np.int64)
    return _Resolved(row, k, flt, seen, vector, history, user)


def _search_group(version, group: list[_Resolved]):
    """(resolved, answer) for each query of a group: from one index search where that search gives
    each query the answer it gets alone (`searches_rows_alone`), else query by query."""
    if len(group) > 1 and not searches_rows_alone(version.index, group[0].filter):
        for r in group:
            yield from _search_group(version, [r])
        return
    first = group[0]
    vectors = first.vector if len(group) == 1 else np.concatenate([r.vector for r in group])
    exclude = [r.seen for r in group] if len(first.seen) else None  # the index masks the history
    try:
        result = version.index.search(vectors, first.k, filter=first.filter, exclude=exclude)
    except Exception as error:
        if len(group) > 1:  # whose fault? each query alone says
            for r in group:
                yield from _search_group(version, [r])
            return
        if isinstance(error, InvalidRequest):
            yield first, error
        else:  # the index failed: answer from popularity rather than not at all
            yield first, _fallback(version, first, "index error")
        return
    for row, r in enumerate(group):
        ids, scores = result.ids[row], result.scores[row]
        keep = ids >= 0
        if keep.all():
            yield r, Recommendation(ids, scores, version.bundle_id, None, r.vector, r.seen)
        elif keep.any():
            yield r, Recommendation(ids[keep], scores[keep], version.bundle_id, None, r.vector, r.seen)
        else:
            yield r, _fallback(version, r, "no results after filtering")


def _fallback(version, r: _Resolved, reason: str) -> Recommendation | Exception:
    try:
        return popular_answer(version, r.k, r.filter, r.seen, reason)
    except Exception as error:
        return error


def popular_answer(version, k, filter, seen, reason) -> Recommendation:  # noqa: A002
    k = min(k, len(version.popular))
    result = version.popular.search(
        np.ones((1, 1), np.float32), k, filter=filter, exclude=[seen] if len(seen) else None
    )
    keep = result.ids[0] >= 0
    return Recommendation(result.ids[0][keep], result.scores[0][keep], version.bundle_id, reason)


def searches_rows_alone(index: BaseIndex, flt) -> bool:
    """Whether one search of several queries gives each query exactly (to the bit) the answer it gets
    alone. FAISS's HNSW walks the graph for each query on its own, with the same distance kernel
    whatever the batch. Scans that score by matrix products (exact search, FAISS's flat and IVF coarse
    steps, the learned indexes) round their last bits by the batch's shape, which can reorder near
    ties, so their queries are searched one by one; and so are filtered or tombstoned HNSW searches,
    which turn into such scans when few items are left."""
    return isinstance(index, FaissIndex) and index.layers.is_hnsw and flt is None and not index.tombstones


def _item_indices(lookup: dict[str, int], raw_items: list, n_catalogue: int) -> np.ndarray:
    if not isinstance(raw_items, list) or not raw_items:
        raise InvalidRequest("recent_items must be a non-empty list of item ids")
    if len(raw_items) > MAX_RECENT_ITEMS:
        raise InvalidRequest(f"recent_items holds at most {MAX_RECENT_ITEMS:,} items")
    unknown = [item for item in raw_items if str(item) not in lookup]
    if unknown:
        raise InvalidRequest(f"unknown items: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    indices = np.asarray([lookup[str(item)] for item in raw_items], np.int64)
    if (indices >= n_catalogue).any():
        raise InvalidRequest(
            "recent_items may name only items of the bundle's catalogue, not items added since"
        )
    return indices
