"""The token tree of semantic IDs and the beam search restricted to prefixes that exist."""

import itertools

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.uri.token_tree import TokenTree, beam_search

CODES = np.array([[0, 1], [0, 1], [0, 3], [2, 0], [2, 2], [3, 3]])  # items 0..5; prefixes (1, x) never occur
TREE = TokenTree(CODES, k=4)


def test_the_tree_knows_its_prefixes_and_leaf_members():
    assert TREE.exists(np.array([0, 1, 2, 3]), 0).tolist() == [True, False, True, True]
    assert TREE.exists(np.array([0 * 4 + 1, 1 * 4 + 1, 3 * 4 + 3]), 1).tolist() == [True, False, True]
    assert sorted(TREE.items_of(np.array([1, 3 * 4 + 3, 99])).tolist()) == [0, 1, 5]


def test_beam_search_matches_brute_force_over_existing_leaves():
    rng = np.random.default_rng(0)
    # per query: the layer-0 distribution, then one layer-1 distribution per first token
    table = np.log(rng.dirichlet(np.ones(4), size=(3, 5)))

    def log_probs(tokens, layer):
        n, b, _ = tokens.shape
        if layer == 0:
            return np.repeat(table[:, 0][:, None, :], b, axis=1)
        return table[np.arange(n)[:, None], 1 + tokens[:, :, 0]]

    leaves, scores = beam_search(log_probs, TREE, n_queries=3, beam=3)
    for q in range(3):
        existing = {int(c[0]) * 4 + int(c[1]) for c in CODES}
        brute = sorted(
            (
                (table[q, 0, a] + table[q, 1 + a, b], a * 4 + b)
                for a, b in itertools.product(range(4), range(4))
                if a * 4 + b in existing
            ),
            reverse=True,
        )[:3]
        assert leaves[q].tolist() == [leaf for _, leaf in brute]
        np.testing.assert_allclose(scores[q], [s for s, _ in brute])


def test_a_beam_wider_than_the_tree_pads_with_minus_one():
    def uniform(tokens, layer):
        return np.full((*tokens.shape[:2], 4), np.log(0.25))

    leaves, scores = beam_search(uniform, TREE, n_queries=1, beam=10)
    assert (leaves[0] >= 0).sum() == 5 and (leaves[0][5:] == -1).all() and np.isinf(scores[0][5:]).all()
    with pytest.raises(InvalidRequest, match="beam"):
        beam_search(uniform, TREE, 1, 0)
    with pytest.raises(InvalidRequest, match="tokens in"):
        TokenTree(np.array([[0, 5]]), k=4)
