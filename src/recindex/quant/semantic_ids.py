"""Semantic IDs: each item gets a sequence of L tokens, each in 0..k-1, built from its vector.

These are the fixed indexes of the two-stage generative methods (DSI, TIGER) that the learned URI index
is compared with, built from a trained model's item vectors:

    random            balanced: every token of a layer gets about N / k of its parent's items
    kmeans            hierarchical k-means: k clusters, then k within each cluster, layer by layer
    rq_kmeans         residual k-means: layer l clusters what layers 1..l-1 left (shared per layer)
    rq_vae            a small residual-quantized autoencoder (TIGER's choice), trained on the vectors
    *_balanced        k-means and RQ-KMeans with each layer's tokens filled evenly within each parent
                      (at most ceil(n / k) items each, nearest centroid first; `balanced_assignment`):
                      APE is only comparable between indexes of the same balance, and URI's learned
                      index is balanced this way

K-means is FAISS's. Items whose codes collide (same L tokens) are counted, not resolved: a generative
retriever returns every item under a leaf, and `bucket_report` / APE measure what that costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recindex.errors import InvalidRequest
from recindex.quant.assignment import balanced_assignment
from recindex.quant.codebook import assign_codes, fit_codebook
from recindex.quant.rq_vae import train_rq_vae

METHODS = ("random", "kmeans", "rq_kmeans", "rq_vae", "kmeans_balanced", "rq_kmeans_balanced")


@dataclass(frozen=True)
class SemanticIds:
    codes: np.ndarray  # (N, L) tokens in 0..k-1
    k: int
    method: str

    @property
    def layers(self) -> int:
        return self.codes.shape[1]

    def leaf_of(self, layers: int | None = None) -> np.ndarray:
        """(N,) one number per item for its first `layers` tokens (mixed radix): its bucket there."""
        depth = self.layers if layers is None else layers
        radix = self.k ** np.arange(depth - 1, -1, -1, dtype=np.int64)
        return (self.codes[:, :depth].astype(np.int64) * radix).sum(1)

    def collisions(self) -> int:
        """Items sharing their full code with an item before them."""
        return int(len(self.codes) - len(np.unique(self.leaf_of())))


def build_semantic_ids(
    vectors: np.ndarray, method: str, k: int = 32, layers: int = 2, *, seed: int = 0, **options
) -> SemanticIds:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        raise InvalidRequest(f"item vectors must be a non-empty (N, d) matrix, got shape {vectors.shape}")
    if not isinstance(k, int) or k < 2 or not isinstance(layers, int) or layers < 1:
        raise InvalidRequest(f"k must be an integer >= 2 and layers >= 1, got k={k!r}, layers={layers!r}")
    if k > len(vectors):
        raise InvalidRequest(f"k={k} is more than the {len(vectors)} items")
    if method == "random":
        codes = _random(len(vectors), k, layers, seed)
    elif method in ("kmeans", "kmeans_balanced"):
        codes = _hierarchical_kmeans(vectors, k, layers, seed, balanced=method.endswith("balanced"))
    elif method in ("rq_kmeans", "rq_kmeans_balanced"):
        codebook = fit_codebook(vectors[:, None, :], layers, k, seed=seed)
        if method == "rq_kmeans":
            codes = assign_codes(codebook, vectors[:, None, :])[:, 0, :]
        else:
            codes = _balanced_residual_codes(codebook[:, 0], vectors)
    elif method == "rq_vae":
        codes = train_rq_vae(vectors, k, layers, seed=seed, **options).codes
    else:
        raise InvalidRequest(f"unknown semantic id method {method!r}; choose one of {', '.join(METHODS)}")
    return SemanticIds(np.asarray(codes, np.int64), k, method)


def _random(n: int, k: int, layers: int, seed: int) -> np.ndarray:
    """Balanced random tokens: within each parent, items are shuffled and dealt to the k tokens in turn."""
    rng = np.random.default_rng(seed)
    codes = np.zeros((n, layers), np.int64)
    parent = np.zeros(n, np.int64)
    for layer in range(layers):
        order = np.lexsort((rng.random(n), parent))  # shuffled within each parent
        rank_in_parent = np.empty(n, np.int64)
        starts = np.searchsorted(parent[order], parent[order], side="left")
        rank_in_parent[order] = np.arange(n) - starts
        codes[:, layer] = rank_in_parent % k
        parent = parent * k + codes[:, layer]
    return codes


def _balanced_residual_codes(codebook: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Residual codes (codebook (L, k, d)) where each layer fills its tokens evenly within each parent."""
    layers, k, _ = codebook.shape
    residual = vectors.astype(np.float32).copy()
    codes = np.zeros((len(vectors), layers), np.int64)
    parent = np.zeros(len(vectors), np.int64)
    for layer in range(layers):
        words = codebook[layer]
        distance = (words**2).sum(1)[None] - 2 * residual @ words.T
        codes[:, layer] = balanced_assignment(-distance, parent)
        residual -= words[codes[:, layer]]
        parent = parent * k + codes[:, layer]
    return codes


def _hierarchical_kmeans(vectors: np.ndarray, k: int, layers: int, seed: int, balanced: bool = False):
    """k-means into k clusters, then each cluster's items into k, layer by layer (DSI's index). A
    cluster with fewer than k items gives its items distinct tokens in order. `balanced`: each cluster
    takes at most ceil(n / k) of its parent's items, nearest centroid first."""
    n = len(vectors)
    codes = np.zeros((n, layers), np.int64)
    parents = np.zeros(n, np.int64)
    for layer in range(layers):
        codes[:, layer] = kmeans_within(vectors, parents, k, seed + layer, balanced)
        parents = parents * k + codes[:, layer]
    return codes


def kmeans_within(vectors: np.ndarray, parents: np.ndarray, k: int, seed: int = 0, balanced: bool = False):
    """(N,) a token per item: k-means of the items under each parent separately (a parent of at most k
    items gives its items distinct tokens in order); `balanced` as in `_hierarchical_kmeans`."""
    import faiss

    dim = vectors.shape[1]
    tokens = np.zeros(len(vectors), np.int64)
    for parent in np.unique(parents):
        members = np.flatnonzero(parents == parent)
        if len(members) <= k:
            tokens[members] = np.arange(len(members))
            continue
        kmeans = faiss.Kmeans(dim, k, niter=20, seed=seed, verbose=False)
        kmeans.cp.min_points_per_centroid = 1
        kmeans.train(vectors[members])
        if balanced:
            distance, nearest = kmeans.index.search(vectors[members], k)
            scores = np.full((len(members), k), -1e30)
            np.put_along_axis(scores, nearest, -distance, axis=1)
            tokens[members] = balanced_assignment(scores)
        else:
            tokens[members] = kmeans.index.search(vectors[members], 1)[1][:, 0]
    return tokens
