"""Training batches drawn shard by shard from a dataset partitioned into user shards (`data.user_shards`):
the examples of one shard in memory at a time, never all of them.

An epoch visits this rank's shards (shard s belongs to rank s % world_size) in a seeded random order;
each shard is read, split on its own (leave-one-out: a shard holds whole users, so each user's last two
items are held out exactly as the whole dataset's split holds them out), turned into its users' examples
(`batches.sequence_examples`) and drawn in length-bucketed batches shuffled within the shard
(`batches.iterate_batches`). A batch holds users of one shard; over an epoch every training user's
examples are drawn once, as on the in-memory path, in another order.

Under torchrun each rank trains on batches of `batch_size` users from its own shards, and every rank
takes as many steps per epoch: the fewest any rank's shards give (counted up front from the users'
lengths), so that the gradient all-reduces pair up; the batches a rank has beyond that are left out of
that epoch (a different tail each epoch, since the shard order changes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from recindex.data.interactions import Interactions
from recindex.data.splits import Split, leave_one_out
from recindex.data.user_shards import UserShards
from recindex.errors import RecIndexError
from recindex.eval.shard_eval import evaluate_shards
from recindex.train.batches import Batch, SequenceExamples, iterate_batches, sequence_examples


def leave_one_out_training_lengths(lengths: np.ndarray) -> np.ndarray:
    """Each user's training items under `splits.leave_one_out`: all but the last two, for users with
    three or more; all of them otherwise."""
    lengths = np.asarray(lengths, np.int64)
    return np.where(lengths >= 3, lengths - 2, lengths)


class ShardedExamples:
    """A trainer's batches over user shards (see the module's docstring)."""

    def __init__(
        self,
        shards: UserShards,
        max_len: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        split_of: Callable[[Interactions], Split] = leave_one_out,
    ):
        """`split_of`: the split of one shard's users (a per-user split: the whole split restricted to
        them)."""
        if not 0 <= rank < world_size:
            raise RecIndexError(f"rank {rank} of {world_size} processes is not a rank")
        if shards.n_shards < world_size:
            raise RecIndexError(
                f"{shards.n_shards} user shard(s) for {world_size} processes: every process needs one; "
                f"lower data.shard_users (now {shards.shard_users:,}) or run fewer processes"
            )
        self.shards, self.max_len, self.rank, self.world_size = shards, max_len, rank, world_size
        self.split_of = split_of
        self._item_counts: np.ndarray | None = None
        self.mine = [shard for shard in range(shards.n_shards) if shard % world_size == rank]
        # training users per shard (users with two or more training items, as `sequence_examples` keeps)
        if split_of is leave_one_out:  # known from the users' lengths, without reading a shard
            trainable = leave_one_out_training_lengths(shards.user_lengths) >= 2
            self.users_per_shard = np.add.reduceat(
                trainable.astype(np.int64), np.arange(0, shards.n_users, shards.shard_users)
            )
        else:
            self.users_per_shard, self._item_counts = self._census()

    @property
    def n_users(self) -> int:
        """Training users over every shard (all ranks')."""
        return int(self.users_per_shard.sum())

    def n_batches(self, batch_size: int) -> int:
        """Steps per epoch on every rank: the fewest that any rank's shards give."""
        batches = [_batches_of(int(users), batch_size) for users in self.users_per_shard]
        return min(sum(batches[rank :: self.world_size]) for rank in range(self.world_size))

    def training_item_counts(self) -> np.ndarray:
        """Each item's occurrences in the training sequences of every shard (the split's
        `np.bincount(train_items)`), counted one shard in memory at a time."""
        if self._item_counts is None:
            counts = np.zeros(self.shards.n_items, np.int64)
            for shard in range(self.shards.n_shards):
                data = self.shards.read(shard)
                held_out = data.offsets[1:][data.lengths() >= 3]  # ends of users with held-out items
                kept = np.ones(len(data.items), bool)
                kept[held_out - 1], kept[held_out - 2] = False, False
                counts += np.bincount(data.items[kept], minlength=len(counts))
            self._item_counts = counts
        return self._item_counts

    def _census(self) -> tuple[np.ndarray, np.ndarray]:
        """The training users of each shard and each item's training occurrences, from one pass that
        splits every shard (for a split whose training sequences the users' lengths do not give)."""
        users = np.zeros(self.shards.n_shards, np.int64)
        counts = np.zeros(self.shards.n_items, np.int64)
        for shard in range(self.shards.n_shards):
            split = self.split_of(self.shards.read(shard))
            users[shard] = np.count_nonzero(np.diff(split.train_offsets) >= 2)
            counts += np.bincount(split.train_items, minlength=len(counts))
        return users, counts

    def evaluate(
        self, model: torch.nn.Module, which: str, item_counts: np.ndarray, **options
    ) -> dict[str, float]:
        """The metrics of split part `which` over every shard's users, one shard at a time
        (`eval.shard_eval.evaluate_shards`, which takes the `options`)."""
        return evaluate_shards(model, self.shards, which, item_counts, self.split_of, **options)

    def epoch(self, batch_size: int, rng: np.random.Generator, skip: int = 0) -> Iterator[Batch]:
        """This rank's batches of one epoch, after the `skip` already trained (a resumed epoch).

        One number is drawn from `rng` per epoch, the same on every rank (so that a checkpoint's
        generator, rank 0's, resumes every rank); each rank draws its shard order and batches from its
        own generator seeded by it."""
        seed = int(rng.integers(2**63))
        own = np.random.default_rng([seed, self.rank])
        steps, drawn = self.n_batches(batch_size), 0
        for index in own.permutation(len(self.mine)):
            if drawn >= steps:
                return
            examples = self.examples_of(self.mine[index])
            if not len(examples.users):
                continue
            for batch in iterate_batches(examples, batch_size, own):
                if drawn >= steps:
                    return
                drawn += 1
                if drawn > skip:
                    yield batch

    def examples_of(self, shard: int) -> SequenceExamples:
        """The training examples of a shard's users, numbered as in the whole dataset."""
        data = self.shards.read(shard)
        examples = sequence_examples(self.split_of(data), data.n_users, self.shards.n_items, self.max_len)
        first = self.shards.users_of(shard).start
        return SequenceExamples(
            examples.users + first, examples.inputs, examples.targets, examples.lengths, examples.pad
        )


def _batches_of(users: int, batch_size: int) -> int:
    """`batches.n_batches` of `users` examples: length buckets of 50 batches, each cut into batches."""
    bucket = batch_size * 50
    return sum(-(-min(bucket, users - start) // batch_size) for start in range(0, users, bucket))
