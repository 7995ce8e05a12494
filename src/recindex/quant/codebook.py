"""The multifaceted residual codebook: L levels, each F facets x M codewords x d.

Each facet of an item vector is quantized on its own, level by level, by residual quantization:

    r_0 = e_f;  k_l = argmin_m |r_{l-1} - C[l, f, m]|^2;  r_l = r_{l-1} - C[l, f, k_l]

so an item gets F codes of L digits, and each facet's codes form a tree of M^L leaves. This module is
the numpy side (assigning codes, fitting levels by k-means, usage statistics), shared by the index
(real-time assignment of a new item in O(L * F * M * d)) and by training (k-means initialisation of a
level when it is switched on). K-means is FAISS's.
"""

from __future__ import annotations

import numpy as np

from recindex.errors import InvalidRequest


def facet_view(vectors: np.ndarray, facets: int) -> np.ndarray:
    """(N, F * d) concatenated facet vectors -> (N, F, d)."""
    n, width = vectors.shape
    if width % facets:
        raise InvalidRequest(f"vectors of width {width} do not split into {facets} facets")
    return vectors.reshape(n, facets, width // facets)


def assign_codes(codebook: np.ndarray, facet_vectors: np.ndarray, levels: int | None = None) -> np.ndarray:
    """Greedy residual codes: codebook (L, F, M, d), facet_vectors (N, F, d) -> (N, F, levels) int32."""
    n_levels = codebook.shape[0] if levels is None else levels
    residual = np.array(facet_vectors, dtype=np.float32, copy=True)
    codes = np.empty((len(residual), codebook.shape[1], n_levels), np.int32)
    for level in range(n_levels):
        words = codebook[level]  # (F, M, d)
        # |r - c|^2 = |r|^2 - 2 r.c + |c|^2; the first term does not change the argmin
        distance = (words**2).sum(-1)[None] - 2 * np.einsum("nfd,fmd->nfm", residual, words)
        chosen = distance.argmin(-1)  # (N, F)
        codes[:, :, level] = chosen
        residual -= np.take_along_axis(words[None], chosen[:, :, None, None], axis=2)[:, :, 0]
    return codes


def reconstruct(codebook: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(N, F, L') codes -> (N, F, d) sum of the chosen codewords of the first L' levels."""
    n, facets, n_levels = codes.shape
    out = np.zeros((n, facets, codebook.shape[-1]), np.float32)
    facet_index = np.arange(facets)[None, :]
    for level in range(n_levels):
        out += codebook[level][facet_index, codes[:, :, level]]
    return out


def fit_level(residuals: np.ndarray, codewords: int, *, seed: int = 0, iterations: int = 20) -> np.ndarray:
    """k-means of each facet's residuals: (N, F, d) -> (F, M, d) codewords of one level."""
    import faiss

    n, facets, dim = residuals.shape
    if n < codewords:
        raise InvalidRequest(f"{n} items cannot fit {codewords} codewords per level; use fewer codewords")
    level = np.empty((facets, codewords, dim), np.float32)
    for facet in range(facets):
        data = np.ascontiguousarray(residuals[:, facet], dtype=np.float32)
        kmeans = faiss.Kmeans(dim, codewords, niter=iterations, seed=seed + facet, verbose=False)
        kmeans.cp.max_points_per_centroid = 256  # a sample is enough; keeps fitting fast at 1M items
        kmeans.cp.min_points_per_centroid = 1  # no FAISS warning on a small catalogue
        kmeans.train(data)
        level[facet] = kmeans.centroids
    return level


def fit_codebook(facet_vectors: np.ndarray, levels: int, codewords: int, *, seed: int = 0) -> np.ndarray:
    """RQ-KMeans: each level fitted by k-means on the residuals the levels above leave."""
    residual = np.array(facet_vectors, dtype=np.float32, copy=True)
    fitted = []
    for level in range(levels):
        words = fit_level(residual, codewords, seed=seed + 101 * level)
        fitted.append(words)
        chosen = assign_codes(words[None], residual)[:, :, 0]
        residual -= np.take_along_axis(words[None], chosen[:, :, None, None], axis=2)[:, :, 0]
    return np.stack(fitted)


def utilisation(codes: np.ndarray, codewords: int) -> dict:
    """Share of codewords used per level and facet, and the leaves' size spread, for reports."""
    n, facets, n_levels = codes.shape
    used = [
        [float(len(np.unique(codes[:, f, level]))) / codewords for f in range(facets)]
        for level in range(n_levels)
    ]
    radix = codewords ** np.arange(n_levels - 1, -1, -1)
    leaves = (codes * radix).sum(-1)  # (N, F) one leaf number per facet
    sizes = [np.bincount(leaves[:, f]) for f in range(facets)]
    sizes = [s[s > 0] for s in sizes]
    return {
        "codeword_use": used,
        "leaves_used": [int(len(s)) for s in sizes],
        "leaf_size_p50": [float(np.median(s)) for s in sizes],
        "leaf_size_max": [int(s.max()) for s in sizes],
    }
