import math

import numpy as np
import pytest
import torch

from recindex.eval.metrics import coverage, gini, mean_popularity, mrr, ndcg_at_k, ranking_report, recall_at_k
from recindex.index.exact import exact_search


def test_recall_ndcg_mrr_by_hand():
    ranks = np.array([0, 2, 9, 10, 50])  # 0-based ranks of the target
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 5)
    assert recall_at_k(ranks, 10) == pytest.approx(3 / 5)
    expected_ndcg = (1 / math.log2(2) + 1 / math.log2(4) + 1 / math.log2(11)) / 5
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected_ndcg)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 11 + 1 / 51) / 5)


def test_coverage_popularity_gini_by_hand():
    top = np.array([[0, 1], [0, 2]])
    assert coverage(top, 4) == pytest.approx(3 / 4)
    counts = np.array([10, 4, 2, 0])
    assert mean_popularity(top, counts) == pytest.approx((10 + 4 + 10 + 2) / 4)
    assert gini(np.array([[0], [1], [2], [3]]), 4) == pytest.approx(0.0)
    # One item gets everything among 4: Gini = (n - 1) / n.
    assert gini(np.array([[0], [0], [0]]), 4) == pytest.approx(0.75)


def test_cold_recall_only_counts_cold_targets():
    ranks = np.array([0, 30, 60])
    report = ranking_report(
        ranks, np.zeros((3, 10), np.int64), np.ones(5), (10, 50), np.array([False, True, True])
    )
    assert report["cold_recall@50"] == pytest.approx(0.5)
    assert report["recall@50"] == pytest.approx(2 / 3)


def test_exact_search_masks_history_and_ranks_pessimistically_on_ties():
    items = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.0]])
    queries = torch.tensor([[1.0, 0.0]])
    ids, scores, ranks = exact_search(
        queries,
        items,
        2,
        exclude_offsets=np.array([0, 1]),
        exclude_items=np.array([0]),
        targets=np.array([3]),
    )
    assert ids[0].tolist() == [3, 1]
    assert ranks[0] == 0
    # Without the mask, item 0 ties item 3: the tie counts against the target.
    _, _, ranks = exact_search(queries, items, 2, targets=np.array([3]))
    assert ranks[0] == 1
    # A degenerate model (every score equal) gets the worst rank, never a perfect one.
    _, _, ranks = exact_search(queries, torch.zeros(4, 2), 2, targets=np.array([2]))
    assert ranks[0] == 3


def test_exact_search_refuses_nan_scores():
    items = torch.tensor([[float("nan"), 0.0], [1.0, 0.0]])
    with pytest.raises(FloatingPointError):
        exact_search(torch.tensor([[1.0, 0.0]]), items, 1, targets=np.array([1]))
