"""Batches drawn shard by shard: one epoch draws every training user's examples once, as the in-memory
path does; shuffled per epoch and seeded; each rank its own shards, every rank as many steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.unit.test_parquet_dir import log_table, write_parts

from recindex.data.parquet_dir import load_parquet_dir
from recindex.data.splits import leave_one_out
from recindex.data.user_shards import partition
from recindex.errors import RecIndexError
from recindex.train.batches import n_batches, sequence_examples
from recindex.train.shard_batches import ShardedExamples, leave_one_out_training_lengths

MAX_LEN = 6


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_parts(log_table(n_rows=3000), tmp_path / "log", parts=3)


def _rows(batches) -> list[tuple]:
    """Each drawn example row as (user, its real inputs, its real targets)."""
    rows = []
    for batch in batches:
        for user, inputs, targets, length in zip(
            batch.users.tolist(), batch.inputs, batch.targets, batch.lengths.tolist(), strict=True
        ):
            rows.append((user, tuple(inputs[:length].tolist()), tuple(targets[:length].tolist())))
    return rows


def test_an_epoch_draws_the_in_memory_examples_once(folder: Path) -> None:
    whole = load_parquet_dir(folder)
    examples = sequence_examples(leave_one_out(whole), whole.n_users, whole.n_items, MAX_LEN)
    columns = (examples.users, examples.inputs, examples.targets, examples.lengths)
    expected = sorted(
        (int(u), tuple(i[:n].tolist()), tuple(t[:n].tolist())) for u, i, t, n in zip(*columns, strict=True)
    )
    with partition(folder, 7) as shards:
        sharded = ShardedExamples(shards, MAX_LEN)
        assert sharded.n_users == len(examples.users)
        batches = list(sharded.epoch(4, np.random.default_rng(0)))
        assert len(batches) == sharded.n_batches(4) >= n_batches(examples, 4)
        assert sorted(_rows(batches)) == expected
        for batch in batches:  # a batch's users come from one shard
            assert len({int(u) // 7 for u in batch.users}) == 1


def test_epochs_are_shuffled_and_seeded_and_a_resumed_one_skips(folder: Path) -> None:
    with partition(folder, 7) as shards:
        sharded = ShardedExamples(shards, MAX_LEN)
        rng = np.random.default_rng(5)
        first, second = _rows(sharded.epoch(4, rng)), _rows(sharded.epoch(4, rng))
        assert first != second and sorted(first) == sorted(second)
        assert _rows(sharded.epoch(4, np.random.default_rng(5))) == first
        resumed = _rows(sharded.epoch(4, np.random.default_rng(5), skip=3))
        assert resumed == _rows(list(sharded.epoch(4, np.random.default_rng(5)))[3:])


def test_each_rank_reads_its_own_shards_for_as_many_steps(folder: Path) -> None:
    with partition(folder, 5) as shards:
        ranks = [ShardedExamples(shards, MAX_LEN, rank=rank, world_size=2) for rank in range(2)]
        drawn = [list(ranks[rank].epoch(4, np.random.default_rng(1))) for rank in range(2)]
        assert len(drawn[0]) == len(drawn[1]) == ranks[0].n_batches(4)
        for rank in range(2):
            shards_read = {int(u) // 5 for batch in drawn[rank] for u in batch.users}
            assert shards_read and all(shard % 2 == rank for shard in shards_read)
        with pytest.raises(RecIndexError, match="every process needs one"):
            ShardedExamples(shards, MAX_LEN, rank=0, world_size=shards.n_shards + 1)


def test_training_lengths_are_the_leave_one_out_split(folder: Path) -> None:
    whole = load_parquet_dir(folder)
    split = leave_one_out(whole)
    assert leave_one_out_training_lengths(whole.lengths()).tolist() == np.diff(split.train_offsets).tolist()
    with partition(folder, 7) as shards:
        counts = ShardedExamples(shards, MAX_LEN).training_item_counts()
    assert counts.tolist() == np.bincount(split.train_items, minlength=whole.n_items).tolist()
