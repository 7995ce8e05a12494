"""Balanced assignment: no token over its load, items keep their best token when there is room."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.quant.assignment import balanced_assignment, even_share, max_load


def test_without_pressure_every_item_gets_its_most_probable_token():
    probabilities = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]] + 0.01
    assert balanced_assignment(probabilities).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_an_overloaded_token_sends_the_least_confident_items_to_their_next_choice():
    # six items want token 0; at most two fit (ceil(6 / 3)); the four least sure go on to token 1 or 2
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.8, 0.15, 0.05],
            [0.7, 0.2, 0.1],
            [0.6, 0.1, 0.3],
            [0.5, 0.4, 0.1],
            [0.4, 0.35, 0.25],
        ]
    )
    tokens = balanced_assignment(probabilities)
    assert tokens[:2].tolist() == [0, 0]
    assert np.bincount(tokens, minlength=3).max() <= 2
    assert tokens[3] == 2  # its second choice


def test_each_parent_is_split_evenly_on_its_own():
    rng = np.random.default_rng(0)
    probabilities = rng.random((1000, 8)) ** 4  # skewed preferences
    groups = rng.integers(0, 5, 1000)
    tokens = balanced_assignment(probabilities, groups)
    for group in range(5):
        size = int((groups == group).sum())
        assert np.bincount(tokens[groups == group], minlength=8).max() <= even_share(size, 8)
    assert max_load(tokens, 8, groups) <= max(even_share(int((groups == g).sum()), 8) for g in range(5))


def test_bad_input_is_refused():
    with pytest.raises(InvalidRequest, match="matrix"):
        balanced_assignment(np.ones(5))
    with pytest.raises(InvalidRequest, match="finite"):
        balanced_assignment(np.array([[np.nan, 1.0]]))
    with pytest.raises(InvalidRequest, match="cannot hold"):
        balanced_assignment(np.ones((10, 2)), capacity=4)
