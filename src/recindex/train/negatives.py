"""Negative sampling and the retrieval loss as strategy objects handed to a trainer.

A sampler says which items a batch's queries are scored against besides their positives, and with what
sampling probability (for the logQ correction); a loss scores a query against its positive and those
candidates. `strategies_from(train_config, temperature)` builds the pair a `[train]` section describes;
a trainer takes any other pair (SCI's mirrored term uses in-batch negatives whatever the task's are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from recindex.config import TrainConfig
from recindex.models.frequency import StreamingFrequency
from recindex.models.losses import full_softmax_loss, hinge_loss, sampled_softmax_loss


@dataclass
class Drawn:
    """A batch's shared candidates: the positives first, then `sampled` (None: the positives alone,
    or, with `whole_catalogue`, every trainable item)."""

    ids: torch.Tensor  # (C,)
    sampled: torch.Tensor | None  # (S,) the candidates beyond the batch's positives
    candidate_log_q: torch.Tensor | None = None  # (C,) log of each candidate's sampling probability
    positive_log_q: torch.Tensor | None = None  # (P,)
    whole_catalogue: bool = False


class NegativeSampler(Protocol):
    # Whether the positives' frequencies feed the logQ estimate (the whole catalogue needs none).
    needs_frequency: bool

    def draw(self, positives: torch.Tensor, pool: torch.Tensor, frequency: StreamingFrequency) -> Drawn: ...


@dataclass(frozen=True)
class InBatchNegatives:
    """The batch's positives, plus `uniform` items drawn uniformly from the trainable pool ("mixed"),
    each logQ-corrected by its estimated chance of being in a batch (plus `uniform / pool` when mixed)."""

    uniform: int = 0
    logq_correction: bool = True
    needs_frequency: bool = True

    def draw(self, positives: torch.Tensor, pool: torch.Tensor, frequency: StreamingFrequency) -> Drawn:
        candidates, sampled, extra = positives, None, 0.0
        if self.uniform > 0:
            # drawn by the CPU generator wherever the pool is, so a run's draws do not depend on its device
            sampled = pool[torch.randint(len(pool), (self.uniform,)).to(pool.device)]
            candidates = torch.cat([positives, sampled])
            extra = self.uniform / len(pool)
        drawn = Drawn(candidates, sampled)
        if self.logq_correction:
            drawn.candidate_log_q = torch.log(frequency.per_batch_probability(candidates) + extra)
            drawn.positive_log_q = torch.log(frequency.per_batch_probability(positives) + extra)
        return drawn


@dataclass(frozen=True)
class CatalogueNegatives:
    """Every trainable item: no sampling, so no correction; the loss may be the exact softmax."""

    needs_frequency: bool = False

    def draw(self, positives: torch.Tensor, pool: torch.Tensor, frequency: StreamingFrequency) -> Drawn:
        return Drawn(pool, None, whole_catalogue=True)


class RetrievalLoss(Protocol):
    def over_candidates(
        self, users, positives, positive_vectors, drawn: Drawn, candidate_vectors, hard_ids, hard_vectors
    ) -> torch.Tensor: ...

    def over_catalogue(self, users, positives, catalogue, labels, pool) -> torch.Tensor: ...


@dataclass(frozen=True)
class InfoNCE:
    """Sampled softmax over the candidates (logQ-corrected, accidental hits removed), or the exact
    softmax over the catalogue."""

    temperature: float

    def over_candidates(
        self, users, positives, positive_vectors, drawn, candidate_vectors, hard_ids, hard_vectors
    ):
        return sampled_softmax_loss(
            users,
            positives,
            positive_vectors,
            drawn.ids,
            candidate_vectors,
            self.temperature,
            candidate_log_q=drawn.candidate_log_q,
            positive_log_q=drawn.positive_log_q,
            hard_ids=hard_ids,
            hard_vectors=hard_vectors,
        )

    def over_catalogue(self, users, positives, catalogue, labels, pool):
        return full_softmax_loss(users, catalogue, labels, self.temperature)


@dataclass(frozen=True)
class TripletHinge:
    """SCI's triplet hinge on cosine scores over the same negatives."""

    margin: float

    def over_candidates(
        self, users, positives, positive_vectors, drawn, candidate_vectors, hard_ids, hard_vectors
    ):
        return hinge_loss(
            users,
            positives,
            positive_vectors,
            drawn.ids,
            candidate_vectors,
            self.margin,
            hard_ids=hard_ids,
            hard_vectors=hard_vectors,
        )

    def over_catalogue(self, users, positives, catalogue, labels, pool):
        return hinge_loss(users, positives, catalogue[labels], pool, catalogue, self.margin)


def sampler_from(config: TrainConfig) -> NegativeSampler:
    if config.negatives == "full":
        return CatalogueNegatives()
    uniform = config.uniform_negatives if config.negatives == "mixed" else 0
    return InBatchNegatives(uniform, config.logq_correction)


def loss_from(config: TrainConfig, temperature: float) -> RetrievalLoss:
    return TripletHinge(config.margin) if config.loss == "hinge" else InfoNCE(temperature)
