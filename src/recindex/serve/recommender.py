"""Answering retrieval requests from one bundle version at a time, with a popularity fallback.

A `ServingVersion` ties a bundle's query encoder to the index built from that same bundle; the
`Recommender` holds the active one behind a single reference. Each request reads that reference once
and uses nothing else, so a request is answered wholly by one version even while another is being
promoted (replacing a reference is atomic in Python), and an encoder never meets another version's
index.

Fallback: an unknown user, a filter that leaves the index's answer empty, or an index that fails
are answered from the most popular items that pass the same filter, and the answer says so. The
popularity list is itself a one-dimensional exact index (score = training popularity) carrying the
items' attributes, so it applies the very same filter language.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from recindex.bundle import Bundle
from recindex.errors import InvalidRequest, RecIndexError
from recindex.index.base import BaseIndex
from recindex.index.exact_index import ExactIndex
from recindex.pipelines.indexes import item_attributes
from recindex.pipelines.recommend import describe_item
from recindex.serve.answers import (
    Recommendation,
    RecommendQuery,
    answer_queries,
    popular_answer,
)
from recindex.serve.encoding import encode_history, set_query_device

__all__ = [
    "RecommendQuery",
    "Recommendation",
    "Recommender",
    "ServingVersion",
    "encode_history",
    "set_query_device",
]

MAX_TRIGGER_ITEMS = 100


@dataclass(frozen=True)
class ServingVersion:
    bundle: Bundle
    index: BaseIndex  # built from this bundle (see pipelines.indexes.load_bundle_index)
    popular: BaseIndex  # 1-d exact: each item's popularity, with the same attributes
    item_lookup: dict[str, int]  # raw item id -> internal index (catalogue, then items added since)
    token_lookup: dict[str, int] = field(default_factory=dict)  # attribute token name -> token index
    new_items: list[str] = field(default_factory=list)  # raw ids of items added since the bundle
    source: dict = field(default_factory=dict)  # where it was loaded from: {"bundle": path, "index": name}
    # Vectors and descriptions of items upserted since the bundle, by internal index (for item-to-item
    # queries and display; the rest are the bundle's).
    changed_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    changed_descriptions: dict[int, str] = field(default_factory=dict)
    # A known user's query vector depends only on the bundle (its model and its histories), so it is
    # computed once per version and reused: the encoder is the costliest step of a warm request.
    user_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    # Items whose internal index was not given in order but chosen elsewhere (a fleet's hashed ids, see
    # serve.fleet), by internal index; `resolve_names` names those this process has not seen yet.
    named_items: dict[int, str] = field(default_factory=dict)
    resolve_names: Callable[[list[int]], dict[int, str]] | None = None

    def internal_id(self, raw: str, create: bool = False) -> int | None:
        """The internal index of a raw item id; with `create`, a new one for an unknown id."""
        index = self.item_lookup.get(str(raw))
        if index is None and create:
            index = self.item_lookup[str(raw)] = len(self.bundle.data.item_ids) + len(self.new_items)
            self.new_items.append(str(raw))
        return index

    def raw_item_id(self, index: int) -> str:
        catalogue = self.bundle.data.item_ids
        if index < len(catalogue):
            return str(catalogue[index])
        if index - len(catalogue) < len(self.new_items) and index not in self.named_items:
            return self.new_items[index - len(catalogue)]
        if index not in self.named_items and self.resolve_names is not None:
            self.named_items.update(self.resolve_names([index]))
        if index not in self.named_items:
            raise RecIndexError(f"item {index} of bundle {self.bundle_id} has no raw id on record")
        return self.named_items[index]

    def raw_item_ids(self, indices: np.ndarray) -> list[str]:
        catalogue = self.bundle.data.item_ids
        if len(indices) and int(indices.max()) < len(catalogue):  # the usual case, in one step
            return list(map(str, catalogue[indices].tolist()))
        unnamed = [int(i) for i in indices if i >= len(catalogue) + len(self.new_items)]
        unnamed = [i for i in unnamed if i not in self.named_items]
        if unnamed and self.resolve_names is not None:  # one look-up for all of them
            self.named_items.update(self.resolve_names(unnamed))
        return [self.raw_item_id(int(i)) for i in indices]

    def item_vector(self, index: int) -> np.ndarray:
        changed = self.changed_vectors.get(index)
        return changed if changed is not None else self.bundle.item_embeddings[index]

    def describe(self, index: int) -> str:
        """A title or attribute names for display ("" where nothing is known)."""
        changed = self.changed_descriptions.get(index)
        if changed is not None:
            return changed
        return describe_item(self.bundle.data, index)[1] if index < len(self.bundle.data.item_ids) else ""

    @property
    def bundle_id(self) -> str:
        return self.bundle.bundle_id

    @classmethod
    def of(
        cls,
        bundle: Bundle,
        index: BaseIndex,
        source: dict | None = None,
        attributes: dict | None = None,
        popular: BaseIndex | None = None,
    ) -> ServingVersion:
        """`attributes`: the items' filter attributes, when the caller built them already; `popular`:
        the popularity list, when restored from a snapshot."""
        if popular is None:
            counts = bundle.data.item_counts().astype(np.float32)
            popular = ExactIndex(1, "ip")
            popular.add(
                np.arange(len(counts)), counts[:, None], attributes=attributes or item_attributes(bundle.data)
            )
        lookup = {str(item): i for i, item in enumerate(bundle.data.item_ids.tolist())}
        features = bundle.data.item_features
        tokens = {name: i for i, name in enumerate(features.names)} if features is not None else {}
        return cls(bundle, index, popular, lookup, tokens, source=dict(source or {}))


class Recommender:
    def __init__(self, version: ServingVersion):
        self.active = version

    def recommend(
        self,
        *,
        user_id: str | None = None,
        recent_items: list | None = None,
        vector: list[float] | None = None,
        k: int = 10,
        filter=None,  # noqa: A002 (the index contract's name)
        exclude_seen: bool = True,
        version: ServingVersion | None = None,
    ) -> Recommendation:
        """Top-k for one query. `version`: the version a caller already read (else the active one)."""
        version = version or self.active  # read once: the whole request uses this version
        query = RecommendQuery(user_id, recent_items, vector, k, filter, exclude_seen)
        (answer,) = self.answer_with(version, [query])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def answer(
        self, queries: list[RecommendQuery]
    ) -> tuple[ServingVersion, list[Recommendation | Exception]]:
        """The service's answers: the active version, read once, answers every query (k above its item
        count is cut to that count). See `answer_with`."""
        version = self.active
        size = len(version.index)
        queries = [q if q.k <= size else replace(q, k=size) for q in queries]
        return version, self.answer_with(version, queries)

    def answer_with(self, version: ServingVersion, queries: list[RecommendQuery]) -> list:
        """One answer per query, in order: the one it gets alone, or its error (see answer_queries)."""
        return answer_queries(version, queries)

    def similar(
        self,
        item_ids: list,
        *,
        k: int = 10,
        filter=None,  # noqa: A002
        exclude_triggers: bool = True,
        version: ServingVersion | None = None,
    ) -> Recommendation:
        """Items like the trigger items: the index searched with the mean of their item vectors.

        Item vectors live in the same space as user vectors and are scored by the same inner product,
        so the item index answers item-to-item queries as it answers user queries. Items added since
        the bundle can be triggers too. An index with a trigger path of its own (MFLI: the triggers'
        leaves, sampled by how many triggers share them) answers through it.
        """
        version = version or self.active
        if not isinstance(item_ids, list) or not item_ids:
            raise InvalidRequest("item_ids must be a non-empty list of item ids")
        if len(item_ids) > MAX_TRIGGER_ITEMS:
            raise InvalidRequest(f"item_ids holds at most {MAX_TRIGGER_ITEMS} trigger items")
        unknown = [item for item in item_ids if str(item) not in version.item_lookup]
        if unknown:
            raise InvalidRequest(f"unknown items: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        triggers = np.asarray([version.item_lookup[str(item)] for item in item_ids], np.int64)
        query = np.mean([version.item_vector(int(i)) for i in triggers], axis=0, dtype=np.float32)
        norm = float(np.linalg.norm(query))
        if norm > 0:  # the mean of unit vectors, back on the unit sphere the towers score on
            query = query / norm
        seen = np.unique(triggers) if exclude_triggers else np.zeros(0, np.int64)
        query = query[None, :]
        if exclude_triggers and version.index.capabilities.triggers:
            found = self._run(
                version,
                lambda: version.index.search_triggers(triggers, k, filter=filter),
                k,
                filter,
                seen,
                query,
            )
            if found is not None:
                return found
        return self._search(version, query, k, filter, seen)

    def _search(self, version, query, k, filter, seen) -> Recommendation:  # noqa: A002
        exclude = [seen] if len(seen) else None
        found = self._run(
            version,
            lambda: version.index.search(query, k, filter=filter, exclude=exclude),
            k,
            filter,
            seen,
            query,
        )
        return (
            found
            if found is not None
            else self._popular(version, k, filter, seen, "no results after filtering")
        )

    def _run(self, version, search, k, filter, seen, query) -> Recommendation | None:  # noqa: A002
        """The answer of `search`; popularity's when the index fails, None when it finds nothing."""
        try:
            result = search()
        except InvalidRequest:
            raise
        except Exception:  # the index failed: answer from popularity rather than not at all
            return self._popular(version, k, filter, seen, "index error")
        ids, scores = result.ids[0], result.scores[0]
        keep = ids >= 0
        if not keep.any():
            return None
        return Recommendation(ids[keep], scores[keep], version.bundle_id, None, query, seen)

    def _popular(self, version, k, filter, seen, reason) -> Recommendation:  # noqa: A002
        return popular_answer(version, k, filter, seen, reason)


def online_recall(version: ServingVersion, answer: Recommendation) -> float | None:
    """Share of exact search's top-k (over the bundle's catalogue, same history excluded) that the
    index returned; None where it does not apply (fallback answers, items added since the bundle)."""
    if (
        answer.query is None
        or not len(answer.ids)
        or (answer.ids >= len(version.bundle.item_embeddings)).any()
    ):
        return None
    scores = version.bundle.item_embeddings @ answer.query[0]
    if answer.seen is not None and len(answer.seen):
        scores[answer.seen] = -np.inf
    k = len(answer.ids)
    exact = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return len(np.intersect1d(exact, answer.ids)) / k
