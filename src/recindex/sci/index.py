"""The `ci` index backend: SCI's consistent dual-view index.

Build (the first `add`):
1. coarse: spherical k-means in the *query view*, on the items read by the query tower (f_q(I), the
   `query_views` option, by item id) and, with `coarse="items+queries"`, on logged query vectors
   f_q(Q) too (`logged_queries`: one per training user). Each item goes to the list of its query view's
   nearest centroid (the `assign` nearest with multi-assignment). The default is the items alone (ours;
   the design notes suggested both): on Beauty's validation split, with the plain towers and 128 lists,
   adding the logged queries cut routing consistency at nprobe 4 from 0.68 to 0.15 and Recall@10 from
   0.104 to 0.086 (`benchmarks/sci_bars.py choices`);
2. fine: residual quantization in the *item view*: b_i - c_k(i) (the item vector minus its list's
   centroid; meaningful because SymmAligner put both views in one space), `levels` x `codewords`
   RQ-KMeans (our default 2 x 256, as the design notes suggest).

Search: a query vector (the query tower's, as always) is routed to its `nprobe` nearest centroids:
query view against query view, the way the lists were formed. The items of those lists are scored by
the cross-tower score the model was trained on, <f_q(Q), f_i(I)>: exactly on the stored item vectors
(`fine="flat"`, the default) or on their RQ decode c_k(i) + sum of codewords (`fine="rq"`, the
compressed path of an IVF-RQ index). A row with fewer than k eligible candidates probes further lists,
nearest first, until it has k (so k results come back whenever k items match the filter).

Coarse id + fine codes are the item's coarse-to-fine semantic ID (`semantic_ids`).

`place="item"` (ours, an option) keeps the query-view centroids but puts each item in the list whose
centroid, read as a query, scores its item vector highest: the lists then hold what their queries
score, not what their queries resemble. On Beauty's validation split the two tie with SymmAligner
towers, and placing by the item vector loses 9% of Recall@10 with plain towers (their item vectors
crowd into a few lists), so the query view stays the default (`benchmarks/sci_bars.py choices`).

Writes after the build: an item gets its list from its query view when the `query_views` given at build
time cover its id, or when it comes through `add_with_views` (the service does this for items upserted
by content); otherwise from its item vector (the contract's `add` hands a backend one vector per item;
routing a new item by its item view is sound to the degree the towers are aligned, which is what
SymmAligner trains). Its fine codes come from the trained codebook. Rows, attributes, filters and
removal are the exact backend's.

The lists are scanned here, not in a FAISS IVF, because FAISS assigns an item to a list by the vector
it stores, and CI assigns by one view while it stores and scores another.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.base import Capabilities, Metric, SearchResult, as_ids, as_matrix
from recindex.index.exact_index import ExactIndex
from recindex.index.filters import Filter
from recindex.quant.codebook import assign_codes, fit_codebook

COARSE = ("items", "items+queries")
PLACE = ("query", "item")
FINE = ("flat", "rq")
MAX_LISTS = 1 << 16
MAX_CODEWORDS = 1 << 12


def default_nlist(n: int) -> int:
    """The power of two nearest sqrt(n) (128 for a 12k-item catalogue), at least 1."""
    return max(1, min(n, 2 ** round(math.log2(max(1.0, math.sqrt(n))))))


class CIIndex(ExactIndex):
    backend = "ci"
    default_search_params = {"nprobe": 8, "fine": "flat"}

    def __init__(
        self,
        dim: int,
        metric: Metric = "ip",
        search_params=None,
        *,
        nlist: int = 0,
        levels: int = 2,
        codewords: int = 256,
        assign: int = 1,
        coarse: str = "items",
        place: str = "query",
        query_views: np.ndarray | None = None,
        logged_queries: np.ndarray | None = None,
        seed: int = 0,
    ):
        if metric not in ("ip", "cosine"):
            raise InvalidRequest(f"a ci index scores by inner product (ip or cosine), got {metric!r}")
        super().__init__(dim, metric, "float32", search_params)
        if not isinstance(nlist, int) or not 0 <= nlist <= MAX_LISTS:
            raise InvalidRequest(
                f"nlist must be an integer in 0..{MAX_LISTS} (0: about sqrt(n)), got {nlist!r}"
            )
        if not isinstance(levels, int) or not 0 <= levels <= 8:
            raise InvalidRequest(f"levels must be an integer in 0..8, got {levels!r}")
        if not isinstance(codewords, int) or not 2 <= codewords <= MAX_CODEWORDS:
            raise InvalidRequest(f"codewords must be an integer in 2..{MAX_CODEWORDS}, got {codewords!r}")
        if not isinstance(assign, int) or not 1 <= assign <= 8:
            raise InvalidRequest(f"assign must be an integer in 1..8, got {assign!r}")
        if coarse not in COARSE:
            raise InvalidRequest(f"coarse must be one of {', '.join(COARSE)}, got {coarse!r}")
        if place not in PLACE:
            raise InvalidRequest(f"place must be one of {', '.join(PLACE)}, got {place!r}")
        self.nlist, self.levels, self.codewords, self.assign = nlist, levels, codewords, assign
        self.coarse, self.place, self.seed = coarse, place, seed
        self.query_views = _views(query_views, dim, "query_views")
        self.logged_queries = _views(logged_queries, dim, "logged_queries")
        self.centroids: np.ndarray | None = None  # (nlist, d), query view
        self.codebook = np.zeros((0, 1, 0, dim), np.float32)  # (levels, 1, codewords, d), item view
        self._lists = np.zeros((0, assign), np.int64)  # per slot: its lists, nearest first
        self._codes = np.zeros((0, levels), np.int64)  # per slot: its fine codes
        self._members: tuple[np.ndarray, np.ndarray] | None = None  # CSR (offsets, slots) by list
        self._given_views: dict[int, np.ndarray] = {}  # set by `add_with_views` for one add

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            upsert=True,
            remove=True,
            filter="native",
            persist=True,
            attributes=True,
            query_views=self.place == "query",
        )

    # ---- build and writes --------------------------------------------------------------------------

    def add_with_views(self, ids, vectors, query_views, *, attributes=None) -> None:
        """As `add`, with each item routed by the query view given (f_q(I): for a new item known by its
        content, `recindex.sci.views.content_query_views`) instead of its item vector."""
        ids = as_ids(ids)
        views = as_matrix(query_views, self.dim, "query views")
        if len(views) != len(ids):
            raise InvalidRequest(f"{len(ids)} ids for {len(views)} query views")
        with self._guard:
            self._given_views = dict(zip(ids.tolist(), views, strict=True))
            try:
                self.add(ids, vectors, attributes=attributes)
            finally:
                self._given_views = {}

    def _routing_views(self, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        views = vectors.copy()
        known = ids < len(self.query_views)
        views[known] = self.query_views[ids[known]]
        for row, item in enumerate(ids.tolist()):
            if item in self._given_views:
                views[row] = self._given_views[item]
        return views

    def _build(self, views: np.ndarray, vectors: np.ndarray) -> None:
        nlist = self.nlist or default_nlist(len(views))
        if nlist > len(views):
            raise InvalidRequest(f"nlist={nlist} is more than the {len(views)} items of the first add")
        sample = views
        if self.coarse == "items+queries" and len(self.logged_queries):
            sample = np.concatenate([views, self.logged_queries])
        kmeans = faiss.Kmeans(self.dim, nlist, niter=20, seed=self.seed, spherical=True)
        kmeans.train(np.ascontiguousarray(sample, np.float32))
        self.centroids = kmeans.centroids.astype(np.float32)
        self.nlist = nlist
        if self.levels:
            first = self._nearest_lists(self._placing(views, vectors))[:, 0]
            residuals = vectors - self.centroids[first]
            codewords = min(self.codewords, len(residuals))
            self.codebook = fit_codebook(residuals[:, None, :], self.levels, codewords, seed=self.seed)

    def _placing(self, views: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """The vectors that pick an item's lists: its query view, or with place="item" its item vector
        (the list whose centroid, read as a query, scores the item highest)."""
        return vectors if self.place == "item" else views

    def _nearest_lists(self, views: np.ndarray) -> np.ndarray:
        scores = views @ self.centroids.T
        take = min(self.assign, self.nlist)
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1)

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        views = self._routing_views(ids, vectors)
        if self.centroids is None:
            self._build(views, vectors)
        lists = self._nearest_lists(self._placing(views, vectors))
        if lists.shape[1] < self.assign:  # fewer lists than the multi-assignment asks: repeat the nearest
            lists = np.concatenate([lists, np.repeat(lists[:, :1], self.assign - lists.shape[1], 1)], 1)
        codes = np.zeros((len(ids), self.levels), np.int64)
        if self.levels:
            residuals = vectors - self.centroids[lists[:, 0]]
            codes = assign_codes(self.codebook, residuals[:, None, :])[:, 0, :].astype(np.int64)
        super()._add(ids, vectors, attributes)
        slots = self.table.lookup(ids)
        if len(self._lists) < len(self._rows):
            self._lists = _grown(self._lists, len(self._rows))
            self._codes = _grown(self._codes, len(self._rows))
        self._lists[slots] = lists
        self._codes[slots] = codes
        self._members = None

    def _compacted(self, keep: np.ndarray) -> None:
        super()._compacted(keep)
        self._lists = self._lists[keep].copy()
        self._codes = self._codes[keep].copy()
        self._members = None

    def members(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR of each list's slots (live or not): (offsets (nlist + 1,), slots)."""
        if self._members is None:
            used = self.table.used
            flat_lists = self._lists[:used].reshape(-1)
            flat_slots = np.repeat(np.arange(used), self.assign)
            if self.assign > 1:  # a list holds an item once, even if it is among its nearest twice
                pairs = np.unique(flat_lists * used + flat_slots)
                flat_lists, flat_slots = pairs // used, pairs % used
            order = np.argsort(flat_lists, kind="stable")
            offsets = np.zeros(self.nlist + 1, np.int64)
            np.cumsum(np.bincount(flat_lists, minlength=self.nlist), out=offsets[1:])
            self._members = (offsets, flat_slots[order])
        return self._members

    def semantic_ids(self, ids: np.ndarray) -> np.ndarray:
        """(n, 1 + levels) coarse list + fine codes of live items: their coarse-to-fine semantic IDs."""
        slots = self.table.lookup(np.asarray(ids, np.int64))
        if (slots < 0).any():
            raise InvalidRequest(f"item {int(np.asarray(ids)[slots < 0][0])} is not in the index")
        return np.concatenate([self._lists[slots, :1], self._codes[slots]], axis=1)

    # ---- search ----------------------------------------------------------------------------------

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        fine = params["fine"]
        if fine not in FINE:
            raise InvalidRequest(f"search parameter fine must be one of {', '.join(FINE)}, got {fine!r}")
        if fine == "rq" and not self.levels:
            raise InvalidRequest("this ci index has no fine codes (levels=0): search it with fine=flat")
        nprobe = min(int(params["nprobe"]), self.nlist)
        eligible = self.table.eligible(flt) if (flt is not None or self.table.dead) else None
        offsets, slots_by_list = self.members()
        sizes = np.diff(offsets)
        if eligible is not None:
            sizes = np.add.reduceat(np.append(eligible[slots_by_list], False), offsets[:-1]) * (sizes > 0)
        coarse = queries @ self.centroids.T  # (Q, nlist)
        order = np.argsort(-coarse, axis=1, kind="stable")
        lut = None
        if fine == "rq":
            lut = np.einsum("lmd,qd->qlm", self.codebook[:, 0], queries)  # (Q, levels, codewords)
        ids = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        scored = np.zeros(len(queries), np.int64)
        rows = self._rows
        for q in range(len(queries)):
            probe = _probed(order[q], sizes, nprobe, k)
            candidates = np.concatenate([slots_by_list[offsets[c] : offsets[c + 1]] for c in probe])
            if self.assign > 1:
                candidates = np.unique(candidates)
            if eligible is not None:
                candidates = candidates[eligible[candidates]]
            scored[q] = len(candidates)
            if not len(candidates):
                continue
            if fine == "flat":
                values = rows[candidates] @ queries[q]
            else:
                values = coarse[q, self._lists[candidates, 0]]
                for level in range(self.levels):
                    values = values + lut[q, level, self._codes[candidates, level]]
            take = min(k, len(candidates))
            best = np.argpartition(-values, take - 1)[:take] if take < len(values) else np.arange(len(values))
            best = best[np.lexsort((candidates[best], -values[best]))]
            ids[q, :take] = self.table.ids[candidates[best]]
            scores[q, :take] = values[best]
        return SearchResult(ids, scores, scored)

    # ---- persistence -----------------------------------------------------------------------------

    def _save(self, folder: Path) -> dict:
        state = super()._save(folder)
        used = self.table.used
        if self.centroids is not None:
            np.save(folder / "centroids.npy", self.centroids, allow_pickle=False)
        np.save(folder / "codebook.npy", self.codebook, allow_pickle=False)
        np.save(folder / "lists.npy", self._lists[:used], allow_pickle=False)
        np.save(folder / "codes.npy", self._codes[:used], allow_pickle=False)
        return {
            **state,
            "nlist": self.nlist,
            "levels": self.levels,
            "codewords": self.codewords,
            "assign": self.assign,
            "coarse": self.coarse,
            "place": self.place,
            "seed": self.seed,
        }

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> CIIndex:
        base = ExactIndex._load(folder, manifest)
        state = manifest["state"]
        index = cls(
            manifest["dim"],
            manifest["metric"],
            nlist=state["nlist"],
            levels=state["levels"],
            codewords=state["codewords"],
            assign=state["assign"],
            coarse=state["coarse"],
            place=state.get("place", "query"),  # indexes saved before the option placed by the query view
            seed=state["seed"],
        )
        index.table, index._rows, index._sq_norms = base.table, base._rows, base._sq_norms
        used = index.table.used
        if (folder / "centroids.npy").is_file():
            index.centroids = np.load(folder / "centroids.npy", allow_pickle=False)
        index.codebook = np.load(folder / "codebook.npy", allow_pickle=False)
        index._lists = np.load(folder / "lists.npy", allow_pickle=False)
        index._codes = np.load(folder / "codes.npy", allow_pickle=False)
        expected = {
            "lists.npy": (index._lists.shape, (used, index.assign)),
            "codes.npy": (index._codes.shape, (used, index.levels)),
        }
        for name, (found, wanted) in expected.items():
            if found != wanted:
                raise InvalidRequest(f"{folder}/{name} has shape {found}, expected {wanted}")
        if used and (index.centroids is None or index.centroids.shape != (index.nlist, index.dim)):
            raise InvalidRequest(
                f"{folder}/centroids.npy does not hold {index.nlist} centroids of dim {index.dim}"
            )
        if index.levels and index.codebook.shape[:2] != (index.levels, 1):
            raise InvalidRequest(f"{folder}/codebook.npy has shape {index.codebook.shape}")
        if used and (index._lists.max() >= index.nlist or index._lists.min() < 0):
            raise InvalidRequest(f"{folder}/lists.npy names a list outside 0..{index.nlist - 1}")
        if (
            used
            and index.levels
            and (index._codes.max() >= index.codebook.shape[2] or index._codes.min() < 0)
        ):
            raise InvalidRequest(f"{folder}/codes.npy names a codeword outside the codebook")
        return index


def _probed(order: np.ndarray, sizes: np.ndarray, nprobe: int, k: int) -> np.ndarray:
    """The nprobe nearest lists, then further ones, nearest first, until they hold k candidates."""
    held = np.cumsum(sizes[order])
    enough = int(np.searchsorted(held, k)) + 1  # lists needed to hold k (all of them if never)
    return order[: max(nprobe, min(enough, len(order)))]


def _views(views, dim: int, what: str) -> np.ndarray:
    if views is None:
        return np.zeros((0, dim), np.float32)
    array = np.asarray(views, np.float32)
    if array.ndim != 2 or array.shape[1] != dim or not np.isfinite(array).all():
        raise InvalidRequest(f"{what} must be a finite (n, {dim}) matrix, got shape {array.shape}")
    return np.ascontiguousarray(array)


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    grown = np.zeros((rows, array.shape[1]), array.dtype)
    grown[: len(array)] = array
    return grown
