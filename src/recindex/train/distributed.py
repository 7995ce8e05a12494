"""Data-parallel training under torchrun: the process group, DDP, and the collectives a trainer needs.

`torchrun --nproc_per_node N -m recindex train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set; `from_environment` reads them, `start` joins the process group (NCCL on GPUs, gloo on
the CPU). What the trainer does with them:
- every rank draws the same global batches and trains on its share of each (`batches.iterate_batches`);
  `train.batch_size` is per rank, as in torch (the global batch is `batch_size * world_size`);
- gradients are averaged by DistributedDataParallel, around the trainer's loss as its forward; each
  rank's loss, a mean over its own positions, is first weighted by its share of the global batch's
  positions (`share_weight`), so that the average is the gradient of the global batch's mean loss;
- with `train.gather_negatives` the batch's positives are all-gathered, their vectors with
  `torch.distributed.nn` so that the gradient of every rank's loss flows back to the rank that encoded
  them: each rank's queries see the global batch's candidates, as one process would;
- the streaming frequency estimate (logQ) is updated on every rank with every rank's positives, in rank
  order: one global batch as one step when negatives are gathered (the candidates are the global
  batch), each rank's share as one step when they are not (the candidates are a share) - so every rank
  holds the same estimate, of the probability its candidates were drawn with;
- evaluation is sharded by cases and the per-case ranks all-gathered, so every rank computes the same
  metrics; stopping decisions are still taken by rank 0 and broadcast (`agree`), since a time limit
  reads each rank's own clock.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as differentiable
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from recindex.errors import RecIndexError


@dataclass(frozen=True)
class Distributed:
    """This process's place among the ranks (one rank, the default: no collectives at all)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Distributed()


def from_environment(environ: dict[str, str] | None = None) -> Distributed:
    """The ranks torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (one process without them)."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return SINGLE
    try:
        world, rank = int(environ["WORLD_SIZE"]), int(environ.get("RANK", "0"))
        local = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise RecIndexError(
            "torchrun's RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
            f"{environ.get('RANK')!r}, {environ.get('WORLD_SIZE')!r}, {environ.get('LOCAL_RANK')!r}"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise RecIndexError(f"torchrun gave rank {rank} of {world} processes")
    return Distributed(rank, world, local)


def start(context: Distributed, device: torch.device) -> None:
    """Join the process group (NCCL between GPUs, gloo between CPU processes)."""
    if not context.active or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def stop(context: Distributed) -> None:
    """Leave the process group. The DDP wrappers of finished trainers hold the group (their reducers do)
    and are kept alive by a reference cycle (a wrapper's forward is its trainer's loss), so they are
    collected first: left to a later collection, the group's gloo threads went down at whatever moment
    it came (after the other ranks had exited, or during the interpreter's shutdown), and a rank aborted
    now and then ("terminate called without an active exception")."""
    if context.active and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier(context: Distributed) -> None:
    if context.active:
        dist.barrier()


class _TrainingStep(nn.Module):
    """A trainer's loss as a module's forward: DDP synchronises gradients around a forward call, and the
    trainers compute their loss from the model's methods, not from one forward."""

    def __init__(self, model: nn.Module, loss: Callable):
        super().__init__()
        self.model = model
        self.compute = loss

    def forward(self, batch):
        return self.compute(batch)


def data_parallel(
    model: nn.Module, loss: Callable, device: torch.device, unused_parameters: bool = False
) -> nn.Module:
    """`loss(batch)` wrapped in DistributedDataParallel over `model`'s parameters.

    Buffers are not synchronised at each forward (they are the catalogue's tokens and masks, the same on
    every rank). Every loss of the two-tower and SCI trainers reaches every parameter, so DDP is not
    asked to search for unused ones (a graph traversal per step); `unused_parameters` asks it to, for a
    model some of whose parameters a step may leave out (MFLI's codebook before its levels switch on)."""
    return DistributedDataParallel(
        _TrainingStep(model, loss),
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,
        find_unused_parameters=unused_parameters,
    )


def broadcast_(context: Distributed, tensor: torch.Tensor) -> None:
    """Rank 0's values of `tensor`, in place on every rank (a result computed outside the steps, such as
    a k-means fit, that every rank must hold the same)."""
    if context.active:
        dist.broadcast(tensor, 0)


def _sizes(length: int, device: torch.device) -> list[int]:
    size = torch.tensor([length], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _padded(tensor: torch.Tensor, longest: int) -> torch.Tensor:
    missing = longest - len(tensor)
    return torch.cat([tensor, tensor.new_zeros((missing, *tensor.shape[1:]))]) if missing else tensor


def gather_ids(ids: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `ids` (of any length), in rank order; no gradient."""
    sizes = _sizes(len(ids), ids.device)
    padded = _padded(ids, max(sizes))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return [part[:size] for part, size in zip(parts, sizes, strict=True)]


def gather_batch(ids: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every rank's (ids, vectors) concatenated in rank order, the vectors keeping their gradient (each
    rank's part flows back to the rank that computed it), and where this rank's rows start."""
    sizes = _sizes(len(ids), ids.device)
    longest = max(sizes)
    id_parts = [torch.empty_like(_padded(ids, longest)) for _ in sizes]
    dist.all_gather(id_parts, _padded(ids, longest))
    with warnings.catch_warnings():
        # torch 2.13 marks it deprecated in favour of a private module; it is the public autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        vector_parts = differentiable.all_gather(_padded(vectors, longest))
    rank = dist.get_rank()
    return (
        torch.cat([part[:size] for part, size in zip(id_parts, sizes, strict=True)]),
        torch.cat([part[:size] for part, size in zip(vector_parts, sizes, strict=True)]),
        sum(sizes[:rank]),
    )


def share_weight(context: Distributed, positions: int, device: torch.device) -> float:
    """The factor that makes a rank's mean loss its part of the global batch's mean: this rank's share
    of the global batch's positions times the number of ranks.

    A trainer's loss is a mean over the rank's own positions, and DDP averages the ranks' gradients:
    unweighted, that is the global mean only when every rank holds as many positions, which sequences
    of different lengths never guarantee (a rank's users are the longer of each pair, say). Weighted,
    the gradients' average is the gradient of the global mean, as one process computes it."""
    if not context.active:
        return 1.0
    total = torch.tensor([float(positions)], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return positions * context.world_size / max(float(total), 1.0)


def rank_seed(context: Distributed, seed: int, step: int) -> int | None:
    """A torch seed of this rank's own for dropout and the other per-batch draws (None on rank 0, which
    keeps the run's stream, the one process's).

    Every rank seeds torch with the run's seed (and a resumed run restores rank 0's state): left so, two
    ranks whose shares of a batch have the same shape draw the same dropout masks, noise one process
    would draw independently for each user."""
    if context.rank == 0:
        return None
    return int(np.random.SeedSequence([seed, context.rank, step]).generate_state(1, np.uint64)[0] >> 1)


def mean(context: Distributed, value: float, device: torch.device) -> float:
    """The mean of `value` over the ranks (the epoch's loss, so every rank logs the same)."""
    if not context.active:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor) / context.world_size


def agree(context: Distributed, decision: bool, device: torch.device) -> bool:
    """Rank 0's `decision`, on every rank."""
    if not context.active:
        return decision
    flag = torch.tensor([int(decision)], dtype=torch.long, device=device)
    dist.broadcast(flag, 0)
    return bool(flag)


@dataclass(frozen=True)
class CaseShards:
    """Evaluation cases split among the ranks (`eval.evaluate.CaseShard`): each ranks a contiguous block
    of them, and every rank gathers every block back."""

    context: Distributed
    device: torch.device

    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every rank's `rows`, concatenated in rank order."""
        parts = gather_ids(torch.as_tensor(np.ascontiguousarray(rows)).to(self.device))
        return torch.cat(parts).cpu().numpy()
