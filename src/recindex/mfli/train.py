"""Training MFLI: the two-tower trainer's batches and negatives, with the facet and quantized losses.

    loss = sum_f w_f * SSM(q_f, e_f)                      (multifaceted embedding loss)
         + quant_weight * sum_f w_f * SSM(q_f, e^_f)      (the same on the codebook reconstructions)
         + fit_weight * (codebook + 0.25 commitment)      (keeps codewords on the residuals)
         + overuse_weight * KL(mean soft assignment || uniform)

SSM is the sampled softmax of the two-tower trainer (in-batch or mixed negatives, logQ correction), over
the batch's distinct candidate items. The model as it starts is measured on validation as epoch 0 and
kept when no epoch beats it (a warm start never ends below itself).
Choices of ours, as the paper gives no figures: the quantized loss starts after `quant_start` epochs
(delayed start); level l is switched on `level_gap` epochs after level l-1 (level-by-level activation)
and initialised then by k-means of the current residuals of all trained items; the exact-softmax
"full" negatives are not offered, because every facet and its reconstruction would each need a
(positions x catalogue) score matrix.
"""

from __future__ import annotations

import copy
import time
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
from recindex.train.distributed import broadcast_
from recindex.train.loop import Trainer, TrainResult

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
        *,
        keep_start: bool = False,  # a warm start: measure the model as it starts, and keep it when no
        # epoch beats it (from scratch, the start is a random model, never a candidate)
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
        self.keep_start = keep_start
        self.start: tuple[dict, dict, dict] | None = None  # the model before training (see `fit`)
        # Under torchrun each rank's candidates are its own share's distinct positives (the estimate is
        # fed per share), and the codebook takes no gradient before its first level switches on.
        self.gathering, self.unused_parameters = False, True

    def fit(self) -> TrainResult:
        """The trainer's epochs, with the model as it starts measured on validation as epoch 0: a warm
        start is kept when no trained epoch beats it. The kept model's codebook is then completed (the
        levels it lacks fitted by k-means), so that it can always be indexed."""
        self.start = None
        result = super().fit()
        if self.start is not None:
            record, valid, state = self.start
            # The model to beat: the best kept epoch or, when none could be kept (the run ended before
            # the codebook's last level switched on), the last epoch's, which the trainer leaves.
            measured = [r["valid_recall@10"] for r in result.history if "valid_recall@10" in r]
            trained = result.best_valid.get("recall@10", measured[-1] if measured else -1.0)
            result.history.insert(0, record)
            # as the trainer does, the earliest of equals is kept: the start comes before every epoch
            if valid["recall@10"] >= trained:
                self.model.load_state_dict(state)
                result.best_epoch, result.best_valid = 0, valid
                self.log("no epoch beat the model as it started: it is kept (epoch 0)")
        if self._quantizing():
            for level in range(int(self.model.active_levels), self.model.codebook.shape[0]):
                self._switch_on(level)
        self.model.eval()
        return result

    def before_epoch(self, epoch: int) -> None:
        """Measure the model as it starts (before the first epoch); switch on every codebook level whose
        epoch has come (level l at quant_start + 1 + l * level_gap)."""
        if epoch == 1 and self.keep_start:
            self.start = self._measure_start()
        if not self._quantizing():
            return
        while (level := int(self.model.active_levels)) < self.model.codebook.shape[0]:
            if epoch < self.mfli.quant_start + 1 + level * self.mfli.level_gap:
                return
            self._switch_on(level)
            self.activations.append({"epoch": epoch, "level": level + 1})

    def _quantizing(self) -> bool:
        return self.mfli.quant_weight > 0 or self.mfli.fit_weight > 0

    def _switch_on(self, level: int) -> None:
        """Initialise a codebook level by k-means of the residuals the levels above it leave."""
        model = self.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            facets = model.item_facets(self.pool)  # trained items only: cold ones stay unseen
            _, _, residuals = model.quantize(facets, level)
            residual = residuals[-1][0] - residuals[-1][1] if residuals else facets
            words = fit_level(residual.cpu().numpy(), model.codebook.shape[2], seed=self.config.seed + level)
            model.codebook.data[level] = torch.as_tensor(words).to(model.codebook.device)
            broadcast_(self.distributed, model.codebook.data[level])  # rank 0's fit on every rank
            model.active_levels.fill_(level + 1)
        model.train(was_training)

    def _measure_start(self) -> tuple[dict, dict, dict]:
        """(history record, validation metrics, state) of the model before any training."""
        started = time.perf_counter()
        valid = self.validate()
        record = {
            "epoch": 0.0,
            "valid_recall@10": valid["recall@10"],
            "valid_ndcg@10": valid["ndcg@10"],
            "seconds": time.perf_counter() - started,
        }
        self.log(f"epoch 0 (as it starts)  valid R@10 {valid['recall@10']:.4f} N@10 {valid['ndcg@10']:.4f}")
        return record, valid, copy.deepcopy(self.model.state_dict())

    def checkpoint_state(self) -> dict:
        """The levels switched on so far and the model as it started (a warm start's epoch 0)."""
        return {"activations": self.activations, "start": list(self.start) if self.start else None}

    def restore_checkpoint_state(self, state: dict) -> None:
        self.activations = list(state["activations"])
        self.start = tuple(state["start"]) if state["start"] else None

    def checkpoint_allowed(self) -> bool:
        """The index needs every level: epochs before the last one switches on are never kept."""
        return not self._quantizing() or int(self.model.active_levels) == self.model.codebook.shape[0]

    def _candidates(self, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's candidates, each item once: its distinct positives and, with mixed negatives,
        `uniform_negatives` items drawn from the pool; with the log of each one's chance to be among
        them (the logQ correction), or None without the correction.

        Once, because a batch of long sequences repeats its positives many times (every position of
        every sequence is an example). Repeated, a popular item stood in the softmax's denominator as
        often as it occurred, while the correction subtracted only the log of its chance to occur at
        all, so popular items were pushed down; and every facet's logits, and their reconstructions',
        were (positions x positions) rather than at most (positions x pool). See docs/mfli.md."""
        config = self.config
        draws = config.uniform_negatives if config.negatives == "mixed" else 0
        if draws > 0:
            sampled = self.pool[torch.randint(len(self.pool), (draws,)).to(self.pool.device)]
            positives = torch.cat([positives, sampled])
        candidates = torch.unique(positives)  # sorted
        if not config.logq_correction:
            return candidates, None
        # P(in the candidates) = 1 - P(not among the positives) * P(missed by every uniform draw)
        in_batch = self.frequency.per_batch_probability(candidates)
        missed = (1.0 - 1.0 / len(self.pool)) ** draws
        return candidates, torch.log(1.0 - (1.0 - in_batch) * missed)

    def _loss(self, batch) -> torch.Tensor:
        model = self.model
        id_keep = self._id_keep()
        states = model.user_states(batch.inputs, batch.lengths, batch.users, id_keep)
        real = batch.targets != model.n_items
        queries = model.query_facets(states[real])  # (P, F, d)
        positives = batch.targets[real]
        self.update_frequency(positives)
        candidates, candidate_log_q = self._candidates(positives)
        # Every candidate is encoded once; a positive's vectors are its candidate's row.
        rows = torch.searchsorted(candidates, positives)
        positive_log_q = None if candidate_log_q is None else candidate_log_q[rows]
        candidate_facets = model.item_facets(candidates, id_keep)  # (C, F, d)

        def facet_losses(queries, candidate_vectors) -> torch.Tensor:
            positive_vectors = candidate_vectors[rows]
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

        loss = facet_losses(queries, candidate_facets)
        if int(model.active_levels) > 0:
            if self.mfli.quant_gradient == "codebook":
                # The towers learn from L_MF alone; the quantized loss and the fit terms move codewords.
                queries, candidate_facets = queries.detach(), candidate_facets.detach()
            quantized, _, residuals = model.quantize(candidate_facets)
            if self.mfli.quant_weight > 0:
                loss = loss + self.mfli.quant_weight * facet_losses(queries, quantized)
            fit, overuse = model.codebook_losses(residuals)
            loss = loss + self.mfli.fit_weight * fit + self.mfli.overuse_weight * overuse
        return loss


def warm_start(model: MFLIModel, start: Bundle, data, data_config, log=None) -> None:
    """Start the towers from a trained two-tower bundle of the same data and split (the embeddings'
    warm-up, done once and shared by every MFLI run that starts from it)."""
    load_towers(model.base, start, data, data_config, log, setting="mfli.init_from")


def codebook_array(model: MFLIModel) -> np.ndarray:
    """The active levels of the trained codebook, (L', F, M, d), for the index."""
    return model.codebook.detach()[: int(model.active_levels)].cpu().numpy().copy()


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

