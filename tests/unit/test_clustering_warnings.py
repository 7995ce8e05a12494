"""FAISS's k-means warns on stderr, from C++, when it has fewer than 39 points per centroid. On a small
catalogue that is expected and the clustering is still sound, so the user must not see it; FAISS's real
errors (fewer points than centroids) still reach the user."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.pipelines.indexes import make_index


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "spec",
    ["faiss:IVF8,Flat", "faiss:IVF4,PQ4", "faiss:OPQ4,IVF4,PQ4x4,RFlat", "ci:nlist=8,levels=1,codewords=64"],
)
def test_small_catalogues_build_without_clustering_warnings(spec, capfd):
    vectors = _vectors(300)
    index = make_index(spec, 16)
    index.add(np.arange(300), vectors)
    result = index.search(vectors[:5], 5)
    assert (result.ids[:, 0] == np.arange(5)).mean() >= 0.8  # still a working index
    assert "WARNING clustering" not in capfd.readouterr().err


def test_codebook_fitting_on_few_items_is_quiet(capfd):
    from recindex.quant.codebook import fit_codebook

    codebook = fit_codebook(_vectors(60)[:, None, :], levels=2, codewords=8)
    assert codebook.shape == (2, 1, 8, 16)
    assert "WARNING clustering" not in capfd.readouterr().err


def test_too_few_points_for_the_lists_is_still_an_error():
    index = make_index("faiss:IVF64,Flat", 16)
    with pytest.raises(InvalidRequest, match="at least 64"):
        index.add(np.arange(20), _vectors(20))
