"""Semantic IDs from item vectors: shapes, balance, and that clustering beats chance on APE."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.eval.ape import average_partition_entropy
from recindex.quant.rq_vae import train_rq_vae
from recindex.quant.semantic_ids import METHODS, build_semantic_ids

rng = np.random.default_rng(0)
CENTRES = rng.standard_normal((16, 12))
group_of = rng.integers(0, 16, 800)
VECTORS = (CENTRES[group_of] + 0.2 * rng.standard_normal((800, 12))).astype(np.float32)
# "users" who each interacted with items of one group: their positives cluster as the vectors do
USERS = [rng.choice(np.flatnonzero(group_of == g), 6, replace=False) for g in rng.integers(0, 16, 300)]
OFFSETS = np.concatenate([[0], np.cumsum([len(u) for u in USERS])])
ITEMS = np.concatenate(USERS)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_each_item_l_tokens_below_k(method):
    ids = build_semantic_ids(VECTORS, method, k=8, layers=2, epochs=5)
    assert ids.codes.shape == (800, 2) and ids.codes.min() >= 0 and ids.codes.max() < 8
    assert len(np.unique(ids.codes[:, 0])) >= 4  # the first layer is not one token
    assert 0 <= ids.collisions() < 800


def test_random_ids_are_balanced_within_each_parent():
    ids = build_semantic_ids(VECTORS, "random", k=8, layers=2)
    first = np.bincount(ids.codes[:, 0], minlength=8)
    assert first.max() - first.min() <= 1
    leaves = np.bincount(ids.leaf_of(), minlength=64)
    assert leaves.max() - leaves.min() <= 2


@pytest.mark.parametrize("method", ["kmeans_balanced", "rq_kmeans_balanced"])
def test_balanced_clusterings_fill_each_parent_evenly(method):
    ids = build_semantic_ids(VECTORS, method, k=8, layers=2)
    assert np.bincount(ids.codes[:, 0], minlength=8).max() <= 100  # ceil(800 / 8)
    for parent in range(8):
        under = ids.codes[ids.codes[:, 0] == parent, 1]
        assert np.bincount(under, minlength=8).max() <= -(-len(under) // 8)


def test_clustered_ids_put_a_users_items_together_more_than_random_ones():
    ape = {
        method: average_partition_entropy(
            build_semantic_ids(VECTORS, method, k=4, layers=2, epochs=10).leaf_of(), OFFSETS, ITEMS
        )
        for method in METHODS
    }
    for method in ("kmeans", "rq_kmeans", "rq_vae", "kmeans_balanced", "rq_kmeans_balanced"):
        assert ape[method] < ape["random"], ape


def test_the_rq_vae_learns_to_reconstruct():
    result = train_rq_vae(VECTORS, 8, 2, epochs=60, batch_size=128)
    assert result.losses[-1] < result.losses[0]
    assert result.reconstruction_error < 0.25 * float(np.var(VECTORS, axis=0).mean())  # far below the mean


def test_bad_requests_are_refused():
    with pytest.raises(InvalidRequest, match="unknown"):
        build_semantic_ids(VECTORS, "hash", k=8)
    with pytest.raises(InvalidRequest, match="k must"):
        build_semantic_ids(VECTORS, "kmeans", k=1)
    with pytest.raises(InvalidRequest, match="more than"):
        build_semantic_ids(VECTORS[:5], "kmeans", k=8)
