"""Batches under data parallelism: every rank's share of the same global batches, and a resumed epoch's
batches skipped."""

import numpy as np

from recindex.data.splits import leave_one_out
from recindex.train.batches import iterate_batches, sequence_examples


def _batches(data, batch_size, rank=0, world_size=1, skip=0):
    examples = sequence_examples(leave_one_out(data), data.n_users, data.n_items, 10)
    rng = np.random.default_rng(3)
    return [
        b.rows
        for b in iterate_batches(examples, batch_size, rng, rank=rank, world_size=world_size, skip=skip)
    ]


def test_the_ranks_shares_make_up_the_global_batches_of_one_process(tiny_synthetic):
    whole = _batches(tiny_synthetic, 64)
    shares = [_batches(tiny_synthetic, 32, rank, 2) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == len([rows for rows in whole if len(rows) >= 2])
    for rows, zero, one in zip(whole, *shares, strict=False):
        assert sorted(np.concatenate([zero, one])) == sorted(rows)
        assert abs(len(zero) - len(one)) <= 1


def test_a_resumed_epoch_skips_the_batches_it_trained(tiny_synthetic):
    assert [list(rows) for rows in _batches(tiny_synthetic, 16, skip=3)] == [
        list(rows) for rows in _batches(tiny_synthetic, 16)[3:]
    ]
