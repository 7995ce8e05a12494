"""One facet's code tree for the MFLI index: which leaf an item joins, and which leaves a query visits.

Leaves are the items' residual codes of this facet (one mixed-radix number per code), rebalanced at
each rebuild: a leaf larger than `high` is split by k-means of its members into parts near the middle
of the bounds, and one smaller than `low` is merged into the nearest leaf (by centroid) under the same
prefix, or anywhere when it is alone there. A raw code keeps a map to the leaves it became, so an item
coded later lands in the nearest of them; a code no item had becomes a leaf of its own.

Each leaf has a centroid (the reconstruction of its code, or a k-means centre after a split) and a
prefix (its code without the last digit), which places it under the beam search over code prefixes
(`best_leaves`). The members of each leaf are not kept here: they live in the facet's `LeafLists`.
"""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

from recindex.index.base import top_k
from recindex.index.learned import number_codes
from recindex.quant.codebook import reconstruct


class FacetTree:
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
        raw = number_codes(codes, codewords)
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
            labels, centres = kmeans(
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
    def load(cls, folder: Path) -> FacetTree:
        centroids = np.load(folder / "centroids.npy", allow_pickle=False)
        prefixes = np.load(folder / "prefixes.npy", allow_pickle=False)
        pairs = np.load(folder / "raw_to_leaves.npy", allow_pickle=False)
        codewords = int(np.load(folder / "codewords.npy", allow_pickle=False)[0])
        raw_to_leaves: dict[int, list[int]] = {}
        for code, leaf in pairs.tolist():
            raw_to_leaves.setdefault(int(code), []).append(int(leaf))
        return cls(centroids, prefixes, raw_to_leaves, codewords)


def kmeans(vectors: np.ndarray, parts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS k-means of `vectors` into at most `parts` parts: (label of each vector, used centres)."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    clustering = faiss.Kmeans(data.shape[1], parts, niter=10, seed=seed, verbose=False)
    clustering.cp.min_points_per_centroid = 1
    clustering.train(data)
    _, labels = clustering.index.search(data, 1)
    labels = labels[:, 0]
    # k-means can leave a part empty; renumber the used ones densely
    used, labels = np.unique(labels, return_inverse=True)
    return labels, clustering.centroids[used]
