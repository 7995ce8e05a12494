"""Training MFLI: the two-tower trainer's batches and negatives, with the facet and quantized losses.

    loss = sum_f w_f * SSM(q_f, e_f)                      (multifaceted embedding loss)
         + quant_weight * sum_f w_f * SSM(q_f, e^_f)      (the same on the codebook reconstructions)
         + fit_weight * (codebook + 0.25 commitment)      (keeps codewords on the residuals)
         + overuse_weight * KL(mean soft assignment || uniform)

SSM is the sampled softmax of the two-tower trainer (in-batch or mixed negatives, logQ correction).
Choices of ours, as the paper gives no figures: the quantized loss starts after `quant_start` epochs
(delayed start); level l is switched on `level_gap` epochs after level l-1 (level-by-level activation)
and initialised then by k-means of the current residuals of all trained items; the exact-softmax
"full" negatives are not offered, because every facet and its reconstruction would each need a
(positions x catalogue) score matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from recindex.bundle import Bundle
from recindex.config import EvalConfig, TrainConfig
from recindex.data.splits import Split
from recindex.errors import RecIndexError
from recindex.mfli.model import MFLIModel
from recindex.models.losses import sampled_softmax_loss
from recindex.models.warm_start import load_towers
from recindex.quant.codebook import fit_level
from recindex.train.loop import Trainer

QUANT_GRADIENTS = ("straight_through", "codebook")


@dataclass(frozen=True)
class MFLITrainConfig:
    quant_start: int = 5  # epochs of embeddings alone before the first level switches on
    level_gap: int = 2  # epochs between switching on one level and the next
    quant_weight: float = 1.0  # 0 turns the quantized loss off (an ablation)
    fit_weight: float = 1.0
    overuse_weight: float = 0.01
    facet_weights: tuple[float, ...] = field(default_factory=tuple)  # default: 1 per facet
    quant_gradient: str = "straight_through"  # or "codebook": L_QMF and the fit terms train only the codebook


class MFLITrainer(Trainer):
    def __init__(
        self,
        model: MFLIModel,
        split: Split,
        train: TrainConfig,
        evaluation: EvalConfig,
        mfli: MFLITrainConfig = MFLITrainConfig(),  # noqa: B008 (frozen, so sharing it is safe)
        **kwargs,
    ):
        if mfli.quant_gradient not in QUANT_GRADIENTS:
            raise RecIndexError(
                f"mfli.quant_gradient must be one of {QUANT_GRADIENTS}, got {mfli.quant_gradient!r}"
            )
        if train.negatives == "full":
            raise RecIndexError("MFLI trains with in_batch or mixed negatives, not full (see mfli.train)")
        super().__init__(model, split, train, evaluation, **kwargs)
        self.mfli = mfli
        weights = mfli.facet_weights or (1.0,) * len(model.facets)
        if len(weights) != len(model.facets):
            raise RecIndexError(f"{len(weights)} facet weights for {len(model.facets)} facets")
        self.facet_weights = torch.as_tensor(weights, dtype=torch.float32)
        self.activations: list[dict] = []

    def before_epoch(self, epoch: int) -> None:
        """Switch on every codebook level whose epoch has come (level l at quant_start + 1 + l * level_gap),
        each initialised by k-means of the residuals the levels above it leave."""
        model, config = self.model, self.mfli
        if config.quant_weight <= 0 and config.fit_weight <= 0:
            return
        while (level := int(model.active_levels)) < model.codebook.shape[0]:
            if epoch < config.quant_start + 1 + level * config.level_gap:
                return
            model.eval()
            with torch.no_grad():
                facets = model.item_facets(self.pool)  # trained items only: cold ones stay unseen
                _, _, residuals = model.quantize(facets, level)
                residual = residuals[-1][0] - residuals[-1][1] if residuals else facets
                words = fit_level(residual.numpy(), model.codebook.shape[2], seed=self.config.seed + level)
                model.codebook.data[level] = torch.as_tensor(words)
                model.active_levels.fill_(level + 1)
            model.train()
            self.activations.append({"epoch": epoch, "level": level + 1})

    def checkpoint_allowed(self) -> bool:
        """The index needs every level: epochs before the last one switches on are never kept."""
        quantizing = self.mfli.quant_weight > 0 or self.mfli.fit_weight > 0
        return not quantizing or int(self.model.active_levels) == self.model.codebook.shape[0]

    def _loss(self, batch) -> torch.Tensor:
        model = self.model
        id_keep = self._id_keep()
        states = model.user_states(batch.inputs, batch.lengths, batch.users, id_keep)
        real = batch.targets != model.n_items
        queries = model.query_facets(states[real])  # (P, F, d)
        positives = batch.targets[real]
        self.frequency.update(positives)
        drawn = self.negatives.draw(positives, self.pool, self.frequency)
        candidates, candidate_log_q, positive_log_q = drawn.ids, drawn.candidate_log_q, drawn.positive_log_q
        positive_facets = model.item_facets(positives, id_keep)  # (P, F, d)
        candidate_facets = model.item_facets(candidates, id_keep)  # (C, F, d)

        def facet_losses(queries, positive_vectors, candidate_vectors) -> torch.Tensor:
            total = torch.zeros(())
            for facet, weight in enumerate(self.facet_weights.tolist()):
                total = total + weight * sampled_softmax_loss(
                    queries[:, facet],
                    positives,
                    positive_vectors[:, facet],
                    candidates,
                    candidate_vectors[:, facet],
                    model.temperature,
                    candidate_log_q=candidate_log_q,
                    positive_log_q=positive_log_q,
                )
            return total

        loss = facet_losses(queries, positive_facets, candidate_facets)
        if int(model.active_levels) > 0:
            if self.mfli.quant_gradient == "codebook":
                # The towers learn from L_MF alone; the quantized loss and the fit terms move codewords.
                queries, positive_facets, candidate_facets = (
                    queries.detach(),
                    positive_facets.detach(),
                    candidate_facets.detach(),
                )
            quantized_positives, _, _ = model.quantize(positive_facets)
            quantized_candidates, _, residuals = model.quantize(candidate_facets)
            if self.mfli.quant_weight > 0:
                loss = loss + self.mfli.quant_weight * facet_losses(
                    queries, quantized_positives, quantized_candidates
                )
            fit, overuse = model.codebook_losses(residuals)
            loss = loss + self.mfli.fit_weight * fit + self.mfli.overuse_weight * overuse
        return loss


def warm_start(model: MFLIModel, start: Bundle, data, data_config, log=None) -> None:
    """Start the towers from a trained two-tower bundle of the same data and split (the embeddings'
    warm-up, done once and shared by every MFLI run that starts from it)."""
    load_towers(model.base, start, data, data_config, log, setting="mfli.init_from")


def codebook_array(model: MFLIModel) -> np.ndarray:
    """The active levels of the trained codebook, (L', F, M, d), for the index."""
    return model.codebook.detach()[: int(model.active_levels)].numpy().copy()


def mfli_model(base, config) -> MFLIModel:
    """The MFLI model of an `[mfli]` config section around a two-tower model."""
    return MFLIModel(base, tuple(config.facets), config.levels, config.codewords)


def mfli_train_config(config) -> MFLITrainConfig:
    return MFLITrainConfig(
        quant_start=config.quant_start,
        level_gap=config.level_gap,
        quant_weight=config.quant_weight,
        fit_weight=config.fit_weight,
        overuse_weight=config.overuse_weight,
        quant_gradient=config.quant_gradient,
        facet_weights=tuple(config.facet_weights),
    )

