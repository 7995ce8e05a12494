"""Synthetic interaction data with known structure, for tests, demos and scale runs of any size.

Items belong to latent interest clusters and have Zipf-distributed popularity; each user has 1-3
interest clusters and a sequence that mostly stays in the current cluster and drifts between the
user's clusters over time; item attribute tokens are correlated with the clusters. A model that learns
anything should beat popularity here, and the ground truth (`extra["item_clusters"]`,
`extra["user_clusters"]`) lets tests check what it learned.

Everything is vectorised over all interactions at once (no per-user Python loop and nothing of size
n_users * n_items), so a million-item catalogue takes seconds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from recindex.data.interactions import Interactions, ItemFeatures
from recindex.errors import RecIndexError

_START_TIME = 1_600_000_000  # 2020-09-13: an arbitrary, fixed epoch so that output is reproducible
_MEAN_GAP_S = 86_400.0  # about one interaction per day per user
_ATTRIBUTE_PURITY = 0.8  # share of an item's attribute tokens taken from its cluster's preferred set


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 2000
    n_items: int = 1000
    n_clusters: int = 20
    n_attributes: int = 50
    attributes_per_item: int = 3
    mean_length: float = 12.0
    min_length: int = 5
    zipf_exponent: float = 1.0
    drift: float = 0.1
    cluster_purity: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.n_users >= 1, "n_users must be at least 1"),
            (self.n_items >= 2, "n_items must be at least 2"),
            (1 <= self.n_clusters <= self.n_items, "n_clusters must be between 1 and n_items"),
            (self.n_attributes >= 1, "n_attributes must be at least 1"),
            (
                0 <= self.attributes_per_item <= self.n_attributes,
                "attributes_per_item must be between 0 and n_attributes",
            ),
            (self.min_length >= 1, "min_length must be at least 1"),
            (self.min_length <= self.n_items // 2, "min_length must be at most n_items / 2 (no repeats)"),
            (self.mean_length >= self.min_length, "mean_length must be at least min_length"),
            (self.zipf_exponent >= 0, "zipf_exponent must be >= 0"),
            (0 <= self.drift <= 1, "drift must be between 0 and 1"),
            (0 <= self.cluster_purity <= 1, "cluster_purity must be between 0 and 1"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise RecIndexError(f"invalid synthetic data settings: {'; '.join(problems)}")

    @staticmethod
    def from_spec(spec: str) -> SyntheticConfig:
        """Parse `synthetic` or `synthetic:n_users=1000,n_items=500,seed=3`."""
        head, _, body = spec.partition(":")
        if head.strip() != "synthetic":
            raise RecIndexError(f"not a synthetic data spec: {spec!r} (expected 'synthetic[:key=value,...]')")
        types = {f.name: f.type for f in dataclasses.fields(SyntheticConfig)}
        valid = ", ".join(types)
        values: dict[str, int | float] = {}
        for part in filter(None, (p.strip() for p in body.split(","))):
            key, sep, raw = (s.strip() for s in part.partition("="))
            if key not in types:
                raise RecIndexError(
                    f"unknown synthetic data setting {key!r} in {spec!r}; valid keys: {valid}"
                )
            wanted = int if types[key] in (int, "int") else float
            try:
                if not sep:
                    raise ValueError
                values[key] = wanted(raw)
            except ValueError:
                kind = "an integer" if wanted is int else "a number"
                raise RecIndexError(
                    f"synthetic data setting {key!r} needs {kind} ({key}=...), got {raw!r} in {spec!r}; "
                    f"valid keys: {valid}"
                ) from None
        return SyntheticConfig(**values)


def generate(config: SyntheticConfig | None = None) -> Interactions:
    config = config or SyntheticConfig()
    rng = np.random.default_rng(config.seed)
    n_items, n_clusters = config.n_items, config.n_clusters

    # Balanced random clusters (every cluster non-empty) and Zipf popularity over a random item order.
    item_clusters = rng.permutation(np.arange(n_items) % n_clusters).astype(np.int64)
    popularity = 1.0 / np.arange(1, n_items + 1, dtype=np.float64) ** config.zipf_exponent
    popularity = popularity[rng.permutation(n_items)]
    sampler = _ClusterSampler(item_clusters, popularity, n_clusters)

    user_clusters = _user_clusters(rng, config.n_users, n_clusters)
    lengths = _lengths(rng, config)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    owner = np.repeat(np.arange(config.n_users), lengths)
    step_cluster = user_clusters[owner, _cluster_slots(rng, config.drift, user_clusters, owner, offsets)]

    in_cluster = rng.random(len(owner)) < config.cluster_purity
    items = sampler.draw(rng, step_cluster, in_cluster)
    _remove_repeats(rng, items, owner, step_cluster, in_cluster, sampler)

    gaps = 1 + rng.exponential(_MEAN_GAP_S, len(items)).astype(np.int64)  # strictly increasing per user
    starts = _START_TIME + rng.integers(0, 365 * 86_400, config.n_users)
    timestamps = starts[owner] + _segment_cumsum(gaps, offsets)

    return Interactions(
        user_ids=np.arange(config.n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        offsets=offsets,
        items=items,
        timestamps=timestamps,
        item_features=_attributes(rng, config, item_clusters),
        name="synthetic",
        extra={"item_clusters": item_clusters, "user_clusters": user_clusters},
    )


class _ClusterSampler:
    """Popularity-weighted draws from one cluster, or from the whole catalogue, by inverse CDF."""

    def __init__(self, item_clusters: np.ndarray, popularity: np.ndarray, n_clusters: int):
        self.order = np.argsort(item_clusters, kind="stable")  # items grouped by cluster
        self.cdf = np.cumsum(popularity[self.order])
        ends = np.cumsum(np.bincount(item_clusters, minlength=n_clusters))
        self.first = ends - np.bincount(item_clusters, minlength=n_clusters)
        self.last = ends - 1
        self.below = np.where(self.first > 0, self.cdf[np.maximum(self.first - 1, 0)], 0.0)
        self.mass = self.cdf[self.last] - self.below
        self.global_cdf = np.cumsum(popularity)

    def draw(self, rng: np.random.Generator, clusters: np.ndarray, in_cluster: np.ndarray) -> np.ndarray:
        """One item per entry: from `clusters[i]` where `in_cluster[i]`, else from anywhere."""
        u = rng.random(len(clusters))
        positions = np.searchsorted(self.cdf, self.below[clusters] + u * self.mass[clusters], side="right")
        # Float rounding can step just past a cluster's end: clamp into the cluster.
        positions = np.clip(positions, self.first[clusters], self.last[clusters])
        anywhere = np.searchsorted(self.global_cdf, u * self.global_cdf[-1], side="right")
        anywhere = np.minimum(anywhere, len(self.global_cdf) - 1)
        return np.where(in_cluster, self.order[positions], anywhere).astype(np.int64)

    def draw_uniform(
        self, rng: np.random.Generator, clusters: np.ndarray, in_cluster: np.ndarray
    ) -> np.ndarray:
        """As `draw`, but ignoring popularity: the way out when popular items keep colliding."""
        span = self.last[clusters] - self.first[clusters] + 1
        positions = self.first[clusters] + (rng.random(len(clusters)) * span).astype(np.int64)
        anywhere = rng.integers(0, len(self.order), len(clusters))
        return np.where(in_cluster, self.order[positions], anywhere).astype(np.int64)


def _user_clusters(rng: np.random.Generator, n_users: int, n_clusters: int) -> np.ndarray:
    """(n_users, 3) distinct clusters per user, padded with -1 past each user's 1-3 clusters."""
    k = rng.integers(1, min(3, n_clusters) + 1, n_users)
    first = rng.integers(0, n_clusters, n_users)
    # Distinct draws without an (n_users, n_clusters) matrix: draw from the smaller range, then skip
    # over the clusters already taken.
    second = (first + 1 + rng.integers(0, max(n_clusters - 1, 1), n_users)) % n_clusters
    low, high = np.minimum(first, second), np.maximum(first, second)
    third = rng.integers(0, max(n_clusters - 2, 1), n_users)
    third = third + (third >= low)
    third = third + (third >= high)
    chosen = np.stack([first, second, third], axis=1)
    return np.where(np.arange(3)[None, :] < k[:, None], chosen, -1).astype(np.int64)


def _lengths(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """Shifted geometric lengths: at least min_length, mean mean_length, capped at half the catalogue."""
    extra_mean = config.mean_length - config.min_length
    extra = rng.geometric(1.0 / (extra_mean + 1.0), config.n_users) - 1
    return np.minimum(config.min_length + extra, config.n_items // 2).astype(np.int64)


def _segment_cumsum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each user's first interaction."""
    total = np.cumsum(values)
    before = np.concatenate([[0], total])[offsets[:-1]]
    return total - np.repeat(before, np.diff(offsets))


def _cluster_slots(
    rng: np.random.Generator, drift: float, user_clusters: np.ndarray, owner: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Which of its user's clusters each step draws from: a random start, then with probability `drift`
    per step a move to one of the user's other clusters (a running sum of moves, modulo k)."""
    k = (user_clusters >= 0).sum(axis=1)[owner]
    moves = np.where(rng.random(len(owner)) < drift, 1 + rng.integers(0, np.maximum(k - 1, 1)), 0)
    starts = offsets[:-1][np.diff(offsets) > 0]
    moves[starts] = rng.integers(0, k[starts])  # each user's first step: a random one of its clusters
    return _segment_cumsum(moves, offsets) % k


def _remove_repeats(
    rng: np.random.Generator,
    items: np.ndarray,
    owner: np.ndarray,
    clusters: np.ndarray,
    in_cluster: np.ndarray,
    sampler: _ClusterSampler,
) -> None:
    """Redraw later repeats of an item within a user's sequence, in place, until there are none.

    A redraw keeps the step's choice of cluster or anywhere, so that repeats do not leak in-cluster
    steps out of the cluster. Popularity-weighted first; if popular items keep colliding, uniform; if a
    user wants more items from a cluster than it has, uniform over the catalogue (always converges:
    sequences are at most half the catalogue).
    """
    n_items = len(sampler.order)
    for round_no in range(1000):
        keys = owner.astype(np.int64) * n_items + items
        _, first = np.unique(keys, return_index=True)
        repeated = np.ones(len(items), bool)
        repeated[first] = False
        where = np.flatnonzero(repeated)
        if not len(where):
            return
        if round_no < 8:
            items[where] = sampler.draw(rng, clusters[where], in_cluster[where])
        elif round_no < 16:
            items[where] = sampler.draw_uniform(rng, clusters[where], in_cluster[where])
        else:
            items[where] = rng.integers(0, n_items, len(where))
    raise RuntimeError("could not remove repeated items from synthetic sequences")  # pragma: no cover


def _attributes(rng: np.random.Generator, config: SyntheticConfig, item_clusters: np.ndarray) -> ItemFeatures:
    """`attributes_per_item` distinct tokens per item, mostly from its cluster's preferred set."""
    n_items, per_item, n_attributes = config.n_items, config.attributes_per_item, config.n_attributes
    names = [f"attr={a}" for a in range(n_attributes)]
    if per_item == 0:
        return ItemFeatures(np.zeros(n_items + 1, np.int64), np.zeros(0, np.int64), names)
    n_preferred = min(n_attributes, 2 * per_item)
    preferred = np.argsort(rng.random((config.n_clusters, n_attributes)), axis=1)[:, :n_preferred]
    # Distinct picks from the preferred set: the first `per_item` of a random order per item.
    picks = np.argsort(rng.random((n_items, n_preferred)), axis=1)[:, :per_item]
    tokens = preferred[item_clusters[:, None], picks]
    noise = rng.random(tokens.shape) >= _ATTRIBUTE_PURITY
    tokens[noise] = rng.integers(0, n_attributes, int(noise.sum()))
    while True:  # a noise token may repeat one already taken: redraw it (n_attributes >= per_item)
        ordered = np.sort(tokens, axis=1)
        rows = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if not len(rows):
            break
        tokens[rows] = _redraw_duplicates(rng, tokens[rows], n_attributes)
    offsets = np.arange(0, n_items * per_item + 1, per_item, dtype=np.int64)
    return ItemFeatures(offsets, tokens.reshape(-1).astype(np.int64), names)


def _redraw_duplicates(rng: np.random.Generator, rows: np.ndarray, n_attributes: int) -> np.ndarray:
    """Redraw every token equal to an earlier token in its row."""
    rows = rows.copy()
    for column in range(1, rows.shape[1]):
        clash = (rows[:, :column] == rows[:, column : column + 1]).any(axis=1)
        rows[clash, column] = rng.integers(0, n_attributes, int(clash.sum()))
    return rows
