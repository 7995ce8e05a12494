"""The FAISS backend: any index-factory string, with upsert, remove and filters on top.

Ids. FAISS labels are our slots (see slots.py). IVF indexes store caller-chosen labels and delete them,
so there an upsert is `remove_ids` + `add_with_ids` under a fresh slot. Elsewhere (HNSW, Flat, refine
wrappers, IVF fast-scan lists: faiss_layers.Layers) a removed or replaced item becomes a tombstone: its
slot is dead and an id selector hides it until `compact()` rebuilds the index from the live vectors.

Filters. The attribute filter and the tombstones become a bitmap selector over slots, given to the
layer that searches (IVF, HNSW, Flat). Where FAISS takes no selector (e.g. IndexPQ), the backend
over-fetches and post-filters. Either way, when at most `exact_below` items match, those items are
scored exactly instead (an approximate search of a tiny subset is all misses; by their codes where the
index keeps no vectors), and a row that still
comes back short of k is retried with wider search parameters, then scored exactly over the matching
items: k results come back whenever k items match.

Training. IVF and PQ need training: the first `add` trains on a seeded sample of its vectors
(`train_size`, default max(50,000, 64 x nlist)), so the first add must carry enough vectors. The
coarse k-means runs `kmeans_iterations` iterations (10; FAISS's own default is 25).
"""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import faiss
import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.attributes import AttributeStore
from recindex.index.base import (
    BaseIndex,
    Capabilities,
    Metric,
    Partitions,
    SearchResult,
    top_k,
)
from recindex.index.faiss_layers import (
    Layers,
    accepts_selector,
    distances_computed,
    ivf_lists,
    layers_of,
    prepare_training,
    reset_stats,
    scan_codes,
    search_parameters,
    small_sample_training,
    train,
)
from recindex.index.filters import Filter
from recindex.index.lean import ResolvedParams, is_plain_query
from recindex.index.slots import SlotTable

_COUNTERS = threading.Lock()
EXACT_FALLBACK_LIMIT = 200_000  # largest matching set a short row is scored over exactly
WIDEN_TRIES = 3
KMEANS_ITERATIONS = 10  # Lloyd iterations of an IVF's coarse k-means (faiss_layers.set_kmeans_iterations)


class FaissIndex(BaseIndex):
    backend = "faiss"

    def __init__(
        self,
        dim: int,
        metric: Metric = "ip",
        factory: str = "HNSW32",
        *,
        ef_construction: int = 200,
        train_size: int | None = None,
        kmeans_iterations: int = KMEANS_ITERATIONS,
        search_params=None,
    ):
        self.factory = factory
        self._faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        try:
            self.index = faiss.index_factory(int(dim), factory, self._faiss_metric)
        except (RuntimeError, TypeError) as error:
            lines = str(error).strip().splitlines() or [repr(error)]
            reason = re.sub(r"^Error in .*? at \S+:\d+: ", "", lines[-1])  # drop the C++ location
            raise InvalidRequest(f"FAISS cannot build {factory!r} for dim {dim}: {reason}") from None
        self.layers: Layers = layers_of(self.index)
        self.default_search_params = {**self.layers.knobs(), "exact_below": 20_000}
        super().__init__(dim, metric, search_params)
        if self.layers.is_hnsw:
            self.layers.core.hnsw.efConstruction = int(ef_construction)
        self.ef_construction = int(ef_construction)
        self.train_size = train_size
        self.kmeans_iterations = int(kmeans_iterations)  # checked when training starts
        self.table = SlotTable()
        self._selectors_work: bool | None = None  # probed on first filtered search
        self._param_cache: dict = {}
        self._resolved = ResolvedParams()
        self.last_add_seconds: dict[str, float] = {}  # training and adding: the last add, in seconds

    @property
    def capabilities(self) -> Capabilities:
        native = self._selectors_work is not False
        return Capabilities(upsert=True, remove=True, filter="native" if native else "post-filter")

    def __len__(self) -> int:
        return len(self.table)

    # ---- writes ----------------------------------------------------------------------------------

    def _train(self, vectors: np.ndarray) -> None:
        nlist = self.layers.core.nlist if self.layers.is_ivf else 1
        size = self.train_size or max(50_000, 64 * nlist)
        needed = max(nlist, 256 if "PQ" in self.factory else 1)
        if len(vectors) < needed:
            raise InvalidRequest(
                f"faiss:{self.factory} must be trained on at least {needed:,} vectors and the first add "
                f"has {len(vectors):,}: add more items at once, or use fewer lists / smaller codebooks"
            )
        sample = vectors
        if len(vectors) > size:
            sample = vectors[np.sort(np.random.default_rng(0).choice(len(vectors), size, replace=False))]
        prepare_training(self.index, self.layers, self.kmeans_iterations)
        try:
            with small_sample_training(self.index):
                train(self.index, self.layers, sample)
        except RuntimeError as error:
            raise InvalidRequest(f"FAISS could not train {self.factory!r}: {error}") from None
        if self.layers.takes_ids and not self.layers.codes_only:
            # A hash-table direct map lets IVF reconstruct vectors by label (for exact fallbacks). Under
            # a refine stage the refine index gives them back; fast-scan lists cannot keep one.
            self.layers.core.set_direct_map_type(faiss.DirectMap.Hashtable)

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        started, trained = time.perf_counter(), 0.0
        if not self.index.is_trained:
            self._train(vectors)
            trained = time.perf_counter() - started
        old = self.table.lookup(ids)
        old = old[old >= 0]
        # Validate attributes on a scratch store first, so a bad batch changes nothing.
        AttributeStore().set(np.arange(len(ids)), attributes)
        self._drop_slots(old)
        slots = self.table.append(ids, attributes)
        if self.layers.takes_ids:
            self.index.add_with_ids(vectors, slots)
        else:
            assert self.index.ntotal == slots[0], "sequential labels out of step with slots"
            self.index.add(vectors)
        self.last_add_seconds = {"train": trained, "add": time.perf_counter() - started - trained}

    def _drop_slots(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        if self.layers.takes_ids:
            labels = np.ascontiguousarray(slots, np.int64)
            # The hash-table direct map only deletes through an IDSelectorArray.
            self.index.remove_ids(faiss.IDSelectorArray(len(labels), faiss.swig_ptr(labels)))
        self.table.kill(slots)

    def _remove(self, ids: np.ndarray) -> int:
        slots = self.table.lookup(ids)
        slots = slots[slots >= 0]
        self._drop_slots(slots)
        return len(slots)

    @property
    def tombstones(self) -> int:
        return 0 if self.layers.takes_ids else self.table.dead

    def compact(self) -> None:
        """Rebuild from the live vectors so that tombstones stop costing search time and memory."""
        if not self.table.dead:
            return
        live = self.table.live_slots()
        vectors = self._reconstruct(live)
        ids = self.table.ids[live].copy()
        attributes = self.table.attributes.rows(live)
        fresh = FaissIndex(self.dim, self.metric, search_params=self.search_params, **self._settings())
        fresh.index = faiss.clone_index(self.index)
        fresh.index.reset()
        fresh.layers = layers_of(fresh.index)
        fresh._add(ids, vectors, attributes)
        self.__dict__.update(fresh.__dict__)

    def _reconstruct(self, slots: np.ndarray) -> np.ndarray:
        try:
            if self.layers.codes_only:  # no direct map: decode every list (compact() only comes here)
                return self.index.reconstruct_n(0, self.index.ntotal)[slots]
            return self.index.reconstruct_batch(slots.astype(np.int64))
        except RuntimeError as error:
            raise InvalidRequest(f"faiss:{self.factory} cannot give back stored vectors: {error}") from None

    # ---- search ----------------------------------------------------------------------------------

    lean_path = True

    def _lean(self, queries, k, params) -> SearchResult | None:
        """The lean path of `BaseIndex.search`, for the serving hot loop (which masks a history around it).

        A plain query (float32 matrix of the right shape, no filter, no tombstones) goes straight to
        FAISS: per-query time is tens to hundreds of microseconds, and the general path's checks and
        dispatch would add several percent to it. Even one numpy reduction before the FAISS
        call was measured to slow the call itself by 5-8 us, so finiteness is checked afterwards, on the
        best distance, which NaN or inf in a query always spoils. Anything else, and any input that
        needs an error message, takes the general path.
        """
        if (
            is_plain_query(queries, k, self.dim, len(self.table))
            and self.metric != "cosine"
            and not self.tombstones
            and not self.count_candidates
        ):
            resolved = self._resolved.get(self, params)
            if resolved is not None:
                search_params, keep = self._parameters(resolved, k, None)
                with self._guard:
                    distances, labels = self.index.search(queries, k, params=search_params)
                # FAISS pads missing results at the end of a row, so the last column tells.
                if len(labels) == 1:
                    good = labels[0, -1] >= 0 and math.isfinite(distances[0, 0])
                else:
                    good = labels[:, -1].min() >= 0 and bool(np.isfinite(distances[:, 0]).all())
                if good:
                    ids = labels if self.table.identity else self.table.ids[labels]
                    return SearchResult(ids, -distances if self.metric == "l2" else distances)
        return None

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        mask = self.table.eligible(flt) if (flt is not None or self.tombstones) else None
        n_match = len(self.table) if mask is None else int(mask.sum())
        if n_match == 0:
            return SearchResult.empty(len(queries), k)
        if mask is not None and n_match <= max(k, params["exact_below"]):
            return self._exact(queries, k, np.flatnonzero(mask))
        result = self._approximate(queries, k, mask, n_match, params)
        # Valid entries come first in each row, so a row is short iff its last needed place is empty.
        short = result.ids[:, min(k, n_match) - 1] < 0
        if short.any():
            self._fill_short_rows(queries, k, mask, n_match, params, short, result)
        return result

    def _approximate(self, queries, k, mask, n_match, params) -> SearchResult:
        selector, bitmap = None, None
        fetch = k
        if mask is not None:
            if self._selectors_work is None:
                self._selectors_work = accepts_selector(self.index, self.layers, self.search_params)
            if self._selectors_work:
                bitmap = np.packbits(mask, bitorder="little")
                selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
            else:  # over-fetch in proportion to how much the filter removes
                fetch = min(self.index.ntotal, int(np.ceil(k * self.table.used / n_match * 1.5)) + k)
        search_params, keep = self._parameters(params, fetch, selector)
        scored = None
        if self.count_candidates:
            # FAISS's counters are process-wide: searches that count take turns (evaluation only).
            with _COUNTERS:
                reset_stats()
                distances, labels = self.index.search(queries, fetch, params=search_params)
                per_query = distances_computed(self.layers, len(queries), fetch, params, self.table.used)
            scored = np.full(len(queries), per_query)
        else:
            distances, labels = self.index.search(queries, fetch, params=search_params)
        del keep, bitmap
        if mask is not None and not self._selectors_work:
            labels = np.where((labels >= 0) & mask[np.maximum(labels, 0)], labels, -1)
        return self._to_result(distances, labels, k, scored)

    def _parameters(self, params: dict, k: int, selector):
        if selector is not None:
            return search_parameters(self.layers, params, k, selector)
        key = (tuple(params.items()), k if self.layers.is_hnsw else 0)
        cached = self._param_cache.get(key)
        if cached is None:
            cached = self._param_cache[key] = search_parameters(self.layers, params, k)
        return cached

    def _to_result(self, distances, labels, k, scored) -> SearchResult:
        if labels.shape[1] == k and labels.min() >= 0:  # the common case, kept lean
            scores = -distances if self.metric == "l2" else distances
            return SearchResult(labels if self.table.identity else self.table.ids[labels], scores, scored)
        valid = labels >= 0
        scores = -distances if self.metric == "l2" else distances
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        if not valid.all():  # bring valid entries to the front, keeping their order
            order = np.argsort(~valid, axis=1, kind="stable")
            labels = np.take_along_axis(labels, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            valid = np.take_along_axis(valid, order, axis=1)
        ids = np.where(valid, self.table.ids[np.maximum(labels, 0)], -1)[:, :k]
        return SearchResult(ids.astype(np.int64), scores[:, :k], scored)

    def _fill_short_rows(self, queries, k, mask, n_match, params, short, result) -> None:
        rows = np.flatnonzero(short)
        wider = dict(params)
        for _ in range(WIDEN_TRIES):
            wider = {
                key: (value * 4 if key in ("nprobe", "ef", "k_factor") else value)
                for key, value in wider.items()
            }
            if "nprobe" in wider:
                wider["nprobe"] = min(wider["nprobe"], self.layers.core.nlist)
            retry = self._approximate(queries[rows], k, mask, n_match, wider)
            result.ids[rows], result.scores[rows] = retry.ids, retry.scores
            if result.scored is not None and retry.scored is not None:
                result.scored[rows] += retry.scored  # a retry's work is the row's cost too
            rows = rows[retry.ids[:, min(k, n_match) - 1] < 0]
            if not len(rows):
                return
        if n_match <= EXACT_FALLBACK_LIMIT:
            slots = self.table.live_slots() if mask is None else np.flatnonzero(mask)
            exact = self._exact(queries[rows], k, slots)
            result.ids[rows], result.scores[rows] = exact.ids, exact.scores
            if result.scored is not None:
                result.scored[rows] += exact.scored

    def _exact(self, queries: np.ndarray, k: int, slots: np.ndarray) -> SearchResult:
        if self.layers.codes_only:  # no vectors to read back: `slots` scored by their codes, all scanned
            found = self._to_result(*scan_codes(self.index, self.layers, queries, k, slots), k, None)
            return SearchResult(found.ids, found.scores, np.full(len(queries), self.index.ntotal))
        vectors = self._reconstruct(slots)
        scores = queries @ vectors.T
        if self.metric == "l2":
            scores = 2 * scores - (vectors**2).sum(axis=1)[None, :] - (queries**2).sum(axis=1, keepdims=True)
        take = min(k, len(slots))
        positions, values = top_k(scores.astype(np.float32), take)
        ids = np.full((len(queries), k), -1, np.int64)
        out = np.full((len(queries), k), -np.inf, np.float32)
        ids[:, :take] = self.table.ids[slots[positions]]
        out[:, :take] = values
        return SearchResult(ids, out, np.full(len(queries), len(slots)))

    def partitions(self) -> Partitions:
        """An IVF index's lists, as buckets by item id (other FAISS structures have no partition)."""
        lists = ivf_lists(self.index, self.table.ids)  # FAISS stores slots; the table maps them to ids
        return super().partitions() if lists is None else Partitions({"IVF lists": lists})

    # ---- persistence -----------------------------------------------------------------------------

    def _save(self, folder: Path) -> dict:
        self.table.save(folder)
        faiss.write_index(self.index, str(folder / "index.faiss"))
        return self._settings()

    def _settings(self) -> dict:
        """The constructor's settings, as saved in the manifest's state."""
        return {
            "factory": self.factory,
            "ef_construction": self.ef_construction,
            "train_size": self.train_size,
            "kmeans_iterations": self.kmeans_iterations,
        }

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> FaissIndex:
        state = manifest["state"]
        index = cls(
            manifest["dim"],
            manifest["metric"],
            state["factory"],
            ef_construction=state["ef_construction"],
            train_size=state["train_size"],
            kmeans_iterations=state.get("kmeans_iterations", 25),  # saved before the setting: FAISS's
        )
        index.index = faiss.read_index(str(folder / "index.faiss"))
        index.layers = layers_of(index.index)
        index.table = SlotTable.load(folder)
        if index.index.ntotal != len(index) + index.tombstones:
            raise InvalidRequest(
                f"{folder}: index.faiss holds {index.index.ntotal} vectors, the id table {index.table.used}"
            )
        return index
