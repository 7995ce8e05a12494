import numpy as np
import pytest

from recindex.data.interactions import Interactions
from recindex.data.splits import cold_item, leave_one_out, temporal
from recindex.errors import RecIndexError


def _data():
    sequences = [[0, 1, 2, 3], [4, 5], [1, 2, 5]]
    stamps = [[1, 2, 8, 9], [3, 4], [5, 6, 10]]
    return Interactions.from_sequences(["a", "b", "c"], list("pqrstu"), sequences, stamps)


def test_leave_one_out_holds_out_last_two():
    split = leave_one_out(_data())
    assert split.train_sequence(0).tolist() == [0, 1]
    assert split.train_sequence(1).tolist() == [4, 5]  # too short to evaluate: all of it trains
    assert split.valid.users.tolist() == [0, 2]
    assert split.valid.targets.tolist() == [2, 2]
    assert split.valid.history(0).tolist() == [0, 1]
    assert split.test.targets.tolist() == [3, 5]
    assert split.test.history(0).tolist() == [0, 1, 2]


def test_temporal_split_uses_global_cutoffs():
    split = temporal(_data(), valid_quantile=0.5, test_quantile=0.75)
    cut_valid, cut_test = np.quantile([1, 2, 8, 9, 3, 4, 5, 6, 10], [0.5, 0.75])
    assert (cut_valid, cut_test) == (5.0, 8.0)
    assert split.train_sequence(0).tolist() == [0, 1]
    assert split.valid.users.tolist() == [2]  # c's t=5 item has no history; t=6 is the target
    assert split.valid.history(0).tolist() == [1]
    assert split.test.targets.tolist() == [2, 5]


def test_temporal_split_needs_timestamps():
    data = Interactions.from_sequences(["a"], ["x", "y"], [[0, 1]])
    with pytest.raises(RecIndexError, match="no timestamps"):
        temporal(data)


def test_cold_item_split_removes_items_from_training_entirely(tiny_synthetic):
    split = cold_item(tiny_synthetic, share=0.1, seed=3)
    assert len(split.cold_items) == 12
    assert not np.isin(split.train_items, split.cold_items).any()
    assert np.array_equal(split.cold_items, cold_item(tiny_synthetic, share=0.1, seed=3).cold_items)
    assert not np.array_equal(split.cold_items, cold_item(tiny_synthetic, share=0.1, seed=4).cold_items)
    # Evaluation cases are those of leave-one-out: some targets are cold items.
    assert np.isin(split.test.targets, split.cold_items).any()
