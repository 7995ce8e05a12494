"""URI's decoder under torchrun: each rank's share of a global batch, the gradients averaged by DDP, the
balance term over the global batch, and the decisions every rank must hold alike taken on rank 0.

The decoder trains in loops of its own (not `train.loop.Trainer`'s), so this gives them what the trainer
gives the other families (see `train.distributed`):
- batches: every rank draws the same global batch of `uri.batch_size * N` (query, item) positions and
  the same random items (one generator, one seed), and keeps every N-th of each from its rank; a last
  batch too small to give every rank a row is left out;
- gradients: the loss runs inside DistributedDataParallel, which averages the ranks' gradients. The
  per-row terms (E-step, M-step, commitment, memory, the k-means start, the two-stage cross-entropy)
  are means over a rank's rows, weighted by its share of the global batch (`share_weight`), so the
  average is the gradient of the global batch's means. The balance term is not a mean over rows (it is
  the log of the rows' mean distribution, per parent): its rows are all-gathered with their gradient
  and every rank computes the global batch's term, whose gradient, summed back to each rank's rows by
  the gather and averaged by DDP, is the one process's;
- decisions: the balanced assignment that ends each layer and the balanced k-means start tokens are
  computed on rank 0 and broadcast. Chosen over all-reducing inputs and computing on every rank: there
  is nothing to reduce (every rank holds the same decoder and catalogue, so each would compute the whole
  assignment again), and the result is discrete, an argmax under capacities, so a last-bit difference
  between ranks (another BLAS path or thread count, another GPU) would move items and set the ranks'
  indexes apart for good; a broadcast of one token per item cannot differ. The ranker's epochs and its
  early stopping are `Trainer`'s (sharded validation, rank 0's decision broadcast).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from recindex.train.distributed import (
    SINGLE,
    Distributed,
    broadcast_,
    data_parallel,
    gather_batch,
    mean,
    share_weight,
)
from recindex.uri.losses import balance_loss

# a step's loss to backpropagate and its terms to log (unweighted, this rank's rows)
StepResult = tuple[torch.Tensor, dict[str, torch.Tensor]]


class DecoderRanks:
    """This process's place among the ranks, for the decoder's loops (one rank: no collectives at all)."""

    def __init__(self, context: Distributed = SINGLE, device: torch.device | None = None):
        self.context = context
        self.device = device or torch.device("cpu")
        self._step: nn.Module | None = None

    @property
    def world_size(self) -> int:
        return self.context.world_size

    def share(self, rows: torch.Tensor) -> torch.Tensor | None:
        """This rank's part of a global batch's `rows` (every N-th, from its rank); None when the batch is
        too small to give every rank one (every rank leaves it out alike)."""
        if len(rows) < self.context.world_size:
            return None
        return rows[self.context.rank :: self.context.world_size]

    def weight(self, rows: int) -> float:
        """The factor of a mean over this rank's `rows` (1 in one process)."""
        return share_weight(self.context, rows, self.device)

    def step(self, parameters: list[nn.Module], compute: Callable[[], StepResult]) -> StepResult:
        """`compute()` (a step's loss and terms), inside DistributedDataParallel over `parameters` under
        torchrun, so that backward averages the ranks' gradients. One wrapper serves every step of the
        run, whatever it computes: DDP hooks each parameter once, and a second wrapper over the same ones
        would reduce their gradients twice. Some steps leave parameters out (the heads and token tables
        of the layers not trained yet), so DDP looks for them; a parameter no rank used keeps no gradient,
        as in one process (Adam then leaves it and its step count alone)."""
        if not self.context.active:
            return compute()
        if self._step is None:  # DDP starts every rank from rank 0's weights
            holder = nn.ModuleList(parameters)
            self._step = data_parallel(holder, lambda work: work(), self.device, unused_parameters=True)
        return self._step(compute)

    def balance(
        self, item_log_probs: torch.Tensor, adaptive: bool, groups: torch.Tensor | None
    ) -> torch.Tensor:
        """The balance term over the global batch's rows (every rank's, gathered with their gradient)."""
        if not self.context.active:
            return balance_loss(item_log_probs, adaptive=adaptive, groups=groups)
        ids = groups if groups is not None else torch.zeros(len(item_log_probs), dtype=torch.long)
        every_group, every_row, _ = gather_batch(ids.to(item_log_probs.device), item_log_probs)
        return balance_loss(every_row, adaptive=adaptive, groups=None if groups is None else every_group)

    def from_rank_zero(self, compute: Callable[[], np.ndarray], length: int) -> np.ndarray:
        """(length,) integers that rank 0 computes and every rank receives (the others compute nothing)."""
        if not self.context.active:
            return compute()
        return self.agreed(compute() if self.context.main else np.zeros(length, np.int64))

    def agreed(self, values: np.ndarray) -> np.ndarray:
        """Rank 0's integer `values` on every rank (each rank holds an array of the same shape)."""
        if not self.context.active:
            return values
        tensor = torch.as_tensor(np.ascontiguousarray(values, dtype=np.int64)).to(self.device)
        broadcast_(self.context, tensor)
        return tensor.cpu().numpy()

    def means(self, values: dict[str, float]) -> dict[str, float]:
        """Each value's mean over the ranks (an epoch's losses, so every rank records the same)."""
        return {name: mean(self.context, value, self.device) for name, value in values.items()}
