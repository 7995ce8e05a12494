"""The `ci` build checks that an item's query view stands for its item vector, and its defaults find most
of exact search's top 100 on towers where it does."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.exact_index import ExactIndex
from recindex.pipelines.indexes import load_index, make_index
from recindex.sci.alignment import list_agreement
from recindex.sci.index import CHECKED_AGREEMENT, CIIndex


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    centers = unit(rng.normal(size=(40, dim)))
    items = unit(centers[rng.integers(0, 40, n)] + 2.4 * rng.normal(size=(n, dim)) / np.sqrt(dim))
    return items, centers, rng


def noisy(vectors: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Query views that read each item roughly as its item vector does (noise 0.5: mean cos about 0.9)."""
    return unit(vectors + noise * rng.normal(size=vectors.shape) / np.sqrt(vectors.shape[1]))


def rotated(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Query views of towers never aligned: a fixed rotation of the item vectors (mean cos about 0)."""
    rotation = np.linalg.qr(rng.normal(size=(vectors.shape[1],) * 2))[0].astype(np.float32)
    return unit(vectors @ rotation)


def test_a_build_whose_views_disagree_is_refused_with_the_measured_agreement():
    items, _, rng = clustered(2000)
    views = rotated(items, rng)
    index = make_index("ci:nlist=16,levels=0", 16, options={"query_views": views})
    assert index.min_agreement == CHECKED_AGREEMENT  # a bundle's build checks by default
    cosine = float(np.mean(np.sum(views * items, axis=1)))
    with pytest.raises(InvalidRequest) as refused:
        index.add(np.arange(len(items)), items)
    message = str(refused.value)
    assert f"{cosine:.3f}" in message and "2,000 items" in message
    assert "SymmAligner" in message and 'model.kind = "sci"' in message and "min_agreement=0" in message
    assert len(index) == 0 and index.centroids is None  # nothing was stored


def test_min_agreement_0_builds_anyway_and_the_measure_is_kept(tmp_path):
    items, _, rng = clustered(2000)
    views = rotated(items, rng)
    index = make_index("ci:nlist=16,levels=0,min_agreement=0", 16, options={"query_views": views})
    index.add(np.arange(len(items)), items)
    found = index.view_agreement
    assert found["items"] == 2000
    assert found["cosine"] == pytest.approx(float(np.mean(np.sum(views * items, axis=1))), abs=1e-5)
    same = np.argmax(views @ index.centroids.T, 1) == np.argmax(items @ index.centroids.T, 1)
    assert found["same_list"] == pytest.approx(same.mean())
    index.save(tmp_path / "ci")
    loaded = load_index(tmp_path / "ci")
    assert loaded.view_agreement == found and loaded.min_agreement == 0


def test_views_that_agree_pass_and_items_without_an_item_vector_are_left_out():
    items, _, rng = clustered(2000)
    views = noisy(items, 0.5, rng)
    # 500 more items the item tower knows nothing of (a zero vector) with query views pointing anywhere
    cold = np.zeros((500, 16), np.float32)
    index = make_index(
        "ci:nlist=16,levels=0",
        16,
        options={"query_views": np.concatenate([views, rotated(views[:500], rng)])},
    )
    index.add(np.arange(2500), np.concatenate([items, cold]))
    assert index.view_agreement["items"] == 2000
    assert index.view_agreement["cosine"] > 0.85


def test_items_placed_by_their_own_vectors_are_not_measured():
    items, _, _ = clustered(500)
    index = make_index("ci:nlist=8,levels=0", 16)  # no query views: every item is routed by its vector
    index.add(np.arange(len(items)), items)
    assert index.view_agreement is None
    assert list_agreement(np.zeros((3, 4)), np.zeros((3, 4)), np.eye(4)) is None


def test_the_index_class_checks_nothing_unless_asked():
    # Semantic IDs and experiments build the class directly on any towers (recindex.sci.semantic_ids).
    items, _, rng = clustered(1000)
    index = CIIndex(16, nlist=8, levels=0, query_views=rotated(items, rng))
    index.add(np.arange(len(items)), items)
    assert len(index) == 1000 and index.view_agreement["cosine"] < 0.2
    with pytest.raises(InvalidRequest, match="min_agreement"):
        CIIndex(16, min_agreement=1.5)


def test_at_its_defaults_ci_finds_nine_tenths_of_exact_top_100_where_the_views_agree():
    items, centers, rng = clustered(8000)
    index = make_index("ci:levels=0", 16, options={"query_views": noisy(items, 0.5, rng)})
    index.add(np.arange(len(items)), items)
    queries = unit(centers[rng.integers(0, 40, 200)] + 2 * rng.normal(size=(200, 16)) / 4)
    exact = ExactIndex(16)
    exact.add(np.arange(len(items)), items)
    truth, found = exact.search(queries, 100).ids, index.search(queries, 100).ids
    recall = np.mean([len(np.intersect1d(a, b)) / 100 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.9, f"index recall@100 {recall:.3f} at {index.search_params}"
