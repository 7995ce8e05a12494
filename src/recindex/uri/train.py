"""Training URI (and the two-stage generative baselines): the decoder layer by layer, then the ranker.

URI (`uri.index = "learn"`), for layer l = 1..L (section 4.2):

    loss = H(P_I, P_Q)                    E-step: the query learns its positive item's distribution
         + H(P_Q, P_I)                    M-step: the item learns its queries' distribution
         + H(P_I) + H_w(U_k, E[P_I])      commitment and adaptively weighted balance, on the batch's
                                          positives and as many random items
         + sum_{i<l} H(C_i, P_Q^i) + H(C_i, P_I^i)   memory of the layers already assigned

then every item takes its most probable token that still has room (at most ceil(n / k) of the items
under its parent: `balanced_assignment`), and the next layer reads those tokens. After the last layer,
`final_epochs` of cross-entropy fit the query end to the finished index (ours, see below).

Two-stage (`uri.index` = a semantic-id method of `quant.semantic_ids`, or the path of a URI bundle
for "w/ URI index"): the codes are fixed before training and the same decoder learns them with plain
cross-entropy, every layer at once (teacher forcing), as DSI and TIGER do. With `uri.generate_items` a
last layer tells apart the items of one leaf (TIGER's collision token) so the decoder itself ranks items.

Ranker (section 4.3): a copy of the two-tower model, trained by sampled softmax with, per positive,
`ranker_random_negatives` uniform negatives and `sibling_negatives` drawn from the positive's sibling
leaves (same parent, other leaf); early stopping on validation Recall@10.

Choices of ours:
- the encoders start from a trained two-tower model (`uri.init_from`, or one trained first) and stay
  fixed while the decoder learns: the decoder's inputs are then computed once per run, which makes a
  layer of training take seconds on a CPU instead of the towers' minutes. The ranker fine-tunes its own
  copy of the towers, so the index never has to follow moving query vectors;
- each layer trains a fixed number of epochs (`layer_epochs`); the losses per epoch are logged;
- the final fit: the last layer's query distributions learned the items' soft distributions, and the
  balanced assignment then moved many items, so the query end is fitted to the finished codes (the
  memory loss over every layer). On Beauty, 3 epochs of it raised validation Recall@10 through the
  index from 0.0910 to 0.1039;
- `start_from = "kmeans"`: each layer first learns balanced k-means tokens of the items under each
  parent for `start_epochs`, then URI's losses take over (see docs/uri.md for the validation figures).

Under torchrun (`ranks`, a `uri.ranks.DecoderRanks`) each process trains on its share of every global
batch, DDP averages the gradients, and the assignment and the k-means start are rank 0's, broadcast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from recindex.data.splits import Split
from recindex.errors import RecIndexError
from recindex.progress import TrainingProgress
from recindex.quant.assignment import balanced_assignment
from recindex.quant.codes import prefix_numbers
from recindex.quant.semantic_ids import METHODS as FIXED_INDEXES
from recindex.quant.semantic_ids import kmeans_within
from recindex.train.batches import sequence_examples
from recindex.train.checkpoint import Checkpoints
from recindex.train.loop import TrainResult
from recindex.uri.checkpoint import DecoderRun, end_of_epoch
from recindex.uri.losses import commitment_loss, e_step_loss, m_step_loss
from recindex.uri.model import URIModel
from recindex.uri.ranks import DecoderRanks, StepResult


@dataclass
class DecoderResult:
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class QueryExamples:
    """Every training position as a (router query vector, next item) pair."""

    queries: torch.Tensor  # (P, d)
    targets: torch.Tensor  # (P,)


def query_examples(model: URIModel, split: Split, batch: int = 512) -> QueryExamples:
    examples = sequence_examples(split, model.shape.n_users, model.n_items, model.config.max_len)
    router = model.router.eval()
    device = model.item_codes.device
    queries, targets = [], []
    with torch.no_grad():
        for start in range(0, len(examples.users), batch):
            rows = slice(start, start + batch)
            inputs, lengths, users, wanted = (
                torch.as_tensor(part[rows]).to(device)
                for part in (examples.inputs, examples.lengths, examples.users, examples.targets)
            )
            states = router.user_states(inputs, lengths, users)
            real = wanted != model.n_items
            queries.append(states[real])
            targets.append(wanted[real])
    if not queries:
        raise RecIndexError("no user has two or more training items: nothing to train on")
    return QueryExamples(torch.cat(queries), torch.cat(targets))


class DecoderTrainer:
    def __init__(
        self,
        model: URIModel,
        split: Split,
        config,  # URIConfig
        *,
        seed: int = 0,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        ranks: DecoderRanks | None = None,
        checkpoints: Checkpoints | None = None,
        resumed: DecoderRun | None = None,
    ):
        """`ranks`: this process's place under torchrun (see `uri.ranks`); one process without it.
        `checkpoints`: where the epochs' checkpoints go; `resumed`: the position a resumed run restarts at
        (see `uri.checkpoint`)."""
        self.model, self.split, self.config = model, split, config
        self.seed, self.progress, self.log = seed, progress, log or (lambda _: None)
        self.checkpoints, self.resumed = checkpoints, resumed
        self.steps = 0  # optimizer steps since the decoder's stage began (checkpoint_every counts them)
        trained = split.train_item_mask(model.n_items)
        model.set_trained_items(trained)
        self.device = model.item_codes.device  # the decoder trains where the model is (train.device)
        self.ranks = ranks or DecoderRanks(device=self.device)
        self.pool = torch.as_tensor(np.flatnonzero(trained)).to(self.device)
        self.examples = query_examples(model, split)
        self.parameters = list(model.decoder.parameters()) + list(model.item_ids.parameters())

    # ---- URI ------------------------------------------------------------------------------------------

    def fit_uri(self) -> DecoderResult:
        """Train and assign layer by layer; the model's `item_codes` hold the learned index after."""
        model, config = self.model, self.config
        optimizer = torch.optim.Adam(self.parameters, lr=config.lr)
        generator = torch.Generator().manual_seed(self.seed)
        if config.start_from not in ("", "kmeans"):
            raise RecIndexError(f"uri.start_from must be empty or 'kmeans', got {config.start_from!r}")
        run = self._begin("uri")
        if run.phase == "uri":
            run.restore(optimizer, generator)
        for layer in range(run.layer, model.decoder.layers):
            start_epochs = config.start_epochs if config.start_from else 0
            epochs = start_epochs + config.layer_epochs
            with TrainingProgress(epochs, self._steps(), enabled=self.progress) as bar:
                if start_epochs and run.start_tokens is None:
                    run.start_tokens = self.start_tokens(layer)
                for epoch in range(run.epoch + 1, epochs + 1):
                    targets = run.start_tokens if epoch <= start_epochs else None
                    record = self._uri_epoch(layer, optimizer, generator, bar, targets)
                    record.update({"layer": float(layer + 1), "epoch": float(epoch)})
                    record["seconds"] = run.seconds()
                    run.history.append(record)
                    bar.end_epoch({"epoch": epoch, "loss": record["loss"]})
                    self.log(_format(record))
                    run.epoch = epoch
                    self._checkpoint(run, optimizer, generator)
            # rank 0's assignment on every rank (see `uri.ranks` for why not each rank's own)
            tokens = self.ranks.from_rank_zero(partial(self.assign, layer), model.n_items)
            model.item_codes[:, layer] = torch.as_tensor(tokens).to(self.device)
            run.layer, run.epoch, run.start_tokens = layer + 1, 0, None
            self.log(
                f"layer {layer + 1} assigned: {len(np.unique(tokens))} of "
                f"{model.decoder.sizes[layer]} tokens used"
            )
        if config.final_epochs:
            # The last layer's query distributions were trained towards the items' soft distributions,
            # and the balanced assignment then moved many items: fit the query end to the finished index.
            if run.phase == "uri":
                run.phase, run.epoch, run.phase_start = "final", 0, run.seconds()
            self._fixed_epochs(config.final_epochs, run, layer=model.decoder.layers + 1)
        model.eval()
        return DecoderResult(run.history, run.seconds())

    def _begin(self, phase: str) -> DecoderRun:
        """The decoder's position: the resumed run's (once), else the start of `phase`."""
        run, self.resumed = self.resumed or DecoderRun(phase=phase), None
        if run.start_tokens is not None:
            run.start_tokens = run.start_tokens.to(self.device)  # a checkpoint is read onto the CPU
        self.steps = run.step
        return run

    def _checkpoint(self, run: DecoderRun, optimizer, generator) -> None:
        """The end of an epoch: `run` takes the steps taken, and a checkpoint is written if one came due."""
        run.step = self.steps
        if self.checkpoints is not None:
            end_of_epoch(self.checkpoints, self.ranks.context, self.device, run, optimizer, generator)

    def start_tokens(self, layer: int) -> torch.Tensor:
        """Balanced k-means tokens of the router item vectors under each parent the decoder assigned
        (rank 0's fit, on every rank)."""

        def fit() -> np.ndarray:
            with torch.no_grad():
                vectors = self.model.router.item_vectors().cpu().numpy()
            codes = self.model.item_codes[:, :layer].cpu().numpy()
            parents = prefix_numbers(codes, self.model.decoder.sizes)
            return kmeans_within(
                vectors, parents, self.model.decoder.sizes[layer], self.seed + layer, balanced=True
            )

        return torch.as_tensor(self.ranks.from_rank_zero(fit, self.model.n_items)).to(self.device)

    def _steps(self) -> int:
        """Batches per epoch: global batches of `batch_size` positions per rank."""
        return -(-len(self.examples.targets) // (self.config.batch_size * self.ranks.world_size))

    def _step(self, optimizer, compute: Callable[[], StepResult]) -> dict[str, torch.Tensor]:
        """One optimizer step (the ranks' gradients averaged under torchrun); the step's terms."""
        loss, terms = self.ranks.step([self.model.decoder, self.model.item_ids], compute)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.steps += 1
        return terms

    def _uri_epoch(self, layer: int, optimizer, generator, bar, targets=None) -> dict[str, float]:
        """One epoch of layer `layer`: URI's losses, or, with `targets` (a token per item), the start:
        cross-entropy of both ends towards the items' target tokens."""
        model, config = self.model, self.config
        model.decoder.train()
        # the CPU generator draws the order and the random items whatever the device: the same run anywhere
        order = torch.randperm(len(self.examples.targets), generator=generator).to(self.device)
        sums: dict[str, float] = {}
        batches, size = 0, config.batch_size * self.ranks.world_size
        for start in range(0, len(order), size):
            everyone = order[start : start + size]  # the global batch: the same on every rank
            drawn = torch.randint(len(self.pool), (len(everyone),), generator=generator)
            rows = self.ranks.share(everyone)
            if rows is None:
                continue
            random_items = self.pool[self.ranks.share(drawn.to(self.device))]
            terms = self._step(optimizer, partial(self._uri_loss, layer, rows, random_items, targets))
            batches += 1
            for name, value in {"loss": sum(terms.values()), **terms}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.advance_batch(sums["loss"] / batches)
        return self.ranks.means({name: value / max(batches, 1) for name, value in sums.items()})

    def _uri_loss(self, layer: int, rows, random_items, targets) -> StepResult:
        """Layer `layer`'s loss on this rank's `rows` of the positions and its random items."""
        model, config = self.model, self.config
        positives = self.examples.targets[rows]
        n = len(rows)
        items = torch.cat([positives, random_items])
        query_logits = model.decoder.logits(
            model.decoder.encode(self.examples.queries[rows], "query"),
            model.item_codes[positives, :layer],
            layer + 1,
        )
        item_logits = model.decoder.logits(
            model.decoder.encode(model.item_features(items), "item"),
            model.item_codes[items, :layer],
            layer + 1,
        )
        parents = _parent_groups(model.item_codes[items, :layer], model.decoder.sizes) if layer else None
        balanced = slice(n if config.balance_items == "random" else 0, None)
        query_log = torch.log_softmax(query_logits[layer], -1)
        item_log = torch.log_softmax(item_logits[layer], -1)
        item_probs = item_log.exp()
        if targets is not None:
            start = F.nll_loss(query_log, targets[positives]) + F.nll_loss(item_log, targets[items])
            terms = {"start": start}
        else:
            terms = self._uri_terms(query_log, item_log, item_probs, n, balanced, parents)
        memory = torch.zeros(())
        for earlier in range(layer):
            memory = memory + F.cross_entropy(query_logits[earlier], model.item_codes[positives, earlier])
            memory = memory + F.cross_entropy(item_logits[earlier], model.item_codes[items, earlier])
        terms["memory"] = config.memory_weight * memory
        # every term but the balance is a mean over this rank's rows (the balance is the global batch's)
        weight = self.ranks.weight(n)
        loss = sum(value if name == "balance" else weight * value for name, value in terms.items())
        return loss, terms

    def _uri_terms(self, query_log, item_log, item_probs, n, balanced, parents) -> dict[str, torch.Tensor]:
        config = self.config
        return {
            "e_step": e_step_loss(query_log, item_probs[:n], config.stop_gradient),
            "m_step": m_step_loss(item_log[:n], query_log.exp(), config.stop_gradient),
            "commit": config.commit_weight * commitment_loss(item_log),
            "balance": config.balance_weight
            * self.ranks.balance(
                item_log[balanced], config.adaptive_weight, None if parents is None else parents[balanced]
            ),
        }

    def item_distributions(self, layer: int, batch: int = 4096) -> np.ndarray:
        """(N, k) every item's token distribution at `layer`, given its assigned earlier tokens."""
        model = self.model
        model.decoder.eval()
        out = []
        with torch.no_grad():
            for start in range(0, model.n_items, batch):
                items = torch.arange(start, min(start + batch, model.n_items), device=self.device)
                logits = model.decoder.logits(
                    model.decoder.encode(model.item_features(items), "item"),
                    model.item_codes[items, :layer],
                    layer + 1,
                )
                out.append(torch.softmax(logits[layer], -1).cpu().numpy())
        return np.concatenate(out)

    def assign(self, layer: int) -> np.ndarray:
        probabilities = self.item_distributions(layer)
        codes = self.model.item_codes[:, :layer].cpu().numpy()
        groups = prefix_numbers(codes, self.model.decoder.sizes)
        return balanced_assignment(probabilities, groups)

    # ---- two-stage: fixed codes, cross-entropy -----------------------------------------------------------

    def fit_fixed(self, epochs: int) -> DecoderResult:
        """The decoder learns the fixed `item_codes` of every layer at once (teacher forcing)."""
        if self.model.assigned_layers() < self.model.decoder.layers:
            raise RecIndexError("a two-stage decoder needs every item's codes before training")
        run = self._begin("fixed")
        self._fixed_epochs(epochs, run)
        self.model.eval()
        return DecoderResult(run.history, run.seconds())

    def _fixed_epochs(self, epochs: int, run: DecoderRun, layer: int | None = None) -> None:
        """The rest of `epochs` of cross-entropy towards the fixed codes, recorded in `run` (each record
        with `layer` when given: URI's final fit)."""
        model, config = self.model, self.config
        optimizer = torch.optim.Adam(self.parameters, lr=config.lr)
        generator = torch.Generator().manual_seed(self.seed)
        run.restore(optimizer, generator)
        size = config.batch_size * self.ranks.world_size
        with TrainingProgress(epochs, self._steps(), enabled=self.progress) as bar:
            for epoch in range(run.epoch + 1, epochs + 1):
                model.decoder.train()
                order = torch.randperm(len(self.examples.targets), generator=generator).to(self.device)
                total, batches = 0.0, 0
                for start in range(0, len(order), size):
                    rows = self.ranks.share(order[start : start + size])
                    if rows is None:
                        continue
                    terms = self._step(optimizer, partial(self._fixed_loss, rows))
                    total, batches = total + float(terms["loss"].detach()), batches + 1
                    bar.advance_batch(total / batches)
                record = {
                    "epoch": float(epoch),
                    "loss": self.ranks.means({"loss": total / max(batches, 1)})["loss"],
                    "seconds": run.seconds() - run.phase_start,
                }
                bar.end_epoch(record)
                self.log(_format(record))
                run.history.append(record if layer is None else {**record, "layer": float(layer)})
                run.epoch = epoch
                self._checkpoint(run, optimizer, generator)

    def _fixed_loss(self, rows) -> StepResult:
        """Cross-entropy of every layer's fixed token, on this rank's `rows` of the positions."""
        model = self.model
        codes = model.item_codes[self.examples.targets[rows]]
        logits = model.decoder.logits(model.decoder.encode(self.examples.queries[rows], "query"), codes)
        loss = sum(F.cross_entropy(layer_logits, codes[:, i]) for i, layer_logits in enumerate(logits))
        return self.ranks.weight(len(rows)) * loss, {"loss": loss}


def _parent_groups(codes: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    return torch.as_tensor(prefix_numbers(codes.cpu().numpy(), sizes)).to(codes.device)


def with_item_token(codes: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """(N, L) codes -> (N, L + 1) codes whose last token numbers the items of each leaf (TIGER's
    collision token, here given to every item so each full code is one item), and its size."""
    leaves = prefix_numbers(codes, [k] * codes.shape[1])
    order = np.argsort(leaves, kind="stable")
    starts = np.searchsorted(leaves[order], leaves[order], side="left")
    place = np.empty(len(codes), np.int64)
    place[order] = np.arange(len(codes)) - starts
    return np.concatenate([codes, place[:, None]], 1), int(place.max()) + 1


# ---- the ranker -----------------------------------------------------------------------------------------


def _format(record: dict[str, float]) -> str:
    head = f"layer {int(record['layer'])} " if "layer" in record else ""
    terms = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("layer", "epoch", "seconds"))
    return f"{head}epoch {int(record['epoch'])}  {terms}  {record['seconds']:.0f}s"


__all__ = [
    "DecoderTrainer",
    "TrainResult",
    "with_item_token",
    "FIXED_INDEXES",
]
