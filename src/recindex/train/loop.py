"""The training loop of the two-tower model: sampled softmax, early stopping on validation Recall@10.

Negatives (`train.negatives`):
- `in_batch`: the other positives of the batch, logQ-corrected with streaming frequency estimates;
- `mixed`: in-batch plus `uniform_negatives` items drawn uniformly per batch (Yang et al. 2020), the
  proposal being the mixture, so each candidate's log Q is log(P(in batch) + M / N);
- `full`: the whole catalogue (exact softmax; affordable for catalogues up to ~10^5 items).
Hard negatives (`hard_negatives` > 0): every `hard_negative_every` epochs, each user's top-ranked
non-interacted items under the current model are mined and sampled into that user's rows.
Loss (`train.loss`): the softmax above (InfoNCE), or a triplet hinge on cosine scores over the same
negatives (SCI's task loss).
Stopping: after `epochs`, after `patience` epochs without a better validation Recall@10, or when
`max_seconds` have passed (checked between batches, once there is a best epoch to keep); in every case
the best epoch's weights are the ones kept, and `TrainResult.stopped` says which of the three it was.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from recindex.config import EvalConfig, TrainConfig
from recindex.data.splits import Split
from recindex.errors import RecIndexError
from recindex.eval.evaluate import evaluate_model
from recindex.models.frequency import StreamingFrequency
from recindex.models.two_tower import TwoTowerModel
from recindex.progress import TrainingProgress
from recindex.train.batches import SequenceExamples, iterate_batches, n_batches, sequence_examples
from recindex.train.negatives import (
    CatalogueNegatives,
    NegativeSampler,
    RetrievalLoss,
    loss_from,
    sampler_from,
)


@dataclass
class TrainResult:
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    epochs_run: int = 0
    stopped: str = "epochs"  # epochs (all of them ran) | patience (early stopping) | time (max_seconds)


def seed_everything(seed: int, threads: int) -> np.random.Generator:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    return np.random.default_rng(seed)


class Trainer:
    def __init__(
        self,
        model: TwoTowerModel,
        split: Split,
        train: TrainConfig,
        evaluation: EvalConfig,
        *,
        negatives: NegativeSampler | None = None,
        loss: RetrievalLoss | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ):
        """`negatives` and `loss` default to what `train` describes (train.negatives, train.loss)."""
        if train.negatives not in ("in_batch", "mixed", "full"):
            raise RecIndexError(f"train.negatives must be in_batch, mixed or full, got {train.negatives!r}")
        if train.loss not in ("infonce", "hinge"):
            raise RecIndexError(f"train.loss must be infonce or hinge, got {train.loss!r}")
        self.model, self.split, self.config, self.evaluation = model, split, train, evaluation
        self.negatives = negatives or sampler_from(train)
        self.loss = loss or loss_from(train, model.temperature)
        self.progress, self.log = progress, log or (lambda _: None)
        n_items = model.n_items
        trained = split.train_item_mask(n_items)
        model.set_trained_items(trained)
        self.item_counts = np.bincount(split.train_items, minlength=n_items)
        # Candidates are drawn only from items with training data: held-out cold items stay unseen.
        self.pool = torch.as_tensor(np.flatnonzero(trained))
        self.pool_position = torch.full((n_items + 1,), -1, dtype=torch.long)
        self.pool_position[self.pool] = torch.arange(len(self.pool))
        self.frequency = StreamingFrequency(n_items, decay=train.frequency_decay)
        self.hard: torch.Tensor | None = None

    def fit(self) -> TrainResult:
        config = self.config
        rng = seed_everything(config.seed, config.threads)
        examples = sequence_examples(
            self.split, self.model.shape.n_users, self.model.n_items, self.model.config.max_len
        )
        if not len(examples.users):
            raise RecIndexError("no user has two or more training items: nothing to train on")
        optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        result, best_state, since_best = TrainResult(), None, 0
        start = time.perf_counter()
        deadline = start + config.max_seconds if config.max_seconds > 0 else math.inf
        steps = n_batches(examples, config.batch_size)
        with TrainingProgress(config.epochs, steps, enabled=self.progress) as bar:
            for epoch in range(1, config.epochs + 1):
                self.before_epoch(epoch)
                if config.hard_negatives and (epoch - 1) % config.hard_negative_every == 0 and epoch > 1:
                    self.hard = self._mine_hard_negatives(examples, rng)
                # The time limit applies once an epoch may be kept (MFLI: once every level is on); before
                # that, stopping would leave nothing to keep.
                loss = self._train_epoch(
                    examples, optimizer, rng, bar, deadline if best_state is not None else math.inf
                )
                if loss is None:
                    result.stopped = "time"
                    self.log(
                        f"time limit of {config.max_seconds:g}s reached during epoch {epoch}; "
                        f"keeping epoch {result.best_epoch}"
                    )
                    break
                record = {"epoch": float(epoch), "loss": loss}
                if epoch % config.eval_every == 0 or epoch == config.epochs:
                    valid = self.validate()
                    record.update({"valid_recall@10": valid["recall@10"], "valid_ndcg@10": valid["ndcg@10"]})
                    if not self.checkpoint_allowed():
                        pass  # the model is not complete yet: neither a best epoch nor a stop
                    elif valid["recall@10"] > result.best_valid.get("recall@10", -1.0):
                        result.best_epoch, result.best_valid = epoch, valid
                        best_state, since_best = copy.deepcopy(self.model.state_dict()), 0
                    else:
                        since_best += config.eval_every
                record["seconds"] = time.perf_counter() - start
                result.history.append(record)
                bar.end_epoch(record)
                self.log(_format_record(record))
                result.epochs_run = epoch
                if since_best >= config.patience:
                    result.stopped = "patience"
                    break
                if best_state is not None and time.perf_counter() >= deadline and epoch < config.epochs:
                    result.stopped = "time"
                    self.log(
                        f"time limit of {config.max_seconds:g}s reached after epoch {epoch}; "
                        f"keeping epoch {result.best_epoch}"
                    )
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        result.seconds = time.perf_counter() - start
        return result

    def validate(self) -> dict[str, float]:
        """Validation Recall@10 and NDCG@10 of the model as it stands (what picks the kept epoch)."""
        return evaluate_model(
            self.model,
            self.split,
            "valid",
            self.item_counts,
            ks=(10,),
            exclude_seen=self.evaluation.exclude_seen,
            batch_size=self.evaluation.batch_size,
        ).metrics

    def before_epoch(self, epoch: int) -> None:
        """A hook for trainers that change the model between epochs (MFLI switches codebook levels on)."""

    def checkpoint_allowed(self) -> bool:
        """Whether the model as it stands may be kept as the best one (MFLI: once every level is on)."""
        return True

    def _train_epoch(
        self, examples: SequenceExamples, optimizer, rng, bar, deadline: float = math.inf
    ) -> float | None:
        """One pass over the examples; the mean loss, or None when `deadline` passed before the end."""
        self.model.train()
        total, count = 0.0, 0
        for batch in iterate_batches(examples, self.config.batch_size, rng):
            if time.perf_counter() >= deadline:
                return None
            loss = self._loss(batch)
            if not torch.isfinite(loss):
                raise RecIndexError(
                    "training loss is not finite; lower train.lr or raise model.temperature and train again"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
            bar.advance_batch(total / count)
        return total / max(count, 1)

    def _id_keep(self) -> torch.Tensor | None:
        rate = self.model.config.id_dropout
        if rate <= 0:
            return None
        keep = torch.rand(self.model.n_items + 1) >= rate
        keep[-1] = True
        return keep

    def _loss(self, batch) -> torch.Tensor:
        model = self.model
        id_keep = self._id_keep()
        states = model.user_states(batch.inputs, batch.lengths, batch.users, id_keep)  # (B, L, d)
        real = batch.targets != model.n_items  # (B, L)
        positives = batch.targets[real]  # (P,)
        if self.negatives.needs_frequency or self.hard is not None:
            self.frequency.update(positives)
        rows = torch.as_tensor(batch.rows).unsqueeze(1).expand_as(real)[real]  # (P,) example row
        return self.retrieval_loss(
            states[real], positives, lambda items: model.item_vectors(items, id_keep), rows
        )

    def retrieval_loss(
        self,
        users: torch.Tensor,
        positives: torch.Tensor,
        encode_items,
        rows,
        negatives: NegativeSampler | None = None,
    ) -> torch.Tensor:
        """The task loss of (P, d) query vectors against their positives and the trainer's negatives
        (or `negatives`), with items encoded by `encode_items` (the item tower; SCI's swapped pass gives
        the query tower)."""
        sampler = negatives or self.negatives
        whole = isinstance(sampler, CatalogueNegatives)
        if whole and self.hard is None:
            catalogue = encode_items(self.pool)
            labels = self.pool_position[positives]
            return self.loss.over_catalogue(users, positives, catalogue, labels, self.pool)
        positive_vectors = encode_items(positives)
        drawn = sampler.draw(positives, self.pool, self.frequency)
        if drawn.whole_catalogue:
            candidate_vectors = encode_items(drawn.ids)
        elif drawn.sampled is not None:
            candidate_vectors = torch.cat([positive_vectors, encode_items(drawn.sampled)])
        else:
            candidate_vectors = positive_vectors
        hard_ids = hard_vectors = None
        if self.hard is not None:
            hard_ids = self.hard[rows]  # (P, H)
            hard_vectors = encode_items(hard_ids)
        return self.loss.over_candidates(
            users, positives, positive_vectors, drawn, candidate_vectors, hard_ids, hard_vectors
        )

    def _mine_hard_negatives(self, examples: SequenceExamples, rng: np.random.Generator) -> torch.Tensor:
        """(U, H) negatives per example row, sampled from each user's top non-interacted items."""
        model, config = self.model, self.config
        model.eval()
        pool_size = min(config.hard_negative_pool, len(self.pool))
        untrained = torch.ones(model.n_items, dtype=torch.bool)
        untrained[self.pool] = False
        mined = np.empty((len(examples.users), config.hard_negatives), np.int64)
        with torch.no_grad():
            items = model.item_vectors()
            for start in range(0, len(examples.users), 1024):
                rows = slice(start, start + 1024)
                inputs = torch.as_tensor(examples.inputs[rows])
                lengths = torch.as_tensor(examples.lengths[rows])
                users = model.user_vectors(inputs, lengths, torch.as_tensor(examples.users[rows]))
                scores = users @ items.T
                scores[:, untrained] = float("-inf")
                for r, user in enumerate(examples.users[rows]):
                    scores[r, torch.as_tensor(self.split.train_sequence(int(user)))] = float("-inf")
                top = torch.topk(scores, pool_size, dim=1).indices.numpy()
                picks = rng.integers(0, pool_size, size=(len(top), config.hard_negatives))
                mined[rows] = np.take_along_axis(top, picks, axis=1)
        model.train()
        return torch.as_tensor(mined)


def _format_record(record: dict[str, float]) -> str:
    parts = [f"epoch {int(record['epoch'])}", f"loss {record['loss']:.4f}"]
    if "valid_recall@10" in record:
        parts.append(f"valid R@10 {record['valid_recall@10']:.4f} N@10 {record['valid_ndcg@10']:.4f}")
    parts.append(f"{record['seconds']:.0f}s")
    return "  ".join(parts)
