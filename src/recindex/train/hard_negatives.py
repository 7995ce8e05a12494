"""Hard negatives (`train.hard_negatives`): each training user's top-ranked items under the current model
that it never interacted with, sampled into that user's rows of the loss."""

from __future__ import annotations

import numpy as np
import torch

from recindex.config import TrainConfig
from recindex.data.splits import Split
from recindex.models.devices import model_device
from recindex.train.batches import SequenceExamples


def mine_hard_negatives(
    model,
    split: Split,
    examples: SequenceExamples,
    pool: torch.Tensor,
    config: TrainConfig,
    rng: np.random.Generator,
) -> torch.Tensor:
    """(U, H) negatives per example row, sampled from each user's top non-interacted items (of `pool`,
    the items with training data), on the model's device."""
    device = model_device(model)
    model.eval()
    pool_size = min(config.hard_negative_pool, len(pool))
    untrained = torch.ones(model.n_items, dtype=torch.bool, device=device)
    untrained[pool] = False
    mined = np.empty((len(examples.users), config.hard_negatives), np.int64)
    with torch.no_grad():
        items = model.item_vectors()
        for start in range(0, len(examples.users), 1024):
            rows = slice(start, start + 1024)
            inputs, lengths, users = (
                torch.as_tensor(part[rows]).to(device)
                for part in (examples.inputs, examples.lengths, examples.users)
            )
            scores = model.user_vectors(inputs, lengths, users) @ items.T
            scores[:, untrained] = float("-inf")
            for r, user in enumerate(examples.users[rows]):
                seen = torch.as_tensor(split.train_sequence(int(user)), device=device)
                scores[r, seen] = float("-inf")
            top = torch.topk(scores, pool_size, dim=1).indices.cpu().numpy()
            picks = rng.integers(0, pool_size, size=(len(top), config.hard_negatives))
            mined[rows] = np.take_along_axis(top, picks, axis=1)
    model.train()
    return torch.as_tensor(mined).to(device)
