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

import copy
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from recindex.bundle import Bundle
from recindex.errors import InvalidRequest, RecIndexError
from recindex.index.base import BaseIndex
from recindex.index.exact_index import ExactIndex
from recindex.models.devices import resolve_device
from recindex.models.two_tower import pad_sequences
from recindex.pipelines.indexes import item_attributes
from recindex.pipelines.recommend import describe_item, find_user

MAX_RECENT_ITEMS = 1_000
MAX_TRIGGER_ITEMS = 100
USER_CACHE_LIMIT = 200_000  # query vectors of known users kept per version (about 50 MB at d=64)


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

    def internal_id(self, raw: str, create: bool = False) -> int | None:
        """The internal index of a raw item id; with `create`, a new one for an unknown id."""
        index = self.item_lookup.get(str(raw))
        if index is None and create:
            index = self.item_lookup[str(raw)] = len(self.bundle.data.item_ids) + len(self.new_items)
            self.new_items.append(str(raw))
        return index

    def raw_item_id(self, index: int) -> str:
        catalogue = self.bundle.data.item_ids
        return str(catalogue[index]) if index < len(catalogue) else self.new_items[index - len(catalogue)]

    def raw_item_ids(self, indices: np.ndarray) -> list[str]:
        catalogue = self.bundle.data.item_ids
        if len(indices) and int(indices.max()) < len(catalogue):  # the usual case, in one step
            return catalogue[indices].astype(str).tolist()
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

    def user_query(self, user: int) -> np.ndarray:
        """The (1, d) query vector of a known user, from their history in the bundle (memoised)."""
        vector = self.user_vectors.get(user)
        if vector is None:
            vector = encode_history(self.bundle, self.bundle.data.sequence(user), user)
            if len(self.user_vectors) < USER_CACHE_LIMIT:
                self.user_vectors[user] = vector
        return vector

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


@dataclass(frozen=True)
class Recommendation:
    ids: np.ndarray  # internal item indices, best first
    scores: np.ndarray
    bundle_id: str
    fallback: str | None  # why the popularity list answered, or None
    query: np.ndarray | None = None  # (1, d) the query vector, when the index answered
    seen: np.ndarray | None = None  # the history that was excluded


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
        given = sum(x is not None for x in (user_id, recent_items, vector))
        if given != 1:
            raise InvalidRequest("give exactly one of user_id, recent_items or vector")
        seen = np.zeros(0, np.int64)
        if vector is not None:
            with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused just below
                query = np.asarray(vector, np.float32)[None, :]
            if not np.isfinite(query).all():
                raise InvalidRequest("vector must hold finite numbers within float32's range")
        else:
            if user_id is not None:
                try:
                    user = find_user(version.bundle.data, str(user_id))
                except RecIndexError:  # an unknown user is a normal event for a service, not an error
                    return self._popular(version, k, filter, seen, "unknown user")
                history = version.bundle.data.sequence(user)
                query = version.user_query(user)
            else:
                history = _item_indices(version.item_lookup, recent_items, len(version.bundle.data.item_ids))
                query = encode_history(version.bundle, history, None)
            seen = history if exclude_seen else seen
        return self._search(version, query, k, filter, seen)

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
        k = min(k, len(version.popular))
        result = version.popular.search(
            np.ones((1, 1), np.float32), k, filter=filter, exclude=[seen] if len(seen) else None
        )
        keep = result.ids[0] >= 0
        return Recommendation(result.ids[0][keep], result.scores[0][keep], version.bundle_id, reason)


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


# Where `encode_history` runs the query tower (`ServiceSettings.device`, process-wide like the threads).
# Bundles stay on the CPU, where everything else reads them; on a GPU, each bundle's model gets one copy
# there, made at its first query and dropped with the bundle.
_query_device = torch.device("cpu")
_on_device: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_query_device(setting: str) -> None:
    global _query_device
    _query_device = resolve_device(setting)
    _on_device.clear()


def _query_model(model: torch.nn.Module) -> torch.nn.Module:
    if _query_device.type == "cpu":
        return model
    placed = _on_device.get(model)
    if placed is None:
        placed = _on_device[model] = copy.deepcopy(model).to(_query_device).eval()
    return placed


def encode_history(bundle: Bundle, history: np.ndarray, user: int | None) -> np.ndarray:
    model = _query_model(bundle.model)
    padded, lengths = pad_sequences([history], model.config.max_len, model.n_items)
    device = _query_device
    users = torch.tensor([user], device=device) if user is not None else None
    sequences, lengths = torch.as_tensor(padded).to(device), torch.as_tensor(lengths).to(device)
    with torch.inference_mode():
        return model.user_vectors(sequences, lengths, users).cpu().numpy()
