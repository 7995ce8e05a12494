"""One optimizer step of a tiny two-tower model, the same for one process and for each of two ranks.

`step_gradients(case, rank, world_size)` builds the model from one seed, takes the first global batch
of 64 users (one process: all of it; rank r of two: every second user from r, as `iterate_batches`
shares a batch), feeds the logQ estimate the same earlier batches, runs `Trainer.train_step` once and
returns the parameters' gradients (under DDP: the gradients averaged over the ranks) and the number of
training positions this process held. Dropout and ID dropout are off: their masks are random draws that
one process and two ranks cannot share, and the step is compared to float tolerance.
"""

from __future__ import annotations

import numpy as np
import torch

from recindex.config import EvalConfig, ModelConfig, TrainConfig
from recindex.data.splits import leave_one_out
from recindex.data.synthetic import SyntheticConfig, generate
from recindex.models.two_tower import TwoTowerModel
from recindex.train.batches import Batch, iterate_batches, sequence_examples
from recindex.train.checkpoint import Checkpoints
from recindex.train.distributed import SINGLE, Distributed
from recindex.train.loop import Trainer

GLOBAL_BATCH = 64
CASES = {
    # name: train settings (the logQ correction is on unless said otherwise)
    "in_batch_gathered": {"negatives": "in_batch", "gather_negatives": True},
    "mixed_gathered": {"negatives": "mixed", "uniform_negatives": 16, "gather_negatives": True},
    "full": {"negatives": "full"},
    "hinge_gathered": {"negatives": "in_batch", "loss": "hinge", "gather_negatives": True},
    "in_batch_local": {"negatives": "in_batch", "gather_negatives": False, "logq_correction": False},
}


def tiny_trainer(case: str, context: Distributed = SINGLE, checkpoints: Checkpoints | None = None) -> Trainer:
    """The tiny model's trainer for `case`, its weights drawn from one seed, with a global batch of 64."""
    torch.manual_seed(0)
    data = generate(SyntheticConfig(n_users=300, n_items=120, n_clusters=6, n_attributes=20, seed=1))
    model = TwoTowerModel.for_data(data, ModelConfig(dim=16, max_len=10, dropout=0.0))
    per_rank = GLOBAL_BATCH // context.world_size
    config = TrainConfig(batch_size=per_rank, threads=1, device="cpu", **CASES[case])
    return Trainer(
        model,
        leave_one_out(data),
        config,
        EvalConfig(ks=(10,)),
        progress=False,
        distributed=context,
        checkpoints=checkpoints,
    )


def step_gradients(case: str, context: Distributed = SINGLE, rows: slice | None = None):
    """(gradients by parameter name, positions held, loss) after one step of `case`; `rows` trains a
    single process on a part of the global batch (the users at those places of it)."""
    trainer = tiny_trainer(case, context)
    model, split, config = trainer.model, trainer.split, trainer.config
    examples = sequence_examples(split, model.shape.n_users, model.n_items, model.config.max_len)
    batch = next(
        iterate_batches(
            examples,
            config.batch_size,
            np.random.default_rng(7),
            rank=context.rank,
            world_size=context.world_size,
        )
    )
    if rows is not None:
        batch = _part(batch, rows)
    # Earlier batches give the estimate items of unequal frequency, so the correction matters.
    for earlier in range(5):
        trainer.frequency.update(torch.arange(earlier * 7, 120, 3 + earlier))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(1)  # the uniform negatives: the same draw in one process and on every rank
    loss = trainer.train_step(batch, optimizer)
    gradients = {
        name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in model.named_parameters()
    }
    return gradients, int((batch.targets != model.n_items).sum()), loss


def _part(batch, rows: slice):
    return Batch(
        batch.users[rows], batch.inputs[rows], batch.targets[rows], batch.lengths[rows], batch.rows[rows]
    )
