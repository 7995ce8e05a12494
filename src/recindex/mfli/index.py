"""MFLI served as an `Index`: items found by walking their learned codes, with no ANN structure.

Vectors are the F facet vectors of an item concatenated (width F * d); a query is the F facet query
vectors concatenated, and the score is their inner product, i.e. the sum of the per-facet scores, so
exact search over the same vectors is the reference this index is measured against.

This module is MFLI's placement and routing; storage, filters, removal, the filtered fallback, the
trigger path's checks and persistence are the learned-index base's (`recindex.index.learned`).

Placement (per facet): an item's residual code from the codebook, then the leaf its code maps to in
the facet's code tree (`mfli.facet_tree`), then an append to that leaf's list. Leaf lists are FAISS
inverted lists (`mfli.lists`): per leaf the member slots and their full vectors, contiguous, so a
real-time insert is an append and the delta and the last full build are read together.

Routing, for a batch of queries and per facet: a beam over the code prefixes level by level, then the
best `leaves` under the beam by their centroids; their items are scanned inside FAISS's list scanner
(which also applies filters), best leaf first, until `candidates` (shared by the facets) are scored by
the full vectors; the facets' top k are merged. MFLI's partitions score themselves (compiled scans of
contiguous lists with a budget), so this index implements the base's `_rank` rather than `_route`. The
trigger path starts instead from the leaves the trigger items live in, sampled in proportion to how
many triggers share them.

Rebuild: every item coded again, leaves split and merged within `min_leaf` / `max_leaf`
(`FacetTree.build`), slots compacted. Ids never change; slots change only by a rebuild.

Choices of ours (the paper does not give them): merged score = sum over facets (the paper reranks
per index and takes the union); beam and leaf counts as search parameters; codes assigned from each
facet's direction (a model may scale facets in the merged vector); the rebuild bounds default to 1/10
and 10x the mean leaf size; leaf lists kept in FAISS rather than hand-written CSR arrays, for its
compiled scanner, id selectors and O(1) removal.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from recindex.errors import InvalidRequest
from recindex.index.base import Metric, SearchResult, top_k
from recindex.index.filters import Filter
from recindex.index.learned import Column, PartitionedIndex, number_codes, rescore_top_k
from recindex.index.learned.compressed import check_code_dims
from recindex.index.learned.fast_scan import CODE_DIMS, SAVED_BEFORE_CODE_DIMS
from recindex.mfli.facet_tree import FacetTree
from recindex.mfli.lists import STORAGES, LeafLists, saved_code_state
from recindex.quant.codebook import assign_codes, facet_view, fit_codebook, utilisation


class MFLIIndex(PartitionedIndex):
    backend = "mfli"
    # refine: with storage "pq4", the codes' best k * refine items per facet are rescored exactly
    default_search_params = {"beam": 32, "leaves": 16, "candidates": 20_000, "refine": 8}
    partitions_hold_removed = False  # FAISS lists drop a removed item at once
    compact_on_remove = False  # the lists hold slots: they change only with a rebuild
    has_triggers = True
    can_rebuild = True

    def __init__(
        self,
        dim: int,
        metric: Metric = "ip",
        *,
        facets: int = 1,
        levels: int = 2,
        codewords: int = 16,
        codebook: np.ndarray | None = None,
        min_leaf: int | None = None,
        max_leaf: int | None = None,
        seed: int = 0,
        storage: str = "flat",
        code_dims: int = CODE_DIMS,
        search_params=None,
    ):
        for name, value in (("facets", facets), ("levels", levels), ("codewords", codewords)):
            if not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"mfli {name} must be a positive integer, got {value!r}")
        # per slot: its leaf in each facet (-1: removed)
        super().__init__(dim, metric, search_params, {"leaf_of": Column(facets, np.int32, -1, "leaf_of.npy")})
        if metric == "l2":
            raise InvalidRequest("mfli scores by inner product (metric ip or cosine), not l2")
        if dim % facets:
            raise InvalidRequest(f"dim {dim} does not split into {facets} facets")
        self.facets, self.levels, self.codewords = facets, levels, codewords
        self.facet_dim = dim // facets
        self.min_leaf, self.max_leaf, self.seed = min_leaf, max_leaf, seed
        if storage not in STORAGES:
            raise InvalidRequest(f"mfli storage must be one of {STORAGES}, got {storage!r}")
        check_code_dims(code_dims, dim)  # dimensions per 4-bit code, used by storage "pq4"
        self.storage, self.code_dims = storage, code_dims
        self.codebook: np.ndarray | None = None
        if codebook is not None:
            self.codebook = self._checked_codebook(codebook)
        self._trees: list[FacetTree] = []
        self._lists: list[LeafLists] = []  # per facet: leaf -> member slots and vectors
        self._loaded_codes: list[dict | None] = []  # per facet: "pq4" quantizer state read from a folder
        self.placed_since_rebuild = 0  # items inserted in real time since the last rebuild (the delta)

    @property
    def _leaf_of(self) -> np.ndarray:
        return self.store.columns["leaf_of"]

    @property
    def _rows(self) -> np.ndarray:
        return self.store.rows

    def _checked_codebook(self, codebook: np.ndarray) -> np.ndarray:
        codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        expected = (self.levels, self.facets, None, self.facet_dim)
        if codebook.ndim != 4 or any(
            e is not None and e != s for e, s in zip(expected, codebook.shape, strict=True)
        ):
            raise InvalidRequest(
                f"codebook shape {codebook.shape} does not fit (levels, facets, codewords, facet dim) = "
                f"({self.levels}, {self.facets}, M, {self.facet_dim})"
            )
        self.codewords = codebook.shape[2]
        return codebook

    # ---- placement -------------------------------------------------------------------------------

    def _place(self, slots, new, vectors, placement) -> None:
        moved = slots[~new]
        for facet, lists in enumerate(self._lists):  # a changed vector is placed again
            lists.remove(moved, self._leaf_of[moved, facet])
        if not self._trees:  # the first add fits the codebook (when none was given) and builds the trees
            if self.codebook is None:
                self.codebook = fit_codebook(
                    _directions(vectors, self.facets),
                    self.levels,
                    min(self.codewords, len(vectors)),
                    seed=self.seed,
                )
                self.codewords = self.codebook.shape[2]
            self.rebuild()
            return
        self._insert(slots, vectors)

    def _insert(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """Real-time insertion: codes by the codebook, then the leaf the code maps to (O(L*F*M*d)),
        then an append to that leaf's list."""
        facet_vectors = _directions(vectors, self.facets)
        codes = assign_codes(self.codebook, facet_vectors)
        for facet, tree in enumerate(self._trees):
            raw = number_codes(codes[:, facet], self.codewords)
            leaves = np.fromiter(
                (
                    tree.leaf_for(
                        int(raw[row]), facet_vectors[row, facet], self.codebook, facet, codes[row, facet]
                    )
                    for row in range(len(slots))
                ),
                np.int64,
                len(slots),
            )
            self._leaf_of[slots, facet] = leaves
            if not self._lists[facet].room_for(tree.n_leaves):  # the new leaves' items too, same codes
                self._lists[facet] = self._filled_lists(facet, tree.n_leaves, self._lists[facet].code_state())
            else:
                self._lists[facet].add(slots, vectors, leaves)
        self.placed_since_rebuild += len(slots)

    def _filled_lists(self, facet: int, n_leaves: int, codes: dict | None) -> LeafLists:
        """A facet's lists built afresh from item -> leaf (after load, or when new leaves outgrow the
        spare lists: rare, as the room doubles each time); `codes`: the "pq4" quantizer to keep."""
        lists = LeafLists(self.dim, n_leaves, self.storage, codes, self.code_dims)
        live = np.flatnonzero(self._leaf_of[: self.table.used, facet] >= 0)
        lists.add(live, self._rows[live], self._leaf_of[live, facet].astype(np.int64))
        return lists

    def _unplace(self, slots: np.ndarray) -> None:
        for facet, lists in enumerate(self._lists):
            lists.remove(slots, self._leaf_of[slots, facet])
        self._leaf_of[slots] = -1

    # ---- rebuild: leaves from codes, split and merge ----------------------------------------------

    def rebuild(self, min_leaf: int | None = None, max_leaf: int | None = None) -> dict:
        """Recompute every live item's codes and leaves, rebalance them, and fold the delta lists in."""
        with self._guard:
            return self._rebuild(min_leaf, max_leaf)

    def _rebuild(self, min_leaf: int | None, max_leaf: int | None) -> dict:
        if self.codebook is None:
            raise InvalidRequest("the index has no codebook yet: add items first")
        if self.table.dead:
            self._compact()
        used = self.table.used
        vectors = self._rows[:used]
        facet_vectors = _directions(vectors, self.facets)
        codes = assign_codes(self.codebook, facet_vectors)
        # the mean size of the leaves the codes actually form (far fewer than M^L codes may be used)
        distinct = np.mean(
            [len(np.unique(number_codes(codes[:, f], self.codewords))) for f in range(self.facets)]
        )
        mean_leaf = used / max(1.0, float(distinct))
        low = min_leaf if min_leaf is not None else self.min_leaf
        high = max_leaf if max_leaf is not None else self.max_leaf
        low = max(1, int(low if low is not None else mean_leaf / 10))
        high = max(low * 2, int(high if high is not None else math.ceil(mean_leaf * 10)))
        self._trees, self._lists = [], []
        report = {"min_leaf": low, "max_leaf": high, "facets": []}
        slots = np.arange(used, dtype=np.int64)
        for facet in range(self.facets):
            tree, leaf_of, stats = FacetTree.build(
                codes[:, facet],
                facet_vectors[:, facet],
                self.codebook,
                facet,
                self.codewords,
                low,
                high,
                self.seed,
            )
            self._trees.append(tree)
            self._leaf_of[:used, facet] = leaf_of
            lists = LeafLists(self.dim, tree.n_leaves, self.storage, code_dims=self.code_dims)
            lists.add(slots, vectors, leaf_of.astype(np.int64))
            self._lists.append(lists)
            report["facets"].append(stats)
        self.placed_since_rebuild = 0
        return report

    def leaf_sizes(self) -> list[np.ndarray]:
        """Live items per leaf, per facet (for histograms)."""
        return [
            lists.sizes[: tree.n_leaves].copy() for tree, lists in zip(self._trees, self._lists, strict=True)
        ]

    def leaves_of_items(self, facet: int) -> np.ndarray:
        """Item id -> its leaf in `facet`, over ids 0..max id (-1 for ids not in the index)."""
        live = self.table.live_slots()
        return self.by_item_id(live, self._leaf_of[live, facet])

    def codeword_use(self) -> dict:
        """Share of codewords the live items' codes use, per level and facet, and leaves used."""
        live = self.table.live_slots()
        codes = assign_codes(self.codebook, _directions(self._rows[live], self.facets))
        return utilisation(codes, self.codewords)

    def _slot_partitions(self, live: np.ndarray) -> dict[str, np.ndarray]:
        return {f"facet {f}": self._leaf_of[live, f].astype(np.int64) for f in range(self.facets)}

    def _partition_details(self) -> dict:
        return {"codeword_use": self.codeword_use()}

    # ---- routing and scanning --------------------------------------------------------------------

    def _rank(self, queries: np.ndarray, k: int, params: dict, eligible: np.ndarray | None) -> SearchResult:
        leaves, budget, beam = params["leaves"], params["candidates"], params["beam"]
        if eligible is not None:
            # A filter passing a share p of the items leaves about p of each walked leaf: walk 1/p
            # times as many leaves (and candidates) to keep the number of eligible ones.
            share = max(float(eligible.mean()), 1e-6)
            leaves, budget, beam = (math.ceil(x / share) for x in (leaves, budget, beam))
        facet_queries = facet_view(queries, self.facets)
        per_facet_budget = max(1, math.ceil(budget / self.facets))
        chosen = [
            tree.best_leaves(facet_queries[:, f], self.codebook, f, beam, leaves)
            for f, tree in enumerate(self._trees)
        ]
        ids, scores = self._scan(queries, k, chosen, per_facet_budget, eligible, params["refine"])
        scored = sum(
            lists.scanned(picked, per_facet_budget) for lists, picked in zip(self._lists, chosen, strict=True)
        )
        return SearchResult(ids, scores, scored)

    def _scan(self, queries, k, chosen, budget, eligible, refine: int) -> tuple[np.ndarray, np.ndarray]:
        """Each facet's leaves scanned by the full (all-facet) score, the facets' top-k merged. With
        4-bit codes each facet keeps its k * refine best estimates, all rescored exactly."""
        depth = k * refine if self.storage == "pq4" else k
        found = [
            lists.search(queries, depth, picked, budget, eligible)
            for lists, picked in zip(self._lists, chosen, strict=True)
        ]
        slots = np.concatenate([i for _, i in found], axis=1)
        if self.storage == "pq4":  # an item found by two facets counts once
            slots, scores = rescore_top_k(queries, self._rows, slots, k, overlapping=len(found) > 1)
            return self.store.ids_of(slots), scores
        scores = np.concatenate([s for s, _ in found], axis=1)
        if len(found) > 1:
            # an item in the leaves of several facets is found once per facet, with the same score
            order = np.lexsort((slots, -scores), axis=1)
            slots = np.take_along_axis(slots, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            repeated = np.zeros_like(slots, dtype=bool)
            repeated[:, 1:] = (slots[:, 1:] == slots[:, :-1]) & (slots[:, 1:] >= 0)
            scores[repeated], slots[repeated] = -np.inf, -1
            positions, scores = top_k(scores, k)
            slots = np.take_along_axis(slots, positions, axis=1)
        if self.storage == "fp16":
            # the lists hold float16 copies: rescore the kept items with their float32 vectors
            scores, slots = self._rescored(queries, slots)
        scores = scores.astype(np.float32)
        scores[slots < 0] = -np.inf
        return self.store.ids_of(slots), scores

    def _rescored(self, queries: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows[np.where(slots >= 0, slots, 0)]  # (n, k, dim)
        exact = np.einsum("nkd,nd->nk", rows, queries)
        exact[slots < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")
        return np.take_along_axis(exact, order, 1), np.take_along_axis(slots, order, 1)

    # ---- item to item ------------------------------------------------------------------------------

    def trigger_params(self) -> dict[str, int]:
        return {"leaves": 16, "seed": 0, "candidates": self.search_params["candidates"]}

    def _triggers(self, slots: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        """The leaves of the triggers' codes, sampled in proportion to how many triggers share each
        (facet, leaf), their items reranked by the triggers' mean vector."""
        pairs = np.stack(
            [np.repeat(np.arange(self.facets), len(slots)), self._leaf_of[slots].T.reshape(-1)], axis=1
        )
        unique, counts = np.unique(pairs, axis=0, return_counts=True)
        rng = np.random.default_rng(params["seed"])
        take = min(params["leaves"], len(unique))
        picked = unique[rng.choice(len(unique), take, replace=False, p=counts / counts.sum())]
        chosen = []
        for facet in range(self.facets):
            mine = picked[picked[:, 0] == facet, 1].astype(np.int64)
            row = np.full((1, max(1, len(mine))), -1, np.int64)
            row[0, : len(mine)] = mine
            chosen.append(row)
        eligible = self.eligible(flt)
        budget = max(1, math.ceil(params["candidates"] / self.facets))
        query = self._rows[slots].mean(axis=0, keepdims=True)
        norm = float(np.linalg.norm(query))
        query = query / norm if norm > 0 else query  # scored like the service's vector path
        fetch = k + len(slots)  # the triggers themselves are found too, and dropped
        ids, scores = self._scan(query, fetch, chosen, budget, eligible, self.search_params["refine"])
        keep = (ids[0] >= 0) & ~np.isin(ids[0], self.table.ids[slots])
        out_ids = np.full((1, k), -1, np.int64)
        out_scores = np.full((1, k), -np.inf, np.float32)
        kept = ids[0][keep][:k]
        out_ids[0, : len(kept)], out_scores[0, : len(kept)] = kept, scores[0][keep][:k]
        scored = sum(lists.scanned(row, budget) for lists, row in zip(self._lists, chosen, strict=True))
        return SearchResult(out_ids, out_scores, scored)

    # ---- persistence -----------------------------------------------------------------------------

    def _save_state(self, folder: Path) -> dict:
        if self.codebook is not None:
            np.save(folder / "codebook.npy", self.codebook, allow_pickle=False)
        for facet, tree in enumerate(self._trees):
            tree.save(folder / f"facet{facet}")
        for facet, lists in enumerate(self._lists):
            lists.save_code_state(folder / f"facet{facet}")
        return {
            "facets": self.facets,
            "levels": self.levels,
            "codewords": self.codewords,
            "min_leaf": self.min_leaf,
            "max_leaf": self.max_leaf,
            "seed": self.seed,
            "storage": self.storage,
            "code_dims": self.code_dims,
            "trees": len(self._trees),
        }

    @classmethod
    def _restore(cls, folder: Path, manifest: dict) -> MFLIIndex:
        state = manifest["state"]
        saved = folder / "codebook.npy"
        codebook = np.load(saved, allow_pickle=False) if saved.is_file() else None
        index = cls(
            manifest["dim"],
            manifest["metric"],
            facets=state["facets"],
            levels=state["levels"],
            codewords=state["codewords"],
            codebook=codebook,
            min_leaf=state["min_leaf"],
            max_leaf=state["max_leaf"],
            seed=state["seed"],
            storage=state.get("storage", "flat"),
            code_dims=state.get("code_dims", SAVED_BEFORE_CODE_DIMS),
        )
        index._trees = [FacetTree.load(folder / f"facet{f}") for f in range(state["trees"])]
        index._loaded_codes = [saved_code_state(folder / f"facet{f}") for f in range(state["trees"])]
        return index

    def _loaded(self, folder: Path) -> None:
        self._lists = [
            self._filled_lists(f, tree.n_leaves, codes)
            for f, (tree, codes) in enumerate(zip(self._trees, self._loaded_codes, strict=True))
        ]


def _directions(vectors: np.ndarray, facets: int) -> np.ndarray:
    """(N, F * d) -> (N, F, d) unit facet vectors (a zero facet stays zero): what codes are assigned
    from. A model may scale an item's facets in its merged vector (MFLI rescales the facets of an item
    without a trained ID); the scale changes its score, not where it belongs in the code tree."""
    view = facet_view(vectors, facets)
    norms = np.linalg.norm(view, axis=-1, keepdims=True)
    return view / np.where(norms > 0, norms, 1.0)
