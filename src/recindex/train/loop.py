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
Devices and precision (`train.device`, `train.precision`): `models.devices`. Data parallelism under
torchrun: `train.distributed`. Checkpoints and `--resume`: `train.checkpoint`.
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
from recindex.models.devices import autocast, check_precision, gradient_scaler, resolve_device
from recindex.models.frequency import StreamingFrequency
from recindex.models.two_tower import TwoTowerModel
from recindex.progress import TrainingProgress
from recindex.train.batches import SequenceExamples, iterate_batches, n_batches, sequence_examples
from recindex.train.checkpoint import (
    Checkpoints,
    RunState,
    generator_state,
    restore_trainer,
    set_generator_state,
    trainer_payload,
)
from recindex.train.distributed import (
    SINGLE,
    CaseShards,
    Distributed,
    agree,
    data_parallel,
    gather_batch,
    gather_ids,
    mean,
    rank_seed,
    share_weight,
)
from recindex.train.hard_negatives import mine_hard_negatives
from recindex.train.negatives import (
    CatalogueNegatives,
    NegativeSampler,
    RetrievalLoss,
    loss_from,
    sampler_from,
)
from recindex.train.shard_batches import ShardedExamples


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
        split: Split | None,
        train: TrainConfig,
        evaluation: EvalConfig,
        *,
        negatives: NegativeSampler | None = None,
        loss: RetrievalLoss | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        distributed: Distributed = SINGLE,
        checkpoints: Checkpoints | None = None,
        sharded: ShardedExamples | None = None,
    ):
        """`negatives` and `loss` default to what `train` describes (train.negatives, train.loss).
        `distributed`: this process's rank under torchrun; `checkpoints`: where to write and read them;
        `sharded`: draw the batches and validate shard by shard from user shards (else from the split, in
        memory), when `split` may be None."""
        if train.negatives not in ("in_batch", "mixed", "full"):
            raise RecIndexError(f"train.negatives must be in_batch, mixed or full, got {train.negatives!r}")
        if train.loss not in ("infonce", "hinge"):
            raise RecIndexError(f"train.loss must be infonce or hinge, got {train.loss!r}")
        self.model, self.split, self.config, self.evaluation = model, split, train, evaluation
        self.negatives = negatives or sampler_from(train)
        self.loss = loss or loss_from(train, model.temperature)
        self.progress, self.log = progress, log or (lambda _: None)
        self.distributed, self.checkpoints, self.sharded = distributed, checkpoints, sharded
        if sharded is not None and train.hard_negatives:
            raise RecIndexError("hard negatives are mined over every user at once: not with data.shard_users")
        self.gathering = distributed.active and train.gather_negatives
        self.device = resolve_device(train.device, distributed.local_rank if distributed.active else None)
        check_precision(train.precision, self.device)
        model.to(self.device)
        n_items = model.n_items
        self.item_counts = (
            np.bincount(split.train_items, minlength=n_items) if split else sharded.training_item_counts()
        )
        trained = self.item_counts > 0  # the split's train_item_mask
        model.set_trained_items(trained)
        # Candidates are drawn only from items with training data: held-out cold items stay unseen.
        pool = torch.as_tensor(np.flatnonzero(trained))
        self.pool_position = torch.full((n_items + 1,), -1, dtype=torch.long)
        self.pool_position[pool] = torch.arange(len(pool))
        self.pool, self.pool_position = pool.to(self.device), self.pool_position.to(self.device)
        self.frequency = StreamingFrequency(n_items, decay=train.frequency_decay, device=self.device)
        self.hard: torch.Tensor | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._step: torch.nn.Module | None = None  # the loss under DistributedDataParallel
        self.unused_parameters = False  # whether a step may leave parameters out (DDP must look for them)
        self._started = 0.0

    def fit(self) -> TrainResult:
        config = self.config
        if self.split is None and self.sharded is None:
            raise RecIndexError("Trainer.fit validates on the split or the user shards: give it one")
        rng = seed_everything(config.seed, config.threads)
        sharded, model = self.sharded, self.model
        examples = None
        if sharded is None:
            examples = sequence_examples(self.split, model.shape.n_users, model.n_items, model.config.max_len)
        if not (sharded.n_users if sharded else len(examples.users)):
            raise RecIndexError("no user has two or more training items: nothing to train on")
        optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = gradient_scaler(config.precision, self.device)
        run = RunState(TrainResult())
        result = run.result
        if self.checkpoints is not None and self.checkpoints.resume:
            restore_trainer(self, self.checkpoints.load(), optimizer, run)
            self.log(f"resuming at epoch {run.epoch}, after {run.position} of its batches (step {run.step})")
        if (seed := rank_seed(self.distributed, config.seed, run.step)) is not None:
            torch.manual_seed(seed)
        start = self._started = time.perf_counter() - run.elapsed
        if self.checkpoints is not None:
            self.checkpoints.saved()  # minutes are counted from here
        deadline = start + config.max_seconds if config.max_seconds > 0 else math.inf
        steps = (
            sharded.n_batches(config.batch_size)
            if sharded
            else n_batches(examples, config.batch_size * self.distributed.world_size)
        )
        with TrainingProgress(config.epochs, steps, enabled=self.progress) as bar:
            while (epoch := run.epoch) <= config.epochs:
                if run.epoch_rng is None:  # a new epoch (a resumed one was prepared before it stopped)
                    self.before_epoch(epoch)
                    if config.hard_negatives and (epoch - 1) % config.hard_negative_every == 0 and epoch > 1:
                        self.hard = mine_hard_negatives(
                            self.model, self.split, examples, self.pool, config, rng
                        )
                    run.epoch_rng = generator_state(rng)
                else:
                    set_generator_state(rng, run.epoch_rng)  # its batches are drawn again, then skipped
                # The time limit applies once an epoch may be kept (MFLI: once every level is on); before
                # that, stopping would leave nothing to keep.
                loss = self._train_epoch(
                    examples, optimizer, rng, bar, deadline if run.best_state is not None else math.inf, run
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
                        run.best_state, run.since_best = copy.deepcopy(self.model.state_dict()), 0
                    else:
                        run.since_best += config.eval_every
                record["seconds"] = time.perf_counter() - start
                result.history.append(record)
                bar.end_epoch(record)
                self.log(_format_record(record))
                result.epochs_run = epoch
                run.next_epoch()
                if agree(self.distributed, run.since_best >= config.patience, self.device):
                    result.stopped = "patience"
                    break
                out_of_time = run.best_state is not None and time.perf_counter() >= deadline
                if agree(self.distributed, out_of_time and epoch < config.epochs, self.device):
                    result.stopped = "time"
                    self.log(
                        f"time limit of {config.max_seconds:g}s reached after epoch {epoch}; "
                        f"keeping epoch {result.best_epoch}"
                    )
                    break
        if run.best_state is not None:
            self.model.load_state_dict(run.best_state)
        self.model.eval()
        result.seconds = time.perf_counter() - start
        return result

    def validate(self) -> dict[str, float]:
        """Validation Recall@10 and NDCG@10 of the model as it stands (what picks the kept epoch); with
        user shards, evaluated one shard at a time."""
        shard = CaseShards(self.distributed, self.device) if self.distributed.active else None
        options = {"ks": (10,), "exclude_seen": self.evaluation.exclude_seen, "shard": shard}
        options["batch_size"] = self.evaluation.batch_size
        if self.sharded is not None:
            return self.sharded.evaluate(self.model, "valid", self.item_counts, **options)
        return evaluate_model(self.model, self.split, "valid", self.item_counts, **options).metrics

    def before_epoch(self, epoch: int) -> None:
        """A hook for trainers that change the model between epochs (MFLI switches codebook levels on)."""

    def checkpoint_allowed(self) -> bool:
        """Whether the model as it stands may be kept as the best one (MFLI: once every level is on)."""
        return True

    def checkpoint_state(self) -> dict:
        """A family trainer's own state for a checkpoint (tensors, numbers, strings, lists, dicts)."""
        return {}

    def restore_checkpoint_state(self, state: dict) -> None:
        """Take back what `checkpoint_state` gave."""

    def _train_epoch(
        self, examples: SequenceExamples | None, optimizer, rng, bar, deadline: float, run: RunState
    ) -> float | None:
        """The rest of an epoch (all of it unless resumed); its mean loss, or None when `deadline` passed
        before the end."""
        self.model.train()
        context, size = self.distributed, self.config.batch_size
        batches = (
            self.sharded.epoch(size, rng, run.position)
            if self.sharded
            else iterate_batches(
                examples, size, rng, rank=context.rank, world_size=context.world_size, skip=run.position
            )
        )
        for batch in batches:
            if deadline < math.inf and agree(context, time.perf_counter() >= deadline, self.device):
                return None
            run.total, run.count = run.total + self.train_step(batch, optimizer), run.count + 1
            run.position, run.step = run.position + 1, run.step + 1
            bar.advance_batch(run.total / run.count)
            if self.checkpoint_due(run.step):
                if context.main:
                    self._save(optimizer, run)
                self.checkpoints.saved()
        return mean(context, run.total / max(run.count, 1), self.device)

    def train_step(self, batch, optimizer) -> float:
        """One optimizer step on this rank's share of a batch; the batch's loss.

        Under torchrun the loss runs inside DistributedDataParallel, which averages the ranks' gradients
        in backward."""
        if self.distributed.active and self._step is None:
            # after any resume's restore: DDP starts every rank from rank 0's weights
            self._step = data_parallel(self.model, self._loss, self.device, self.unused_parameters)
        compute = self._step if self._step is not None else self._loss
        batch = batch.to(self.device)
        with autocast(self.config.precision, self.device):
            loss = compute(batch)
        if self.distributed.active:
            loss = loss * share_weight(self.distributed, self.positions(batch), self.device)
        if not torch.isfinite(loss):
            raise RecIndexError(
                "training loss is not finite; lower train.lr or raise model.temperature and train again"
            )
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.item()

    def positions(self, batch) -> int:
        """The training examples in a batch, the unit its loss is a mean over: every real position."""
        return int((batch.targets != self.model.n_items).sum())

    def _save(self, optimizer, run: RunState) -> None:
        run.elapsed = time.perf_counter() - self._started
        self.checkpoints.save(trainer_payload(self, optimizer, run))

    def checkpoint_due(self, step: int) -> bool:
        """Whether a checkpoint is written after `step`: every `checkpoint_every` steps, or once
        `checkpoint_minutes` have passed on rank 0's clock (it decides for every rank)."""
        checkpoints = self.checkpoints
        if checkpoints is None:
            return False
        if checkpoints.minutes <= 0:
            return checkpoints.due(step)  # the same step on every rank: nothing to agree on
        return agree(self.distributed, checkpoints.due(step) or checkpoints.time_due(), self.device)

    def _id_keep(self) -> torch.Tensor | None:
        rate = self.model.config.id_dropout
        if rate <= 0:
            return None
        keep = torch.rand(self.model.n_items + 1) >= rate  # the CPU generator, whatever the device
        keep[-1] = True
        return keep.to(self.device)

    def _loss(self, batch) -> torch.Tensor:
        model = self.model
        id_keep = self._id_keep()
        states = model.user_states(batch.inputs, batch.lengths, batch.users, id_keep)  # (B, L, d)
        real = batch.targets != model.n_items  # (B, L)
        positives = batch.targets[real]  # (P,)
        if self.negatives.needs_frequency or self.hard is not None:
            self.update_frequency(positives)
        rows = torch.as_tensor(batch.rows, device=real.device).unsqueeze(1).expand_as(real)[real]  # (P,)
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
        batch_ids, batch_vectors = positives, positive_vectors
        if self.gathering and not whole:  # every rank's positives are candidates of this rank's queries
            batch_ids, batch_vectors, offset = gather_batch(positives, positive_vectors)
        drawn = sampler.draw(batch_ids, self.pool, self.frequency)
        if batch_ids is not positives and drawn.positive_log_q is not None:
            drawn.positive_log_q = drawn.positive_log_q[offset : offset + len(positives)]
        if drawn.whole_catalogue:
            candidate_vectors = encode_items(drawn.ids)
        elif drawn.sampled is not None:
            candidate_vectors = torch.cat([batch_vectors, encode_items(drawn.sampled)])
        else:
            candidate_vectors = batch_vectors
        hard_ids = hard_vectors = None
        if self.hard is not None:
            hard_ids = self.hard[rows]  # (P, H)
            hard_vectors = encode_items(hard_ids)
        return self.loss.over_candidates(
            users, positives, positive_vectors, drawn, candidate_vectors, hard_ids, hard_vectors
        )

    def update_frequency(self, positives: torch.Tensor) -> None:
        """Feed a batch's positives to the logQ estimate; under torchrun every rank's, so that every
        rank holds the same estimate of the candidates' chance (see `train.distributed`)."""
        if not self.distributed.active:
            self.frequency.update(positives)
            return
        parts = gather_ids(positives)
        for part in [torch.cat(parts)] if self.gathering else parts:
            self.frequency.update(part)


def _format_record(record: dict[str, float]) -> str:
    parts = [f"epoch {int(record['epoch'])}", f"loss {record['loss']:.4f}"]
    if "valid_recall@10" in record:
        parts.append(f"valid R@10 {record['valid_recall@10']:.4f} N@10 {record['valid_ndcg@10']:.4f}")
    parts.append(f"{record['seconds']:.0f}s")
    return "  ".join(parts)
