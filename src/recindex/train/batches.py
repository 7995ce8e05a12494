"""Training examples from sequences: every position of a user's training sequence predicts the next item.

Batches group users of similar length (shuffled within buckets) so that little time goes into padding:
on Beauty the mean sequence is 9 items long while the window is 50.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recindex.data.splits import Split


@dataclass(frozen=True)
class SequenceExamples:
    users: np.ndarray  # (U,) users with at least two training items
    inputs: np.ndarray  # (U, L) right-padded with `pad`
    targets: np.ndarray  # (U, L) next item at each position, `pad` where there is none
    lengths: np.ndarray  # (U,) number of real input positions
    pad: int


def sequence_examples(split: Split, n_users: int, n_items: int, max_len: int) -> SequenceExamples:
    users, windows = [], []
    for user in range(n_users):
        sequence = split.train_sequence(user)
        if len(sequence) >= 2:
            users.append(user)
            windows.append(sequence[-(max_len + 1) :])
    inputs = np.full((len(users), max_len), n_items, np.int64)
    targets = np.full((len(users), max_len), n_items, np.int64)
    lengths = np.zeros(len(users), np.int64)
    for row, window in enumerate(windows):
        n = len(window) - 1
        inputs[row, :n] = window[:-1]
        targets[row, :n] = window[1:]
        lengths[row] = n
    return SequenceExamples(np.asarray(users, np.int64), inputs, targets, lengths, n_items)


@dataclass(frozen=True)
class Batch:
    users: torch.Tensor  # (B,)
    inputs: torch.Tensor  # (B, L)
    targets: torch.Tensor  # (B, L)
    lengths: torch.Tensor  # (B,)
    rows: np.ndarray  # (B,) row numbers into SequenceExamples (to look up per-user hard negatives)

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        return Batch(
            *(t.to(device, non_blocking=True) for t in (self.users, self.inputs, self.targets, self.lengths)),
            rows=self.rows,
        )


def iterate_batches(
    examples: SequenceExamples,
    batch_size: int,
    rng: np.random.Generator,
    *,
    rank: int = 0,
    world_size: int = 1,
    skip: int = 0,
):
    """Yield length-bucketed batches in random order, each trimmed to its longest sequence.

    Under data parallelism every rank draws the same global batches of `batch_size * world_size` users
    (the same seed) and keeps every `world_size`-th row of each, from its `rank`: a rank's share of a
    batch, of lengths like the others' (rows are sorted by length within a bucket). A last batch too
    small to give every rank a row is left out. `skip`: batches already trained (a resumed epoch).
    """
    order = rng.permutation(len(examples.users))
    batches = _global_batches(examples, order, batch_size * world_size)
    kept = 0  # batches trained on, the count `skip` is in
    for index in rng.permutation(len(batches)):
        rows = batches[index]
        if len(rows) < world_size:
            continue
        kept += 1
        if kept <= skip:
            continue
        rows = rows[rank::world_size]
        width = int(examples.lengths[rows].max())
        yield Batch(
            users=torch.as_tensor(examples.users[rows]),
            inputs=torch.as_tensor(examples.inputs[rows, :width]),
            targets=torch.as_tensor(examples.targets[rows, :width]),
            lengths=torch.as_tensor(examples.lengths[rows]),
            rows=rows,
        )


def _global_batches(examples: SequenceExamples, order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    bucket = batch_size * 50
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]
        chunk = chunk[np.argsort(examples.lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return batches


def n_batches(examples: SequenceExamples, batch_size: int) -> int:
    bucket = batch_size * 50
    total = 0
    for start in range(0, len(examples.users), bucket):
        size = min(bucket, len(examples.users) - start)
        total += -(-size // batch_size)
    return total
