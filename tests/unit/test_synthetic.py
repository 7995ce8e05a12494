"""Synthetic data: spec parsing, determinism, and the structure it promises (skew, clusters, drift)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recindex.data.synthetic import SyntheticConfig, generate
from recindex.errors import RecIndexError


@pytest.fixture(scope="module")
def data():
    return generate(SyntheticConfig())


def owners(data) -> np.ndarray:
    return np.repeat(np.arange(data.n_users), data.lengths())


def test_from_spec() -> None:
    assert SyntheticConfig.from_spec("synthetic") == SyntheticConfig()
    config = SyntheticConfig.from_spec("synthetic:n_users=1000, n_items=500,seed=3,drift=0.25")
    assert (config.n_users, config.n_items, config.seed, config.drift) == (1000, 500, 3, 0.25)
    assert config.n_clusters == 20


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("synthetic:n_user=5", "unknown synthetic data setting 'n_user'"),
        ("synthetic:n_users=many", "needs an integer"),
        ("synthetic:drift", "needs a number"),
        ("synthetic:n_users=2.5", "needs an integer"),
        ("synthetic:drift=1.5", "drift must be between 0 and 1"),
        ("synthetic:n_items=10,n_clusters=11", "n_clusters must be between 1 and n_items"),
        ("synthetic:n_items=8,min_length=5", "min_length must be at most"),
    ],
)
def test_bad_specs(spec: str, fragment: str) -> None:
    with pytest.raises(RecIndexError, match=fragment) as caught:
        SyntheticConfig.from_spec(spec)
    if "setting" in fragment or "needs" in fragment:
        assert "valid keys: n_users, n_items, n_clusters" in str(caught.value)


def test_shape_and_lengths(data) -> None:
    config = SyntheticConfig()
    assert data.name == "synthetic"
    assert (data.n_users, data.n_items) == (config.n_users, config.n_items)
    lengths = data.lengths()
    assert lengths.min() >= config.min_length
    assert abs(lengths.mean() - config.mean_length) < 1.0
    assert lengths.std() > 2  # a spread of lengths, not all equal
    assert data.item_features.offsets[-1] == config.n_items * config.attributes_per_item


def test_deterministic_for_a_seed() -> None:
    config = SyntheticConfig(n_users=300, n_items=400)
    assert generate(config).fingerprint() == generate(config).fingerprint()
    other = generate(SyntheticConfig(n_users=300, n_items=400, seed=1))
    assert other.fingerprint() != generate(config).fingerprint()


def test_no_repeats_and_increasing_timestamps(data) -> None:
    owner = owners(data)
    keys = owner * data.n_items + data.items
    assert len(np.unique(keys)) == len(keys)
    steps = np.diff(data.timestamps)
    within_user = owner[1:] == owner[:-1]
    assert (steps[within_user] > 0).all()


def test_popularity_is_skewed(data) -> None:
    counts = np.sort(data.item_counts())[::-1]
    assert counts[: data.n_items // 10].sum() > 0.3 * counts.sum()
    flat = generate(SyntheticConfig(zipf_exponent=0.0))
    flat_counts = np.sort(flat.item_counts())[::-1]
    assert flat_counts[: flat.n_items // 10].sum() < counts[: data.n_items // 10].sum()


def test_users_items_concentrate_in_their_clusters(data) -> None:
    item_clusters, user_clusters = data.extra["item_clusters"], data.extra["user_clusters"]
    assert item_clusters.shape == (data.n_items,)
    assert np.bincount(item_clusters).min() > 0  # every cluster has items
    k = (user_clusters >= 0).sum(axis=1)
    assert set(k.tolist()) == {1, 2, 3}
    inside = (user_clusters[owners(data)] == item_clusters[data.items][:, None]).any(axis=1).mean()
    assert inside > 0.75  # cluster_purity = 0.8, plus chance hits from the other 20%
    mixed = generate(SyntheticConfig(cluster_purity=0.0))
    inside_mixed = (user_clusters[owners(mixed)] == item_clusters[mixed.items][:, None]).any(axis=1).mean()
    assert inside_mixed < 0.3


def test_clusters_drift_sequentially() -> None:
    def switch_rate(drift: float) -> float:
        config = SyntheticConfig(n_users=1000, drift=drift, cluster_purity=1.0)
        data = generate(config)
        clusters = data.extra["item_clusters"][data.items]
        owner = owners(data)
        same_user = owner[1:] == owner[:-1]
        multi = ((data.extra["user_clusters"] >= 0).sum(axis=1) > 1)[owner[1:]]
        return float((clusters[1:] != clusters[:-1])[same_user & multi].mean())

    assert switch_rate(0.0) < 0.02
    assert 0.2 < switch_rate(0.3) < 0.4


def test_attributes_follow_clusters(data) -> None:
    features, item_clusters = data.item_features, data.extra["item_clusters"]
    tokens = features.tokens.reshape(data.n_items, -1)
    assert all(len(set(row)) == len(row) for row in tokens.tolist())  # distinct per item
    # Within a cluster a few attributes dominate: the top 6 cover most of its items' tokens.
    shares = []
    for cluster in range(20):
        counts = np.sort(np.bincount(tokens[item_clusters == cluster].ravel(), minlength=50))[::-1]
        shares.append(counts[:6].sum() / counts.sum())
    assert np.mean(shares) > 0.7
    assert features.names[0] == "attr=0" and features.n_tokens == 50


def test_tiny_and_edge_configs() -> None:
    tiny = generate(
        SyntheticConfig(n_users=5, n_items=10, n_clusters=1, mean_length=20, attributes_per_item=0)
    )
    assert tiny.lengths().max() <= 5  # capped at half the catalogue, so no repeats are needed
    assert tiny.item_features.offsets[-1] == 0
    full = generate(
        SyntheticConfig(
            n_users=3, n_items=6, n_clusters=2, n_attributes=3, attributes_per_item=3, min_length=2
        )
    )
    assert (np.sort(full.item_features.tokens.reshape(6, 3), axis=1) == [0, 1, 2]).all()


def test_large_catalogue_is_fast() -> None:
    start = time.perf_counter()
    data = generate(SyntheticConfig(n_users=20_000, n_items=200_000, seed=5))
    elapsed = time.perf_counter() - start
    assert data.n_items == 200_000 and data.n_interactions > 200_000
    assert elapsed < 10, f"generating 200k items took {elapsed:.1f}s"
