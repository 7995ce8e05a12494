"""The `Index` contract every backend implements, and the checks and conventions they share.

    index.add(ids, vectors, attributes={"brand": [...], "price": [...]})   # upsert
    index.remove(ids)                                                     # -> how many were there
    ids, scores = index.search(queries, k, filter='brand == "acme"', exclude=histories)
    index.save(folder); same = load_index(folder)

Conventions: ids are non-negative int64 item ids chosen by the caller; results come ids first, scores
second, best first, and a higher score is always better (an L2 index returns negated squared
distances). Where fewer than k items are eligible, rows are padded with id -1 and score -inf. The metric
is part of the index and is checked against the model that produced the vectors (`check_metric`).

`BaseIndex` does the shared work once: input validation, parameter checks, per-query exclusion
(history masking) by over-fetching, and atomic save with a checksummed manifest. Backends implement the
underscored methods.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from recindex.artifacts import file_checksums, read_manifest_json, staged_directory, verify_checksums
from recindex.errors import BundleError, InvalidRequest
from recindex.index.exclusions import drop_excluded, excluded_fetch
from recindex.index.filters import Filter, as_filter

Metric = Literal["ip", "cosine", "l2"]
METRICS = ("ip", "cosine", "l2")
FORMAT_VERSION = 1
MAX_K = 16_384  # also Milvus's top-k limit
MAX_DIM = 32_768
MAX_QUERIES = 1_000_000


@dataclass(frozen=True)
class Capabilities:
    upsert: bool = True
    remove: bool = True
    filter: Literal["native", "post-filter"] = "native"  # how attribute/id filters are applied
    persist: bool = True
    attributes: bool = True
    # The calls beyond the contract's core, declared so that callers never probe for methods:
    triggers: bool = False  # `search_triggers`: an item-to-item path of its own
    rebuild: bool = False  # `rebuild`: the layout can be recomputed from the items it holds
    query_views: bool = False  # `add_with_views`: new items are placed by their query-tower view


@dataclass
class Partitions:
    """How an index divides its items, for reports: name -> bucket of each item id (ids 0..the largest,
    -1 where an id is not in the index), and figures that come with them (e.g. codeword use)."""

    buckets: dict[str, np.ndarray]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    ids: np.ndarray  # (Q, k) int64, -1 where fewer than k items are eligible
    scores: np.ndarray  # (Q, k) float32, higher is better, -inf where ids are -1
    scored: np.ndarray | None = None  # (Q,) candidates scored per query (see count_candidates)

    def __iter__(self):
        yield self.ids
        yield self.scores

    @classmethod
    def empty(cls, n_queries: int, k: int) -> SearchResult:
        """Rows with nothing found (no item is eligible), and nothing scored."""
        ids = np.full((n_queries, k), -1, np.int64)
        return cls(ids, np.full((n_queries, k), -np.inf, np.float32), np.zeros(n_queries))


def check_metric(index_metric: str, model_metric: str, normalized: bool) -> None:
    """Refuse an index whose score is not the model's score (ip and cosine agree on unit vectors)."""
    if index_metric == model_metric:
        return
    if normalized and {index_metric, model_metric} <= {"ip", "cosine"}:
        return
    raise InvalidRequest(
        f"the model scores items by {model_metric!r}"
        f"{' on unit vectors' if normalized else ''}; an index with metric {index_metric!r} would rank "
        "them differently"
    )


def as_matrix(vectors, dim: int, what: str) -> np.ndarray:
    """A C-contiguous float32 (n, dim) copy-if-needed of `vectors`, or a clear error."""
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InvalidRequest(f"{what} must be numbers: {error}") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidRequest(f"{what} must be a (n, {dim}) matrix, got shape {array.shape}")
    if array.shape[1] != dim:
        raise InvalidRequest(f"{what} have dimension {array.shape[1]}, this index holds dimension {dim}")
    if len(array) == 0:
        raise InvalidRequest(f"{what} are empty")
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise InvalidRequest(f"{what} contain NaN or inf (first at row {bad})")
    return np.ascontiguousarray(array)


def as_ids(ids, what: str = "ids") -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim == 0:
        array = array[None]
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise InvalidRequest(f"{what} must be a flat list of integers, got {array.dtype} shape {array.shape}")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise InvalidRequest(f"{what} must be non-negative (found {int(array.min())})")
    return array


def check_k(k, size: int) -> None:
    """Refuse a k that is not a whole number in 1..min(size, MAX_K), or any k on an empty index."""
    if size == 0:
        raise InvalidRequest("the index is empty: add items before searching")
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise InvalidRequest(f"k must be a positive integer, got {k!r}")
    if k > min(size, MAX_K):
        raise InvalidRequest(
            f"k={k} is larger than the index ({size:,} items)"
            if k > size
            else f"k={k} is above the limit of {MAX_K}"
        )


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidRequest("a zero vector has no direction; the cosine metric cannot score it")
    return (vectors / norms).astype(np.float32)


def as_exclusions(exclude, n_queries: int) -> list[np.ndarray] | None:
    """Per-query ids to leave out: a list of id lists, or CSR `(offsets, ids)`."""
    if exclude is None:
        return None
    if isinstance(exclude, tuple) and len(exclude) == 2 and isinstance(exclude[0], np.ndarray):
        offsets, items = exclude
        if len(offsets) != n_queries + 1:
            raise InvalidRequest(f"exclude offsets must have {n_queries + 1} entries, got {len(offsets)}")
        return [items[offsets[i] : offsets[i + 1]] for i in range(n_queries)]
    if len(exclude) != n_queries:
        raise InvalidRequest(f"exclude needs one id list per query ({n_queries}), got {len(exclude)}")
    return [as_ids(row, "exclude") for row in exclude]


class BaseIndex(ABC):
    """Shared validation and persistence; subclasses implement `_add`, `_remove`, `_search`, ..."""

    backend: ClassVar[str]
    # Search parameters this backend understands, with their defaults.
    default_search_params: ClassVar[dict[str, Any]] = {}
    # Fill SearchResult.scored where counting costs something (FAISS's global counters); evaluation
    # turns it on, serving leaves it off.
    count_candidates: bool = False
    # Whether `_lean` has a shortcut for plain queries (FAISS: the serving hot loop).
    lean_path: ClassVar[bool] = False
    # Whether a search waits on another process (a server): the service then runs it in a worker
    # thread, so that the wait does not hold its event loop (in-process searches stay on the loop).
    waits_on_server: ClassVar[bool] = False

    def __init__(self, dim: int, metric: Metric = "ip", search_params: Mapping[str, Any] | None = None):
        if not isinstance(dim, int) or not 0 < dim <= MAX_DIM:
            raise InvalidRequest(f"dim must be an integer in 1..{MAX_DIM}, got {dim!r}")
        if metric not in METRICS:
            raise InvalidRequest(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.dim = dim
        self.metric = metric
        self.search_params = self.resolve_params(search_params)
        # Writes and searches take turns: a service searches on its event loop (and a monitor thread)
        # while upserts arrive on worker threads, and FAISS releases the GIL inside its calls, so an
        # append to a list or graph could otherwise move memory under a running scan. Reentrant, as
        # some backends' writes call their own public methods.
        self._guard = threading.RLock()

    # ---- the contract ----------------------------------------------------------------------------

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def __len__(self) -> int: ...

    def add(self, ids, vectors, *, attributes: Mapping[str, Sequence] | None = None) -> None:
        """Insert or replace items (upsert); attributes are name -> one value per id."""
        ids = as_ids(ids)
        vectors = as_matrix(vectors, self.dim, "item vectors")
        if len(ids) != len(vectors):
            raise InvalidRequest(f"{len(ids)} ids for {len(vectors)} vectors")
        if len(np.unique(ids)) != len(ids):
            raise InvalidRequest("ids repeat within one add; pass each item once")
        if attributes is not None and not isinstance(attributes, Mapping):
            raise InvalidRequest("attributes must be a mapping of name -> one value per item")
        if self.metric == "cosine":
            vectors = normalize(vectors)
        with self._guard:
            self._add(ids, vectors, attributes)

    def remove(self, ids) -> int:
        """Remove items; returns how many of them were in the index (unknown ids are ignored)."""
        ids = as_ids(ids)
        if not len(ids):
            return 0
        with self._guard:
            return self._remove(np.unique(ids))

    def search(
        self,
        queries,
        k: int,
        *,
        filter: Filter | str | dict | None = None,  # noqa: A002 (the contract's name)
        params: Mapping[str, Any] | None = None,
        exclude=None,
    ) -> SearchResult:
        """Top-k items per query, best first. `exclude`: per-query ids to leave out (history)."""
        if filter is None and self.lean_path:
            found = self._lean_excluding(queries, k, params, exclude)
            if found is not None:
                return found
        queries = as_matrix(queries, self.dim, "queries")
        if len(queries) > MAX_QUERIES:
            raise InvalidRequest(f"{len(queries):,} queries in one call; at most {MAX_QUERIES:,}")
        size = len(self)
        check_k(k, size)
        if self.metric == "cosine":
            queries = normalize(queries)
        resolved = (
            {**self.search_params, **self.resolve_params(params, merge=False)}
            if params
            else self.search_params
        )
        flt = as_filter(filter)
        exclusions = as_exclusions(exclude, len(queries))
        with self._guard:
            if not exclusions:
                return self._search(queries, int(k), flt, resolved)
            return self._search_excluding(queries, int(k), flt, resolved, exclusions)

    def _search_excluding(
        self, queries: np.ndarray, k: int, flt: Filter | None, params: dict, exclusions: list[np.ndarray]
    ) -> SearchResult:
        """`_search` with each row's `exclusions` left out. Fetching k + (longest exclusion list) and
        dropping the excluded leaves at least k results whenever the backend returns full lists, so
        history masking never shortens a list; a backend whose lists can be short fills them here."""
        found = self._search(queries, excluded_fetch(k, exclusions, len(self)), flt, params)
        return drop_excluded(found, exclusions, k)

    def _lean(self, queries, k, params) -> SearchResult | None:
        """A backend's shortcut for plain queries (no filter, no exclusion) on input not checked yet,
        where `lean_path` says it has one: the result, or None where the checked path must answer
        (which also words every error)."""
        return None

    def _lean_excluding(self, queries, k, params, exclude) -> SearchResult | None:
        """`_lean`, with the exclusions masked as the checked path masks them (same fetch, same drop)."""
        if exclude is None:
            return self._lean(queries, k, params)
        if type(queries) is not np.ndarray or type(k) is not int or k < 1:
            return None
        try:
            exclusions = as_exclusions(exclude, len(queries))
        except (InvalidRequest, TypeError):  # the checked path explains it, after the queries' checks
            return None
        if not exclusions:
            return self._lean(queries, k, params)
        fetch = excluded_fetch(k, exclusions, len(self))
        found = self._lean(queries, fetch, params) if fetch >= k else None  # else k is beyond the index
        return None if found is None else drop_excluded(found, exclusions, k)

    # ---- beyond the core, where `capabilities` says so --------------------------------------------

    def search_triggers(
        self,
        trigger_ids,
        k: int,
        *,
        filter: Filter | str | dict | None = None,  # noqa: A002
        params: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """Items like the trigger items (one row), the triggers left out: the index's own item-to-item
        path, where `capabilities.triggers`. Others answer the triggers' mean vector through `search`."""
        raise InvalidRequest(f"a {self.backend} index has no trigger path: search with the triggers' vector")

    def rebuild(self) -> dict:
        """Recompute the layout from the items held (where `capabilities.rebuild`); returns a report."""
        raise InvalidRequest(f"a {self.backend} index has nothing to rebuild")

    def partitions(self) -> Partitions:
        """The buckets the index divides its items into (partitioned indexes), for quality reports."""
        raise InvalidRequest(
            f"a {self.backend} index has no partition to report (the learned indexes and FAISS IVF do)"
        )

    def resolve_params(self, params: Mapping[str, Any] | None, merge: bool = True) -> dict[str, Any]:
        params = dict(params or {})
        unknown = set(params) - set(self.default_search_params)
        if unknown:
            known = ", ".join(sorted(self.default_search_params)) or "none"
            raise InvalidRequest(
                f"{self.backend} index: unknown search parameters {sorted(unknown)} (it takes: {known})"
            )
        for key, value in params.items():
            default = self.default_search_params[key]
            if isinstance(default, int) and (not isinstance(value, int | np.integer) or value < 1):
                raise InvalidRequest(f"search parameter {key} must be a positive integer, got {value!r}")
            number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
            if isinstance(default, float) and not (number and np.isfinite(value) and value >= 0):
                raise InvalidRequest(f"search parameter {key} must be a finite number >= 0, got {value!r}")
        return {**self.default_search_params, **params} if merge else params

    # ---- persistence ------------------------------------------------------------------------------

    def save(self, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the index to a directory atomically, with a manifest that checksums every file."""
        path = Path(path)
        with staged_directory(path) as staging:
            state = self._save(staging)
            manifest = {
                "format_version": FORMAT_VERSION,
                "backend": self.backend,
                "dim": self.dim,
                "metric": self.metric,
                "count": len(self),
                "search_params": self.search_params,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "state": state,
                "files": file_checksums(staging),
                **dict(extra or {}),
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        return path

    @classmethod
    def from_manifest(cls, path: Path, manifest: dict) -> BaseIndex:
        index = cls._load(path, manifest)
        index.search_params = index.resolve_params(manifest.get("search_params"))
        return index

    # ---- what a backend implements ---------------------------------------------------------------

    @abstractmethod
    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None: ...

    @abstractmethod
    def _remove(self, ids: np.ndarray) -> int: ...

    @abstractmethod
    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult: ...

    @abstractmethod
    def _save(self, folder: Path) -> dict:
        """Write the backend's files into `folder`; return what `_load` needs from the manifest."""

    @classmethod
    @abstractmethod
    def _load(cls, folder: Path, manifest: dict) -> BaseIndex: ...


def read_index_manifest(path: str | Path) -> dict:
    path = Path(path)
    manifest = read_manifest_json(path, "an index", ("format_version", "backend", "dim", "metric", "files"))
    manifest_path = path / "manifest.json"
    if manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: index format {manifest['format_version']} is not supported")
    verify_checksums(path, manifest["files"])
    return manifest


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions and values of each row's k largest scores, best first (ties: lower position)."""
    n = scores.shape[1]
    if k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    values = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -values), axis=1)
    positions = np.take_along_axis(part, order, axis=1)
    return positions, np.take_along_axis(values, order, axis=1)
