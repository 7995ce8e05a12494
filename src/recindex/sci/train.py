"""SymmAligner: the two-tower task loss plus the same loss with the towers' inputs swapped.

    L = L_task(f_q(Q), f_i(I+), f_i(I-)) + lambda * L_task(f_i(Q), f_q(I+), f_q(I-)) [+ mu * L_consistency]

`L_task` is the two-tower model's own loss (`train.loss`: InfoNCE with the configured negatives and logQ
correction, or the paper's triplet hinge), so the swapped term is its exact mirror: the same positives,
negatives, temperature or margin, with each input read by the other tower (`sci.views`). A pair (Q, I+)
must then score well both ways, which pulls the two towers' outputs into one space without a new weight.

Our choices, not the paper's (whose text on them was not recovered; see docs/sci.md):
- the swapped term is the full mirror (the negatives are swapped too) and no gradient is stopped;
- with InfoNCE, the mirror uses the task's negatives: the whole catalogue, read by the query tower, when
  `train.negatives = "full"`, or in-batch + uniform items with the same logQ correction otherwise;
- ID dropout (`model.id_dropout`) draws its own mask for the swapped pass;
- `sci.swapped_negatives = "in_batch"` gives the swapped term the batch's positives alone as negatives
  (logQ-corrected) instead of the task's: with a full-catalogue softmax the exact mirror reads the whole
  catalogue through the query tower at every batch, about 3x the plain epoch on Beauty;
- `sci.consistency_weight` adds 1 - cos(f_q(I), f_i(I)) over the batch's positive items: a direct
  cross-view consistency term that is ours (off by default).
"""

from __future__ import annotations

import torch

from recindex.errors import RecIndexError
from recindex.sci.views import item_view_of_prefixes, query_view_of_items
from recindex.train.loop import Trainer
from recindex.train.negatives import InBatchNegatives


class SymmetricTrainer(Trainer):
    def __init__(self, model, split, train, evaluation, sci, **kwargs):
        super().__init__(model, split, train, evaluation, **kwargs)
        if sci.symmetric_weight < 0 or sci.consistency_weight < 0:
            raise RecIndexError(
                f"sci.symmetric_weight and sci.consistency_weight must be >= 0, got "
                f"{sci.symmetric_weight} and {sci.consistency_weight}"
            )
        if sci.swapped_negatives not in ("task", "in_batch"):
            raise RecIndexError(
                f"sci.swapped_negatives must be task or in_batch, got {sci.swapped_negatives!r}"
            )
        self.sci = sci

    def _loss(self, batch) -> torch.Tensor:
        task = super()._loss(batch)
        model, sci = self.model, self.sci
        real = batch.targets != model.n_items
        positives = batch.targets[real]
        rows = torch.as_tensor(batch.rows, device=real.device).unsqueeze(1).expand_as(real)[real]
        total = task
        if sci.symmetric_weight > 0:
            id_keep = self._id_keep()
            swapped_queries = item_view_of_prefixes(model, batch.inputs, id_keep)[real]  # f_i(Q): (P, d)
            negatives = None
            if sci.swapped_negatives == "in_batch":
                negatives = InBatchNegatives(logq_correction=self.config.logq_correction)
                if not self.negatives.needs_frequency and self.hard is None:
                    self.update_frequency(positives)  # the task loss did not need the estimate
            swapped = self.retrieval_loss(
                swapped_queries,
                positives,
                lambda items: query_view_of_items(model, items, id_keep),
                rows,
                negatives,
            )
            total = total + sci.symmetric_weight * swapped
        if sci.consistency_weight > 0:
            items = torch.unique(positives)
            agreement = (query_view_of_items(model, items) * model.item_vectors(items)).sum(-1)
            total = total + sci.consistency_weight * (1 - agreement).mean()
        return total
