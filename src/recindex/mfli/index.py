"""MFLI served as an `Index`: items found by walking their learned codes, with no ANN structure.

Vectors are the F facet vectors of an item concatenated (width F * d); a query is the F facet query
vectors concatenated, and the score is their inner product, i.e. the sum of the per-facet scores, so
exact search over the same vectors is the reference this index is measured against.

Structures (per facet):
- item -> leaf: an (items x F) integer table;
- leaf -> items: per leaf, the member slots and their full vectors, contiguous, in FAISS inverted
  lists (`mfli.lists`); a real-time insert appends to its leaf's list, so the delta and the last
  full build are read together;
- each leaf's centroid (the reconstruction of its code, or a k-means centre after a split) and its
  prefix (the code without its last digit), which places it in the code tree.

Search, for a batch of queries and per facet: score the level's codewords and keep a beam of the best
code prefixes, level by level (inner products add up along a residual code, so a prefix's score is
the sum of its codewords' scores); score the leaves under the beam by their centroids and take the
best `leaves`; scan their items, best leaf first, until `candidates` (shared by the facets) are
scored, by the full vectors (the sum over facets) and inside FAISS's list scanner, which also
applies filters; merge the facets' top k. The trigger path (`search_triggers`) starts instead from
the leaves the trigger items live in, sampled in proportion to how many triggers share them.

Rebuild (split-and-merge): leaves are the items' codes, then a leaf larger than `max_leaf` is split
by k-means of its members into leaves near the target size, and one smaller than `min_leaf` is
merged into the nearest leaf (by centroid) under the same prefix, or anywhere when it is alone
there. A raw code keeps a map to the leaves it became, so an item inserted later with that code
lands in the nearest of them. Ids never change; slots are compacted only by a rebuild.

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
from recindex.index.attributes import attribute_rows
from recindex.index.base import MAX_K, BaseIndex, Capabilities, Metric, SearchResult, top_k
from recindex.index.filters import Filter, as_filter
from recindex.index.slots import SlotTable
from recindex.mfli.lists import STORAGES, LeafLists
from recindex.quant.codebook import assign_codes, facet_view, fit_codebook, reconstruct, utilisation


class MFLIIndex(BaseIndex):
    backend = "mfli"
    default_search_params = {"beam": 32, "leaves": 16, "candidates": 20_000}

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
        search_params=None,
    ):
        super().__init__(dim, metric, search_params)
        if metric == "l2":
            raise InvalidRequest("mfli scores by inner product (metric ip or cosine), not l2")
        for name, value in (("facets", facets), ("levels", levels), ("codewords", codewords)):
            if not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"mfli {name} must be a positive integer, got {value!r}")
        if dim % facets:
            raise InvalidRequest(f"dim {dim} does not split into {facets} facets")
        self.facets, self.levels, self.codewords = facets, levels, codewords
        self.facet_dim = dim // facets
        self.min_leaf, self.max_leaf, self.seed = min_leaf, max_leaf, seed
        if storage not in STORAGES:
            raise InvalidRequest(f"mfli storage must be one of {STORAGES}, got {storage!r}")
        self.storage = storage
        self.codebook: np.ndarray | None = None
        if codebook is not None:
            self.codebook = self._checked_codebook(codebook)
        self.table = SlotTable()
        self._rows = np.empty((0, dim), np.float32)
        self._leaf_of = np.empty((0, facets), np.int32)
        self._trees: list[_FacetTree] = []
        self._lists: list[LeafLists] = []  # per facet: leaf -> member slots and vectors
        self.placed_since_rebuild = 0  # items inserted in real time since the last rebuild (the delta)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            upsert=True,
            remove=True,
            filter="native",
            persist=True,
            attributes=True,
            triggers=True,
            rebuild=True,
        )

    def __len__(self) -> int:
        return len(self.table)

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

    # ---- writes ----------------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, vectors: np.ndarray, attributes) -> None:
        slots = self.table.lookup(ids)
        old = slots >= 0
        if old.any():
            subset = attribute_rows(attributes, old)
            self.table.overwrite(slots[old], subset)
            for facet, lists in enumerate(self._lists):  # a changed vector is placed again
                lists.remove(slots[old], self._leaf_of[slots[old], facet])
        new = ~old
        if new.any():
            subset = attribute_rows(attributes, new)
            slots[new] = self.table.append(ids[new], subset)
            self._ensure_rows(self.table.used)
        self._rows[slots] = vectors
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
        self._place(slots, vectors)

    def _place(self, slots: np.ndarray, vectors: np.ndarray) -> None:
        """Real-time insertion: codes by the codebook, then the leaf the code maps to (O(L*F*M*d)),
        then an append to that leaf's list."""
        facet_vectors = _directions(vectors, self.facets)
        codes = assign_codes(self.codebook, facet_vectors)
        for facet, tree in enumerate(self._trees):
            raw = _raw_codes(codes[:, facet], self.codewords)
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
            if not self._lists[facet].room_for(tree.n_leaves):
                self._lists[facet] = self._filled_lists(facet, tree.n_leaves)  # the new leaves' items too
            else:
                self._lists[facet].add(slots, vectors, leaves)
        self.placed_since_rebuild += len(slots)

    def _filled_lists(self, facet: int, n_leaves: int) -> LeafLists:
        """A facet's lists built afresh from item -> leaf (after load, or when new leaves outgrow the
        spare lists: rare, as the room doubles each time)."""
        lists = LeafLists(self.dim, n_leaves, self.storage)
        live = np.flatnonzero(self._leaf_of[: self.table.used, facet] >= 0)
        lists.add(live, self._rows[live], self._leaf_of[live, facet].astype(np.int64))
        return lists

    def _ensure_rows(self, n: int) -> None:
        if n <= len(self._rows):
            return
        capacity = max(n, 2 * len(self._rows), 1024)
        rows = np.zeros((capacity, self.dim), np.float32)
        rows[: len(self._rows)] = self._rows
        leaf_of = np.full((capacity, self.facets), -1, np.int32)
        leaf_of[: len(self._leaf_of)] = self._leaf_of
        self._rows, self._leaf_of = rows, leaf_of

    def _remove(self, ids: np.ndarray) -> int:
        slots = self.table.lookup(ids)
        slots = slots[slots >= 0]
        self.table.kill(slots)
        for facet, lists in enumerate(self._lists):
            lists.remove(slots, self._leaf_of[slots, facet])
        self._leaf_of[slots] = -1
        return len(slots)

    # ---- rebuild: leaves from codes, split and merge ----------------------------------------------

    def rebuild(self, min_leaf: int | None = None, max_leaf: int | None = None) -> dict:
        """Recompute every live item's codes and leaves, rebalance them, and fold the delta lists in."""
        with self._guard:
            return self._rebuild(min_leaf, max_leaf)

    def _rebuild(self, min_leaf: int | None, max_leaf: int | None) -> dict:
        if self.codebook is None:
            raise InvalidRequest("the index has no codebook yet: add items first")
        if self.table.dead:
            keep = self.table.compact()
            self._rows, self._leaf_of = self._rows[keep].copy(), self._leaf_of[keep].copy()
        used = self.table.used
        vectors = self._rows[:used]
        facet_vectors = _directions(vectors, self.facets)
        codes = assign_codes(self.codebook, facet_vectors)
        # the mean size of the leaves the codes actually form (far fewer than M^L codes may be used)
        distinct = np.mean(
            [len(np.unique(_raw_codes(codes[:, f], self.codewords))) for f in range(self.facets)]
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
            tree, leaf_of, stats = _FacetTree.build(
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
            lists = LeafLists(self.dim, tree.n_leaves, self.storage)
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
        used = self.table.used
        ids = self.table.ids[:used]
        live = ids >= 0
        out = np.full(int(ids[live].max()) + 1 if live.any() else 0, -1, np.int64)
        out[ids[live]] = self._leaf_of[:used, facet][live]
        return out

    def codeword_use(self) -> dict:
        """Share of codewords the live items' codes use, per level and facet, and leaves used."""
        live = self.table.live_slots()
        codes = assign_codes(self.codebook, _directions(self._rows[live], self.facets))
        return utilisation(codes, self.codewords)

    # ---- search ----------------------------------------------------------------------------------

    def _search(self, queries: np.ndarray, k: int, flt: Filter | None, params: dict) -> SearchResult:
        eligible = None if flt is None else self.table.eligible(flt)
        leaves, budget, beam = params["leaves"], params["candidates"], params["beam"]
        if flt is not None:
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
        ids, scores = self._scan(queries, k, chosen, per_facet_budget, eligible)
        scored = sum(
            _scanned(lists.sizes, picked, per_facet_budget)
            for lists, picked in zip(self._lists, chosen, strict=True)
        )
        if flt is not None:
            # A selective filter can leave the walked leaves short of k matches: score every
            # eligible item for those queries instead, so a filtered answer is never short.
            short = np.flatnonzero((ids >= 0).sum(1) < min(k, int(eligible.sum())))
            if len(short):
                pool = np.flatnonzero(eligible)
                values = queries[short] @ self._rows[pool].T
                take = min(k, len(pool))
                positions, best = top_k(values, take)
                ids[short], scores[short] = -1, -np.inf
                ids[short, :take] = self.table.ids[pool[positions]]
                scores[short, :take] = best
                scored[short] = len(pool)
        return SearchResult(ids, scores, scored)

    def _scan(self, queries, k, chosen, budget, eligible) -> tuple[np.ndarray, np.ndarray]:
        """Each facet's leaves scanned by the full (all-facet) score, the facets' top-k merged."""
        found = [
            lists.search(queries, k, picked, budget, eligible)
            for lists, picked in zip(self._lists, chosen, strict=True)
        ]
        scores = np.concatenate([s for s, _ in found], axis=1)
        slots = np.concatenate([i for _, i in found], axis=1)
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
        if self.storage != "flat":
            # the lists hold float16 copies: rescore the kept items with their float32 vectors
            scores, slots = self._rescored(queries, slots)
        missing = slots < 0
        ids = self.table.ids[np.where(missing, 0, slots)] if len(self.table.ids) else slots.copy()
        ids[missing] = -1
        scores = scores.astype(np.float32)
        scores[missing] = -np.inf
        return ids, scores

    def _rescored(self, queries: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows[np.where(slots >= 0, slots, 0)]  # (n, k, dim)
        exact = np.einsum("nkd,nd->nk", rows, queries)
        exact[slots < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")
        return np.take_along_axis(exact, order, 1), np.take_along_axis(slots, order, 1)

    def search_triggers(
        self,
        trigger_ids,
        k: int,
        *,
        leaves: int = 16,
        seed: int = 0,
        filter: Filter | str | dict | None = None,  # noqa: A002
        candidates: int | None = None,
    ) -> SearchResult:
        """Item-to-item: the leaves of the triggers' codes, sampled in proportion to how many triggers
        share each (facet, leaf), their items reranked by the triggers' mean vector."""
        with self._guard:
            return self._search_triggers(trigger_ids, k, leaves, seed, filter, candidates)

    def _search_triggers(self, trigger_ids, k, leaves, seed, filter, candidates) -> SearchResult:  # noqa: A002
        slots = self.table.lookup(np.asarray(trigger_ids, np.int64).reshape(-1))
        if not len(slots) or (slots < 0).any():
            raise InvalidRequest("every trigger must be an item of the index")
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or not 1 <= k <= min(len(self), MAX_K):
            raise InvalidRequest(f"k must be an integer from 1 to {min(len(self), MAX_K)}, got {k!r}")
        filter = as_filter(filter)  # noqa: A001
        pairs = np.stack(
            [np.repeat(np.arange(self.facets), len(slots)), self._leaf_of[slots].T.reshape(-1)], axis=1
        )
        unique, counts = np.unique(pairs, axis=0, return_counts=True)
        rng = np.random.default_rng(seed)
        take = min(leaves, len(unique))
        picked = unique[rng.choice(len(unique), take, replace=False, p=counts / counts.sum())]
        chosen = []
        for facet in range(self.facets):
            mine = picked[picked[:, 0] == facet, 1].astype(np.int64)
            row = np.full((1, max(1, len(mine))), -1, np.int64)
            row[0, : len(mine)] = mine
            chosen.append(row)
        eligible = None if filter is None else self.table.eligible(filter)
        budget = max(1, math.ceil((candidates or self.search_params["candidates"]) / self.facets))
        query = self._rows[slots].mean(axis=0, keepdims=True)
        norm = float(np.linalg.norm(query))
        query = query / norm if norm > 0 else query  # scored like the service's vector path
        fetch = k + len(slots)  # the triggers themselves are found too, and dropped
        ids, scores = self._scan(query, fetch, chosen, budget, eligible)
        keep = (ids[0] >= 0) & ~np.isin(ids[0], np.asarray(trigger_ids, np.int64))
        out_ids = np.full((1, k), -1, np.int64)
        out_scores = np.full((1, k), -np.inf, np.float32)
        kept = ids[0][keep][:k]
        out_ids[0, : len(kept)], out_scores[0, : len(kept)] = kept, scores[0][keep][:k]
        scored = sum(
            _scanned(lists.sizes, row, budget) for lists, row in zip(self._lists, chosen, strict=True)
        )
        return SearchResult(out_ids, out_scores, scored)

    # ---- persistence -----------------------------------------------------------------------------

    def _save(self, folder: Path) -> dict:
        used = self.table.used
        self.table.save(folder)
        np.save(folder / "vectors.npy", self._rows[:used], allow_pickle=False)
        np.save(folder / "leaf_of.npy", self._leaf_of[:used], allow_pickle=False)
        if self.codebook is not None:
            np.save(folder / "codebook.npy", self.codebook, allow_pickle=False)
        for facet, tree in enumerate(self._trees):
            tree.save(folder / f"facet{facet}")
        return {
            "facets": self.facets,
            "levels": self.levels,
            "codewords": self.codewords,
            "min_leaf": self.min_leaf,
            "max_leaf": self.max_leaf,
            "seed": self.seed,
            "storage": self.storage,
            "trees": len(self._trees),
        }

    @classmethod
    def _load(cls, folder: Path, manifest: dict) -> MFLIIndex:
        state = manifest["state"]
        codebook = (
            np.load(folder / "codebook.npy", allow_pickle=False)
            if (folder / "codebook.npy").is_file()
            else None
        )
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
        )
        index.table = SlotTable.load(folder)
        used = index.table.used
        rows = np.load(folder / "vectors.npy", allow_pickle=False)
        leaf_of = np.load(folder / "leaf_of.npy", allow_pickle=False)
        if rows.shape != (used, index.dim) or leaf_of.shape != (used, index.facets):
            raise InvalidRequest(f"{folder}: stored arrays do not match {used} slots of width {index.dim}")
        index._rows, index._leaf_of = rows.astype(np.float32), leaf_of.astype(np.int32)
        index._trees = [_FacetTree.load(folder / f"facet{f}") for f in range(state["trees"])]
        index._lists = [index._filled_lists(f, tree.n_leaves) for f, tree in enumerate(index._trees)]
        return index


class _FacetTree:
    """One facet's code tree: its leaves' centroids and prefixes, and the raw-code map. The members
    of each leaf live in the facet's `LeafLists`."""

    def __init__(self, centroids, prefixes, raw_to_leaves, codewords):
        centroids = np.asarray(centroids, np.float32)
        self.n_leaves = len(centroids)
        # Room for leaves that real-time inserts create: adding one is then O(d), not a copy of all.
        self._centroids = np.zeros((max(16, 2 * self.n_leaves), centroids.shape[1]), np.float32)
        self._centroids[: self.n_leaves] = centroids
        self.prefixes = np.asarray(prefixes, np.int64)  # (n_leaves,) code without its last digit
        self.raw_to_leaves = raw_to_leaves  # raw code -> leaves it became
        self.codewords = codewords
        # the distinct prefixes, sorted, and each leaf's place among them: a beam of prefixes becomes
        # a mask over leaves with one searchsorted
        self.prefix_keys, self.prefix_of_leaf = np.unique(self.prefixes, return_inverse=True)
        self._by_prefix: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def centroids(self) -> np.ndarray:
        return self._centroids[: self.n_leaves]

    @classmethod
    def build(cls, codes, facet_vectors, codebook, facet, codewords, low, high, seed):
        """Leaves from the items' codes of this facet, split above `high` and merged below `low`."""
        raw = _raw_codes(codes, codewords)
        unique, first, leaf_of = np.unique(raw, return_index=True, return_inverse=True)
        leaf_of = leaf_of.astype(np.int64)
        centroids = [reconstruct(codebook[:, facet : facet + 1], codes[first][:, None, :])[:, 0]]
        centroids = list(centroids[0])
        prefixes = list((unique // codewords).tolist())
        raw_to_leaves = {int(r): [i] for i, r in enumerate(unique.tolist())}
        sizes = np.bincount(leaf_of, minlength=len(unique))
        splits = merges = 0
        # split: k-means of an oversized leaf's members into parts near the middle of the bounds,
        # again for any part still too large (k-means parts are not equal). Members come from one
        # sort, not a scan of all items per leaf, so this stays linear at millions of items.
        target = max(low, (low + high) // 2)
        grouped = np.argsort(leaf_of, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        pending = [(leaf, grouped[starts[leaf] : starts[leaf + 1]]) for leaf in np.flatnonzero(sizes > high)]
        origin = list(range(len(unique)))  # leaf -> the raw code's first leaf it was split from
        while pending:
            leaf, members = pending.pop()
            labels, centres = _kmeans(
                facet_vectors[members], math.ceil(len(members) / target), seed + int(leaf)
            )
            if len(centres) < 2:
                continue  # identical vectors cannot be told apart; the leaf stays as it is
            new_leaves = [int(leaf)] + list(range(len(centroids), len(centroids) + len(centres) - 1))
            centroids[leaf] = centres[0]
            for part in range(1, len(centres)):
                centroids.append(centres[part])
                prefixes.append(prefixes[leaf])
                origin.append(origin[leaf])
            for part, target_leaf in enumerate(new_leaves):
                chosen = members[labels == part]
                leaf_of[chosen] = target_leaf
                if len(chosen) > high:
                    pending.append((target_leaf, chosen))
            splits += 1
        for leaf, first_leaf in enumerate(origin):
            if leaf != first_leaf:
                raw_to_leaves[int(unique[first_leaf])].append(leaf)
        # merge: an undersized leaf joins the nearest leaf of the same prefix (else the nearest at
        # all); decided per leaf, then applied to the items in one pass
        centroid_array = np.asarray(centroids, np.float32)
        prefix_array = np.asarray(prefixes, np.int64)
        sizes = np.bincount(leaf_of, minlength=len(centroids))
        alive = sizes > 0
        into_of = np.arange(len(centroids))
        for leaf in np.argsort(sizes, kind="stable").tolist():
            if not alive[leaf] or sizes[leaf] >= low:
                continue
            others = alive.copy()
            others[leaf] = False
            same = others & (prefix_array == prefix_array[leaf])
            pool = np.flatnonzero(same if same.any() else others)
            if not len(pool):
                break
            distance = ((centroid_array[pool] - centroid_array[leaf]) ** 2).sum(1)
            into = int(pool[distance.argmin()])
            into_of[leaf] = into
            sizes[into] += sizes[leaf]
            sizes[leaf], alive[leaf] = 0, False
            merges += 1
        resolved = into_of
        while True:  # follow chains (a leaf merged into one that was merged later)
            following = into_of[resolved]
            if (following == resolved).all():
                break
            resolved = following
        # renumber the surviving leaves densely
        survivors = np.flatnonzero(alive)
        renumber = np.full(len(centroids), -1, np.int64)
        renumber[survivors] = np.arange(len(survivors))
        final_leaf = renumber[resolved]
        leaf_of = final_leaf[leaf_of]
        raw_to_leaves = {
            code: sorted({int(final_leaf[t]) for t in targets}) for code, targets in raw_to_leaves.items()
        }
        tree = cls(centroid_array[survivors], prefix_array[survivors], raw_to_leaves, codewords)
        final = np.bincount(leaf_of, minlength=len(survivors))
        stats = {
            "leaves": int(len(survivors)),
            "splits": splits,
            "merges": merges,
            "size_p50": float(np.median(final)) if len(final) else 0.0,
            "size_max": int(final.max()) if len(final) else 0,
            "size_min": int(final.min()) if len(final) else 0,
        }
        return tree, leaf_of.astype(np.int32), stats

    def leaf_for(
        self, raw: int, vector: np.ndarray, codebook: np.ndarray, facet: int, code: np.ndarray
    ) -> int:
        """The leaf a newly coded item joins: the nearest leaf its raw code became, or a new leaf."""
        leaves = self.raw_to_leaves.get(raw)
        if leaves:
            if len(leaves) == 1:
                return leaves[0]
            distance = ((self.centroids[leaves] - vector) ** 2).sum(1)
            return leaves[int(distance.argmin())]
        # a code no item had at the last rebuild: it becomes a leaf of its own
        centroid = reconstruct(codebook[:, facet : facet + 1], code[None, None, :])[0, 0]
        if self.n_leaves == len(self._centroids):
            grown = np.zeros((2 * len(self._centroids), self._centroids.shape[1]), np.float32)
            grown[: self.n_leaves] = self.centroids
            self._centroids = grown
        leaf = self.n_leaves
        self._centroids[leaf] = centroid
        self.n_leaves += 1
        prefix = raw // self.codewords
        self.prefixes = np.append(self.prefixes, prefix)
        place = int(np.searchsorted(self.prefix_keys, prefix))
        if place == len(self.prefix_keys) or self.prefix_keys[place] != prefix:
            self.prefix_keys = np.insert(self.prefix_keys, place, prefix)
            self.prefix_of_leaf[self.prefix_of_leaf >= place] += 1
        self.prefix_of_leaf = np.append(self.prefix_of_leaf, place)
        self.raw_to_leaves[raw] = [leaf]
        return leaf

    def best_leaves(self, queries, codebook, facet, beam: int, leaves: int) -> np.ndarray:
        """(n, d) queries -> (n, leaves) best leaves under a beam over the code prefixes (-1: none).

        Level by level, each query keeps its `beam` best prefixes (a prefix's score is the sum of its
        codewords' scores, as residual codes add up); then the leaves under those prefixes are scored
        by their centroids and the best `leaves` kept, best first. Vectorized over the queries."""
        n, n_levels, m = len(queries), codebook.shape[0], self.codewords
        prefix_ids, prefix_scores = np.zeros((n, 1), np.int64), np.zeros((n, 1), np.float32)
        for level in range(n_levels - 1):
            word_scores = queries @ codebook[level, facet].T  # (n, M)
            scores = (prefix_scores[:, :, None] + word_scores[:, None, :]).reshape(n, -1)
            ids = (prefix_ids[:, :, None] * m + np.arange(m)[None, None, :]).reshape(n, -1)
            if scores.shape[1] > beam:
                keep = np.argpartition(-scores, beam - 1, axis=1)[:, :beam]
                ids, scores = np.take_along_axis(ids, keep, 1), np.take_along_axis(scores, keep, 1)
            prefix_ids, prefix_scores = ids, scores
        take = min(leaves, self.n_leaves)
        if n_levels > 1 and n <= 4:
            # a query or a few: score only the leaves under the beam (a fraction of the centroids)
            out = np.full((n, take), -1, np.int64)
            for row in range(n):
                under = self._leaves_under(prefix_ids[row])
                if 2 * len(under) > self.n_leaves:  # most leaves: one product beats a gather
                    scores = np.full(self.n_leaves, -np.inf, np.float32)
                    scores[under] = (queries[row] @ self.centroids.T)[under]
                    positions, best = top_k(scores[None, :], take)
                    out[row] = np.where(np.isfinite(best[0]), positions[0], -1)
                elif len(under):
                    positions, _ = top_k(
                        (queries[row] @ self.centroids[under].T)[None, :], min(take, len(under))
                    )
                    out[row, : positions.shape[1]] = under[positions[0]]
            return out
        leaf_scores = queries @ self.centroids.T  # (n, n_leaves): one product for a batch of queries
        if n_levels > 1:
            place = np.searchsorted(self.prefix_keys, prefix_ids).clip(max=len(self.prefix_keys) - 1)
            present = self.prefix_keys[place] == prefix_ids
            allowed = np.zeros((n, len(self.prefix_keys)), bool)
            rows = np.broadcast_to(np.arange(n)[:, None], place.shape)
            allowed[rows[present], place[present]] = True
            leaf_scores = np.where(allowed[:, self.prefix_of_leaf], leaf_scores, -np.inf)
        positions, best = top_k(leaf_scores, take)
        return np.where(np.isfinite(best), positions, -1)

    def _leaves_under(self, prefix_ids: np.ndarray) -> np.ndarray:
        """The leaves whose prefix is one of `prefix_ids`, from a CSR of leaves grouped by prefix that is
        rebuilt only after leaves were added."""
        if self._by_prefix is None or len(self._by_prefix[0]) != self.n_leaves:
            order = np.argsort(self.prefix_of_leaf, kind="stable")
            starts = np.searchsorted(self.prefix_of_leaf[order], np.arange(len(self.prefix_keys) + 1))
            self._by_prefix = (order, starts)
        order, starts = self._by_prefix
        place = np.searchsorted(self.prefix_keys, prefix_ids).clip(max=len(self.prefix_keys) - 1)
        place = place[self.prefix_keys[place] == prefix_ids]
        if not len(place):
            return np.zeros(0, np.int64)
        return np.concatenate([order[starts[p] : starts[p + 1]] for p in place.tolist()])

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "centroids.npy", self.centroids, allow_pickle=False)
        np.save(folder / "prefixes.npy", self.prefixes, allow_pickle=False)
        pairs = np.asarray([(c, t) for c, ts in self.raw_to_leaves.items() for t in ts], np.int64).reshape(
            -1, 2
        )
        np.save(folder / "raw_to_leaves.npy", pairs, allow_pickle=False)
        np.save(folder / "codewords.npy", np.asarray([self.codewords], np.int64), allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> _FacetTree:
        centroids = np.load(folder / "centroids.npy", allow_pickle=False)
        prefixes = np.load(folder / "prefixes.npy", allow_pickle=False)
        pairs = np.load(folder / "raw_to_leaves.npy", allow_pickle=False)
        codewords = int(np.load(folder / "codewords.npy", allow_pickle=False)[0])
        raw_to_leaves: dict[int, list[int]] = {}
        for code, leaf in pairs.tolist():
            raw_to_leaves.setdefault(int(code), []).append(int(leaf))
        return cls(centroids, prefixes, raw_to_leaves, codewords)


def _scanned(sizes: np.ndarray, leaves: np.ndarray, budget: int) -> np.ndarray:
    """Items scanned per query: the chosen leaves' sizes, best first, up to and including the leaf
    that takes the total to `budget` (where FAISS's `max_codes` stops)."""
    counts = np.where(leaves >= 0, sizes[np.where(leaves >= 0, leaves, 0)], 0)
    running = np.cumsum(counts, axis=1)
    reached = running >= budget
    stop = np.where(reached.any(1), reached.argmax(1), running.shape[1] - 1)
    return running[np.arange(len(running)), stop]


def _directions(vectors: np.ndarray, facets: int) -> np.ndarray:
    """(N, F * d) -> (N, F, d) unit facet vectors (a zero facet stays zero): what codes are assigned
    from. A model may scale an item's facets in its merged vector (MFLI rescales the facets of an item
    without a trained ID); the scale changes its score, not where it belongs in the code tree."""
    view = facet_view(vectors, facets)
    norms = np.linalg.norm(view, axis=-1, keepdims=True)
    return view / np.where(norms > 0, norms, 1.0)


def _raw_codes(codes: np.ndarray, codewords: int) -> np.ndarray:
    """(N, L) digits -> (N,) one mixed-radix number per code."""
    radix = codewords ** np.arange(codes.shape[1] - 1, -1, -1, dtype=np.int64)
    return (codes.astype(np.int64) * radix).sum(1)


def _kmeans(vectors: np.ndarray, parts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    data = np.ascontiguousarray(vectors, dtype=np.float32)
    kmeans = faiss.Kmeans(data.shape[1], parts, niter=10, seed=seed, verbose=False)
    kmeans.cp.min_points_per_centroid = 1
    kmeans.train(data)
    _, labels = kmeans.index.search(data, 1)
    labels = labels[:, 0]
    # k-means can leave a part empty; renumber the used ones densely
    used, labels = np.unique(labels, return_inverse=True)
    return labels, kmeans.centroids[used]
