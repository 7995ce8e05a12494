"""Spread over seeds and the tests of the named comparisons.

- mean +- the half-width of a 95% confidence interval over seeds (Student's t with n - 1 degrees of
  freedom; none with one seed);
- a paired comparison over seeds: the difference per seed, its mean and interval, and a paired t-test;
- a paired bootstrap over users (the test cases are the same users in every seed: the split does not
  depend on the seed): each user's difference averaged over the seeds, resampled, for an interval of the
  mean difference and a two-sided p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05  # written out: 1 - 0.95 is 0.05000000000000004 in floating point, which let p = 0.05 pass
LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Spread:
    mean: float
    half_width: float  # nan with one value
    n: int

    def text(self, digits: int = 4) -> str:
        if math.isnan(self.mean):
            return "-"
        if self.n < 2 or math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def spread(values) -> Spread:
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(values) == 0:
        return Spread(float("nan"), float("nan"), 0)
    if len(values) < 2:
        return Spread(float(values[0]), float("nan"), 1)
    sem = values.std(ddof=1) / math.sqrt(len(values))
    return Spread(float(values.mean()), float(stats.t.ppf(1 - ALPHA / 2, len(values) - 1) * sem), len(values))


@dataclass(frozen=True)
class PairedTest:
    difference: Spread  # a - b over the paired seeds
    p_value: float  # paired t-test (nan with one seed)
    verdict: str


def paired_seeds(a, b, name_a: str, name_b: str) -> PairedTest:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    difference = spread(diff)
    n = len(diff)
    if n < 2:
        return PairedTest(
            difference, float("nan"), f"one seed: no test ({_lead(difference.mean, name_a, name_b)})"
        )
    if np.all(diff == diff[0]):  # no spread at all: the t statistic is undefined
        p = 1.0 if diff[0] == 0 else 0.0
        return PairedTest(difference, p, verdict(difference.mean, p, name_a, name_b, f"at {n} seeds"))
    p = float(stats.ttest_rel(a, b).pvalue)
    return PairedTest(difference, p, verdict(difference.mean, p, name_a, name_b, f"at {n} seeds"))


@dataclass(frozen=True)
class BootstrapTest:
    difference: float  # mean over users of (a - b), averaged over seeds
    low: float
    high: float
    p_value: float
    users: int
    verdict: str


def paired_users(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, seed: int = 0) -> BootstrapTest:
    """a, b: (seeds, users) per-user values of one metric; paired by seed and by user."""
    per_user = (np.asarray(a, float) - np.asarray(b, float)).mean(axis=0)
    mean = float(per_user.mean())
    if np.all(per_user == per_user[0]):
        p = 1.0 if mean == 0 else 0.0
        return BootstrapTest(
            mean, mean, mean, p, len(per_user), verdict(mean, p, name_a, name_b, "over users")
        )
    result = stats.bootstrap(
        (per_user,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        batch=100,
        random_state=np.random.default_rng(seed),
    )
    draws = result.bootstrap_distribution
    p = float(min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean())))
    p = max(p, 1 / BOOTSTRAP_RESAMPLES)  # no smaller p can be told from this many resamples
    low, high = result.confidence_interval
    return BootstrapTest(
        mean, float(low), float(high), p, len(per_user), verdict(mean, p, name_a, name_b, "over users")
    )


def verdict(difference: float, p: float, name_a: str, name_b: str, basis: str) -> str:
    if p < ALPHA:
        better = name_a if difference > 0 else name_b
        return f"{better} better, p={p:.3g}"
    return f"not distinguishable {basis} (p={p:.3g})"


def _lead(difference: float, name_a: str, name_b: str) -> str:
    if difference == 0:
        return "equal"
    return f"{name_a if difference > 0 else name_b} ahead"


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray | None:
    """Each case's value of a ranking metric from its target's 0-based rank (None: not per case)."""
    name, _, cut = metric.partition("@")
    ranks = np.asarray(ranks, dtype=float)
    if name == "recall" and cut.isdigit():
        return (ranks < int(cut)).astype(float)
    if name == "ndcg" and cut.isdigit():
        return np.where(ranks < int(cut), 1.0 / np.log2(ranks + 2), 0.0)
    if name == "mrr":
        depth = int(cut) if cut.isdigit() else None
        return np.where(ranks < (depth or np.inf), 1.0 / (ranks + 1), 0.0)
    return None
