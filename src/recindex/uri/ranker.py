"""URI's ranker (section 4.3): the two-tower trainer on the ranker's towers, each positive scored
against uniform items and items of its sibling leaves (same parent prefix, another leaf)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from recindex.config import EvalConfig, TrainConfig
from recindex.data.splits import Split
from recindex.quant.codes import prefix_numbers
from recindex.train.checkpoint import generator_state, set_generator_state
from recindex.train.loop import Trainer
from recindex.uri.model import URIModel


class SiblingSampler:
    """Draws, for each item, an item from its sibling leaves: same parent prefix, another leaf (URI 4.3).
    Items whose parent holds a single leaf get a uniformly drawn item instead."""

    def __init__(self, codes: np.ndarray, sizes: list[int], pool: np.ndarray):
        depth = codes.shape[1]
        parent = prefix_numbers(codes[:, : depth - 1], sizes) if depth > 1 else np.zeros(len(codes), np.int64)
        leaf = prefix_numbers(codes, sizes)
        in_pool = np.zeros(len(codes), bool)
        in_pool[pool] = True
        members = np.flatnonzero(in_pool)
        order = members[np.lexsort((leaf[members], parent[members]))]  # pool items by parent, then leaf
        self.members = order
        parent_sorted, leaf_sorted = parent[order], leaf[order]
        # per item: its parent's range [p0, p1) and its own leaf's range [l0, l1) within `members`
        self.p0 = np.searchsorted(parent_sorted, parent, side="left")
        self.p1 = np.searchsorted(parent_sorted, parent, side="right")
        key = parent_sorted * (leaf.max() + 1) + leaf_sorted
        own = parent * (leaf.max() + 1) + leaf
        self.l0 = np.searchsorted(key, own, side="left")
        self.l1 = np.searchsorted(key, own, side="right")
        self.pool = pool

    def sample(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p0, p1, l0, l1 = self.p0[items], self.p1[items], self.l0[items], self.l1[items]
        others = (p1 - p0) - (l1 - l0)
        draw = np.floor(rng.random(len(items)) * np.maximum(others, 1)).astype(np.int64)
        position = p0 + draw
        position = np.where(position >= l0, position + (l1 - l0), position)
        fallback = self.pool[rng.integers(0, len(self.pool), len(items))]
        picked = self.members[np.clip(position, 0, len(self.members) - 1)]
        return np.where(others > 0, picked, fallback)


class RankerTrainer(Trainer):
    """The two-tower trainer on the ranker's towers, with URI's per-positive negatives."""

    def __init__(
        self, model: URIModel, split: Split, train: TrainConfig, evaluation: EvalConfig, uri, **kwargs
    ):
        super().__init__(model.ranker, split, train, evaluation, **kwargs)
        self.uri = uri
        codes = model.item_codes.cpu().numpy()[:, : uri.layers]  # the leaves (not a two-stage item token)
        self.siblings = SiblingSampler(codes, model.decoder.sizes[: uri.layers], self.pool.cpu().numpy())
        # under torchrun each rank draws its own siblings (rank 0 those of one process): on one seed, two
        # ranks would draw the same negatives for their different positives
        rank = self.distributed.rank
        self.sampling = np.random.default_rng(train.seed + 1 if rank == 0 else [train.seed + 1, rank])

    def checkpoint_state(self) -> dict:
        return {"sampling": generator_state(self.sampling)}  # the sibling draws go on where they stood

    def restore_checkpoint_state(self, state: dict) -> None:
        # rank 0's generator was saved; other ranks keep their own, so that no two draw alike
        if self.distributed.rank == 0:
            set_generator_state(self.sampling, state["sampling"])

    def _loss(self, batch) -> torch.Tensor:
        model = self.model
        states = model.user_states(batch.inputs, batch.lengths, batch.users)
        real = batch.targets != model.n_items
        users = states[real]  # (P, d)
        positives = batch.targets[real]
        n_random, n_sibling = self.uri.ranker_random_negatives, self.uri.sibling_negatives
        negatives = [self.pool[torch.randint(len(self.pool), (len(positives), n_random)).to(self.device)]]
        if n_sibling:
            drawn = [self.siblings.sample(positives.cpu().numpy(), self.sampling) for _ in range(n_sibling)]
            negatives.append(torch.as_tensor(np.stack(drawn, 1)).to(self.device))
        negatives = torch.cat(negatives, 1)  # (P, R + S)
        positive_logits = (users * model.item_vectors(positives)).sum(-1, keepdim=True)
        negative_logits = torch.einsum("pd,pnd->pn", users, model.item_vectors(negatives))
        negative_logits = negative_logits.masked_fill(negatives == positives.unsqueeze(1), float("-inf"))
        logits = torch.cat([positive_logits, negative_logits], 1) / model.temperature
        return F.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long, device=self.device))


def ranker_train_config(train: TrainConfig, uri) -> TrainConfig:
    return dataclasses.replace(train, epochs=uri.ranker_epochs, lr=uri.ranker_lr)
