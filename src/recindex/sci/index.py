"""The `ci` index backend: SCI's consistent dual-view index.

Build (the first `add`):
1. coarse: spherical k-means in the *query view*, on the items read by the query tower (f_q(I), the
   `query_views` option, by item id) and, with `coarse="items+queries"`, on logged query vectors
   f_q(Q) too (`logged_queries`: one per training user). Each item goes to the list of its query view's
   nearest centroid (the `assign` nearest with multi-assignment). The default is the items alone (ours;
   the design notes suggested both): on Beauty's validation split adding the logged queries cut
   routing consistency and Recall@10 (docs/sci.md, CI's variants on validation);
2. fine: residual quantization in the *item view*: b_i - c_k(i) (the item vector minus its list's
   centroid; meaningful because SymmAligner put both views in one space), `levels` x `codewords`
   RQ-KMeans (our default 2 x 256, as the design notes suggest).

Search: a query vector (the query tower's, as always) is routed to its `nprobe` nearest centroids:
query view against query view, the way the lists were formed. The items of those lists are scored by
the cross-tower score the model was trained on, <f_q(Q), f_i(I)>: exactly on the stored item vectors
(`fine="flat"`, the default) or on their RQ decode c_k(i) + sum of codewords (`fine="rq"`, the
compressed path of an IVF-RQ index), or, for an index built with `compress="pq4"`, on 4-bit PQ codes
(one per `code_dims` dimensions) scanned by FAISS's fast-scan kernel whose best k x `refine` estimates
are rescored exactly (`fine="pq4"`, then the default; `recindex.index.learned.compressed`). A row
with fewer than k eligible candidates probes further lists, nearest first, until it has k.

Coarse id + fine codes are the item's coarse-to-fine semantic ID (`semantic_ids`).

`place="item"` (ours, an option) keeps the query-view centroids but puts each item in the list whose
centroid, read as a query, scores its item vector highest: the lists then hold what their queries
score, not what their queries resemble. It ties on Beauty's validation split with SymmAligner towers
and loses with plain ones (their item vectors crowd into a few lists): query view is the default.

The build's check (`min_agreement`, ours): the lists are only worth probing if an item's query view
stands for the item vector the queries score. The first add measures, over the items placed by a query
view that have a non-zero item vector, the mean cos(f_q(I), f_i(I)) and the share whose query view and
item vector pick the same list (`recindex.sci.alignment.list_agreement`, kept in the manifest), and
refuses to build below `min_agreement` mean cos, naming what to do instead. The class asks for nothing by
default; the `ci` spec, which `recindex index build` reads, asks for CHECKED_AGREEMENT.

Writes after the build: an item gets its list from its query view when the `query_views` given at build
time cover its id (and it keeps the vector it had: an upsert that replaces the vector is placed by the
new one), or when it comes through `add_with_views` (the service does this for items upserted
by content); otherwise from its item vector (the contract's `add` hands a backend one vector per item;
routing a new item by its item view is sound to the degree the towers are aligned, which is what
SymmAligner trains). Its fine codes come from the trained codebook.

This module decides only placement (the lists and codes of an item) and routing (the lists a query
probes, and the compressed score of `fine="rq"`); storage, filters, removal, batched rescoring and
persistence are the learned-index base's (`recindex.index.learned`). The lists are not a FAISS IVF
(FAISS places an item by the vector it stores; CI places by one view and scores another).
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.base import Metric, SearchResult, as_ids, as_matrix
from recindex.index.learned import Column, Lists, PartitionedIndex, Route, number_codes
from recindex.index.learned.candidates import probes_within_cosine
from recindex.index.learned.compressed import CompressedPartitions, check_compression
from recindex.index.learned.fast_scan import CODE_DIMS, SAVED_BEFORE_CODE_DIMS
from recindex.quant.codebook import assign_codes, fit_codebook
from recindex.sci.alignment import check_agreement, list_agreement
from recindex.sci.rq_scores import rq_decode_scorer

COARSE = ("items", "items+queries")
PLACE = ("query", "item")
FINE = ("flat", "rq", "pq4")
MAX_LISTS = 1 << 16
MAX_CODEWORDS = 1 << 12
# The least mean cos(f_q(I), f_i(I)) a bundle's build accepts (the `min_agreement` of the `ci` spec; the
# class itself checks nothing unless asked). Towers CI serves well are far above it and towers whose
# lists miss most of exact search's top 100 far below (docs/sci.md, "Towers whose two views disagree").
CHECKED_AGREEMENT = 0.4


def default_nlist(n: int) -> int:
    """The power of two nearest sqrt(n) (128 for a 12k-item catalogue), at least 1."""
    return max(1, min(n, 2 ** round(math.log2(max(1.0, math.sqrt(n))))))


class CIIndex(PartitionedIndex):
    backend = "ci"
    # nprobe 32, as the FAISS IVF backend: 8 of Beauty's 128 lists find 72% of exact search's top 100
    # even on towers CI serves well, 32 find 92% (docs/sci.md).
    # refine: with fine="pq4", the codes' best k * refine items are rescored exactly
    # gap: of the nprobe lists, walk only those whose centroid's cosine with the query is within gap of
    # the nearest one's (0: all nprobe)
    default_search_params = {"nprobe": 32, "fine": "flat", "refine": 8, "gap": 0.0}

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
        min_agreement: float = 0.0,
        compress: str = "none",
        code_dims: int = CODE_DIMS,
        seed: int = 0,
    ):
        if metric not in ("ip", "cosine"):
            raise InvalidRequest(f"a ci index scores by inner product (ip or cosine), got {metric!r}")
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
        check_compression(compress, code_dims, dim)
        if not isinstance(min_agreement, (int, float)) or not 0.0 <= min_agreement <= 1.0:
            raise InvalidRequest(
                f"min_agreement must be a number in 0..1 (0: no check), got {min_agreement!r}"
            )
        columns = {
            "lists": Column(assign, np.int64, 0, "lists.npy"),  # per slot: its lists, nearest first
            "codes": Column(levels, np.int64, 0, "codes.npy"),  # per slot: its fine codes
        }
        super().__init__(dim, metric, search_params, columns)
        self.nlist, self.levels, self.codewords, self.assign = nlist, levels, codewords, assign
        self.coarse, self.place, self.seed = coarse, place, seed
        self.compress, self.code_dims = compress, code_dims
        self._compressed: CompressedPartitions | None = None  # the lists again, as 4-bit codes
        self._saved_codes: dict | None = None  # their quantizer, read by `_restore`
        if compress == "pq4" and "fine" not in (search_params or {}):
            self.search_params = {**self.search_params, "fine": "pq4"}
        self.min_agreement = float(min_agreement)
        self.view_agreement: dict | None = None  # measured at the build (`list_agreement`), when it can be
        self.query_views = _views(query_views, dim, "query_views")
        self.logged_queries = _views(logged_queries, dim, "logged_queries")
        self.centroids: np.ndarray | None = None  # (nlist, d), query view
        self.codebook = np.zeros((0, 1, 0, dim), np.float32)  # (levels, 1, codewords, d), item view
        self._lists: Lists | None = None  # slots by list, built on the first search after a write
        self._given_views: dict[int, np.ndarray] = {}  # set by `add_with_views` for one add

    @property
    def places_by_query_view(self) -> bool:
        return self.place == "query"

    # ---- build and placement ---------------------------------------------------------------------

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

    def _routing_views(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each item's routing view, whether it is a query view rather than the item vector itself)."""
        views = vectors.copy()
        known = ids < len(self.query_views)
        # a build-time view stands for the item's vector then: a replaced vector places the item itself
        slots = self.table.lookup(ids)
        stored = slots >= 0
        known[stored] &= (self.store.rows[slots[stored]] == vectors[stored]).all(axis=1)
        views[known] = self.query_views[ids[known]]
        for row, item in enumerate(ids.tolist()):
            if item in self._given_views:
                views[row] = self._given_views[item]
                known[row] = True
        return views, known

    def _build(self, views: np.ndarray, vectors: np.ndarray, viewed: np.ndarray) -> None:
        nlist = self.nlist or default_nlist(len(views))
        if nlist > len(views):
            raise InvalidRequest(f"nlist={nlist} is more than the {len(views)} items of the first add")
        sample = views
        if self.coarse == "items+queries" and len(self.logged_queries):
            sample = np.concatenate([views, self.logged_queries])
        # min_points_per_centroid=1: no FAISS warning on a small catalogue (index.faiss_layers)
        kmeans = faiss.Kmeans(
            self.dim, nlist, niter=20, seed=self.seed, spherical=True, min_points_per_centroid=1
        )
        kmeans.train(np.ascontiguousarray(sample, np.float32))
        centroids = kmeans.centroids.astype(np.float32)
        self.view_agreement = (
            list_agreement(views[viewed], vectors[viewed], centroids) if viewed.any() else None
        )
        check_agreement(self.view_agreement, self.min_agreement)
        self.centroids, self.nlist = centroids, nlist
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
        take = min(self.assign, self.nlist)
        out = np.empty((len(views), take), np.int64)
        step = max(1, (1 << 24) // self.nlist)  # rows per block: a 64 MB score matrix, not n x nlist
        for start in range(0, len(views), step):
            scores = views[start : start + step] @ self.centroids.T
            part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
            order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
            out[start : start + step] = np.take_along_axis(part, order, axis=1)
        return out

    def _placement(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        views, viewed = self._routing_views(ids, vectors)
        if self.centroids is None:
            self._build(views, vectors, viewed)
        lists = self._nearest_lists(self._placing(views, vectors))
        if lists.shape[1] < self.assign:  # fewer lists than the multi-assignment asks: repeat the nearest
            lists = np.concatenate([lists, np.repeat(lists[:, :1], self.assign - lists.shape[1], 1)], 1)
        codes = np.zeros((len(ids), self.levels), np.int64)
        if self.levels:
            residuals = vectors - self.centroids[lists[:, 0]]
            codes = assign_codes(self.codebook, residuals[:, None, :])[:, 0, :].astype(np.int64)
        return lists, codes

    def _place(self, slots, new, vectors, placement) -> None:
        lists, codes = placement
        old = np.where(new[:, None], -1, self.store.columns["lists"][slots])
        self.store.columns["lists"][slots] = lists
        self.store.columns["codes"][slots] = codes
        self._lists = None
        if self.compress == "pq4":
            if self._compressed is None:
                self._compressed = self._new_compressed()
            self._compressed.placed(slots, vectors, lists, old)

    def _new_compressed(self) -> CompressedPartitions:
        return CompressedPartitions(self.dim, self.nlist, self._saved_codes, self.code_dims)

    def _compacted(self, keep: np.ndarray) -> None:
        self._lists = None
        if self._compressed is not None:
            used, rows, lists = self.table.used, self.store.rows, self.store.columns["lists"]
            self._compressed = self._compressed.rebuilt(np.arange(used), rows[:used], lists[:used])

    def lists(self) -> Lists:
        """The slots of each list (live or not: removed ones are masked at search time)."""
        if self._lists is None:
            self._lists = Lists.of(self.store.columns["lists"][: self.table.used], self.nlist)
        return self._lists

    def semantic_ids(self, ids: np.ndarray) -> np.ndarray:
        """(n, 1 + levels) coarse list + fine codes of live items: their coarse-to-fine semantic IDs."""
        slots = self.table.lookup(np.asarray(ids, np.int64))
        if (slots < 0).any():
            raise InvalidRequest(f"item {int(np.asarray(ids)[slots < 0][0])} is not in the index")
        columns = self.store.columns
        return np.concatenate([columns["lists"][slots, :1], columns["codes"][slots]], axis=1)

    # ---- routing ---------------------------------------------------------------------------------

    def _route(self, queries: np.ndarray, k: int, params: dict, eligible: np.ndarray | None) -> Route:
        fine = params["fine"]
        if fine not in FINE:
            raise InvalidRequest(f"search parameter fine must be one of {', '.join(FINE)}, got {fine!r}")
        if fine == "pq4" and self.compress != "pq4":
            raise InvalidRequest("this ci index holds no 4-bit codes: build it with compress=pq4")
        if fine == "rq" and not self.levels:
            raise InvalidRequest("this ci index has no fine codes (levels=0): search it with fine=flat")
        own_copy = fine == "pq4" and eligible is None  # the pq4 scan reads its own copy of the lists
        lists = None if own_copy else self.lists()
        sizes = self._compressed.lists.sizes if own_copy else lists.eligible_sizes(eligible)
        coarse = queries @ self.centroids.T  # (Q, nlist)
        nprobe = min(int(params["nprobe"]), self.nlist)
        probes = probes_within_cosine(coarse, queries, sizes, nprobe, k, params["gap"])
        columns = self.store.columns
        score = rq_decode_scorer(queries, coarse, self.codebook, columns) if fine == "rq" else None
        return Route(probes, lists, score, overlapping=self.assign > 1)

    def _rank(self, queries: np.ndarray, k: int, params: dict, eligible: np.ndarray | None) -> SearchResult:
        if params["fine"] != "pq4":
            return super()._rank(queries, k, params, eligible)
        probes = self._route(queries, k, params, eligible).probes
        slots, scores, scanned = self._compressed.ranked(
            queries, probes, k, params["refine"], self.store.rows, eligible, overlapping=self.assign > 1
        )
        return SearchResult(self.store.ids_of(slots), scores, scanned)

    # ---- reports ---------------------------------------------------------------------------------

    def _slot_partitions(self, live: np.ndarray) -> dict[str, np.ndarray]:
        first = self.store.columns["lists"][live, 0]
        partitions = {"coarse lists": first}
        if self.levels:
            codes = np.concatenate([first[:, None], self.store.columns["codes"][live]], axis=1)
            number = number_codes(codes, [self.nlist] + [self.codebook.shape[2]] * self.levels)
            # Numbered by the codes that occur: the code space (nlist x codewords^levels) is mostly
            # unused by design, and "empty" counts only mean something over the numbers in use.
            partitions["leaves"] = np.unique(number, return_inverse=True)[1].reshape(-1)
        return partitions

    # ---- persistence -----------------------------------------------------------------------------

    def _save_state(self, folder: Path) -> dict:
        if self.centroids is not None:
            np.save(folder / "centroids.npy", self.centroids, allow_pickle=False)
        np.save(folder / "codebook.npy", self.codebook, allow_pickle=False)
        if self._compressed is not None:
            self._compressed.save(folder)
        return {
            "storage": "float32",  # what the exact backend's files record: these are its files too
            "nlist": self.nlist,
            "levels": self.levels,
            "codewords": self.codewords,
            "assign": self.assign,
            "coarse": self.coarse,
            "place": self.place,
            "seed": self.seed,
            "min_agreement": self.min_agreement,
            "view_agreement": self.view_agreement,
            "compress": self.compress,
            "code_dims": self.code_dims,
        }

    @classmethod
    def _restore(cls, folder: Path, manifest: dict) -> CIIndex:
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
            min_agreement=state.get("min_agreement", 0.0),  # or checked nothing
            compress=state.get("compress", "none"),  # indexes saved before the option held no codes
            code_dims=state.get("code_dims", SAVED_BEFORE_CODE_DIMS),
            seed=state["seed"],
        )
        index._saved_codes = CompressedPartitions.saved_state(folder)
        index.view_agreement = state.get("view_agreement")
        if (folder / "centroids.npy").is_file():
            index.centroids = np.load(folder / "centroids.npy", allow_pickle=False)
        index.codebook = np.load(folder / "codebook.npy", allow_pickle=False)
        return index

    def _loaded(self, folder: Path) -> None:
        used = self.table.used
        lists, codes = self.store.columns["lists"][:used], self.store.columns["codes"][:used]
        if used and (self.centroids is None or self.centroids.shape != (self.nlist, self.dim)):
            raise InvalidRequest(
                f"{folder}/centroids.npy does not hold {self.nlist} centroids of dim {self.dim}"
            )
        if self.levels and self.codebook.shape[:2] != (self.levels, 1):
            raise InvalidRequest(f"{folder}/codebook.npy has shape {self.codebook.shape}")
        if used and (lists.max() >= self.nlist or lists.min() < 0):
            raise InvalidRequest(f"{folder}/lists.npy names a list outside 0..{self.nlist - 1}")
        if used and self.levels and (codes.max() >= self.codebook.shape[2] or codes.min() < 0):
            raise InvalidRequest(f"{folder}/codes.npy names a codeword outside the codebook")
        if self.compress == "pq4" and used:
            if self._saved_codes is None:
                raise InvalidRequest(f"{folder} holds no pq4_centroids.npy / pq4_references.npy")
            self._compressed = self._new_compressed()
            self._compressed.placed(np.arange(used), self.store.rows[:used], lists)


def _views(views, dim: int, what: str) -> np.ndarray:
    if views is None:
        return np.zeros((0, dim), np.float32)
    array = np.asarray(views, np.float32)
    if array.ndim != 2 or array.shape[1] != dim or not np.isfinite(array).all():
        raise InvalidRequest(f"{what} must be a finite (n, {dim}) matrix, got shape {array.shape}")
    return np.ascontiguousarray(array)
