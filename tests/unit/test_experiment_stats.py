"""Spread over seeds, the paired tests and their verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recindex.experiments.stats import paired_seeds, paired_users, per_user_metric, spread, verdict


def test_the_interval_is_students_t_over_the_seeds():
    summary = spread([0.10, 0.12, 0.14])
    # t(0.975, 2) = 4.302653; standard error = 0.02 / sqrt(3)
    assert summary.mean == pytest.approx(0.12)
    assert summary.half_width == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert spread([0.1]).text() == "0.1000" and math.isnan(spread([0.1]).half_width)


def test_a_verdict_names_a_winner_only_below_p_0_05():
    assert verdict(0.01, 0.05, "A", "B", "at 3 seeds") == "not distinguishable at 3 seeds (p=0.05)"
    assert verdict(0.01, 0.0499, "A", "B", "at 3 seeds") == "A better, p=0.0499"
    assert verdict(-0.01, 0.001, "A", "B", "at 3 seeds") == "B better, p=0.001"


def test_paired_tests_over_seeds_and_users():
    same = paired_seeds([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "A", "B")
    assert same.p_value == 1.0 and same.verdict.startswith("not distinguishable at 3 seeds")
    ahead = paired_seeds([0.2, 0.31, 0.4], [0.1, 0.2, 0.3], "A", "B")
    assert ahead.p_value < 0.05 and ahead.verdict.startswith("A better")
    assert paired_seeds([0.2], [0.1], "A", "B").verdict == "one seed: no test (A ahead)"
    rng = np.random.default_rng(0)
    hits = (rng.random((2, 500)) < 0.3).astype(float)
    better = hits + 1.0 * (rng.random((2, 500)) < 0.2)
    assert paired_users(better, hits, "A", "B").verdict.startswith("A better")
    assert paired_users(hits, hits, "A", "B").p_value == 1.0


def test_per_user_values_from_ranks():
    ranks = np.array([0, 4, 9, 10, 50])
    assert per_user_metric(ranks, "recall@10").tolist() == [1, 1, 1, 0, 0]
    assert per_user_metric(ranks, "ndcg@10")[0] == 1.0 and per_user_metric(ranks, "ndcg@10")[3] == 0.0
    assert per_user_metric(ranks, "mrr@10")[1] == pytest.approx(0.2)
    assert per_user_metric(ranks, "coverage@10") is None
