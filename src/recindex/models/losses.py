"""Sampled softmax (InfoNCE) over a candidate pool, with logQ correction and accidental-hit removal.

Each row has one positive. The candidates are shared by all rows (in-batch positives and/or uniformly
sampled items, or the whole catalogue) plus optional per-row hard negatives. Candidates drawn from a
proposal Q get `log Q` subtracted from their logits (and so does the positive), which makes the sampled
softmax an unbiased estimate of the full one (Bengio & Senecal 2008; Yi et al. 2019). A candidate that is
the row's own positive is an accidental hit: it is removed, not treated as a negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def corrected_logits(
    users: torch.Tensor, candidates: torch.Tensor, temperature: float, log_q: torch.Tensor | None
) -> torch.Tensor:
    """(P, d) x (C, d) -> (P, C) logits `<u, v> / temperature - log Q(v)`."""
    logits = (users / temperature) @ candidates.T  # scaling (P, d) is cheaper than scaling (P, C)
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    return logits


def sampled_softmax_loss(
    users: torch.Tensor,  # (P, d), L2-normalised
    positive_ids: torch.Tensor,  # (P,)
    positive_vectors: torch.Tensor,  # (P, d)
    candidate_ids: torch.Tensor,  # (C,)
    candidate_vectors: torch.Tensor,  # (C, d)
    temperature: float,
    *,
    candidate_log_q: torch.Tensor | None = None,  # (C,)
    positive_log_q: torch.Tensor | None = None,  # (P,)
    hard_ids: torch.Tensor | None = None,  # (P, H)
    hard_vectors: torch.Tensor | None = None,  # (P, H, d)
) -> torch.Tensor:
    positive = (users * positive_vectors).sum(-1, keepdim=True) / temperature  # (P, 1)
    if positive_log_q is not None:
        positive = positive - positive_log_q.unsqueeze(1)
    shared = corrected_logits(users, candidate_vectors, temperature, candidate_log_q)  # (P, C)
    shared = shared.masked_fill(candidate_ids.unsqueeze(0) == positive_ids.unsqueeze(1), float("-inf"))
    columns = [positive, shared]
    if hard_ids is not None and hard_vectors is not None and hard_ids.shape[1] > 0:
        hard = torch.einsum("pd,phd->ph", users, hard_vectors) / temperature  # (P, H)
        columns.append(hard.masked_fill(hard_ids == positive_ids.unsqueeze(1), float("-inf")))
    logits = torch.cat(columns, dim=1)
    labels = torch.zeros(len(users), dtype=torch.long, device=users.device)
    return F.cross_entropy(logits, labels)


class _FullSoftmax(torch.autograd.Function):
    """Cross-entropy over `users @ items.T` without keeping log-softmax outputs for backward.

    Written by hand because autograd's log_softmax backward makes several passes over the (P, N)
    logits and dominated training time on CPU (~3x the matmuls at N = 12k); here backward reuses one
    buffer: probabilities = exp(logits - logsumexp), minus one at the label, then two matmuls.
    """

    @staticmethod
    # Under GPU autocast the (P, N) logits stay in fp32: their logsumexp and the hand-written backward
    # need one dtype, and the softmax over a large catalogue needs fp32's precision anyway.
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, users, items, labels):
        logits = users @ items.T  # (P, N)
        lse = torch.logsumexp(logits, dim=1)  # (P,)
        picked = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(users, items, labels, logits, lse)
        return (lse - picked).mean()

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_output):
        users, items, labels, logits, lse = ctx.saved_tensors
        probabilities = logits.sub_(lse.unsqueeze(1)).exp_()  # in place: the logits are not needed again
        probabilities[torch.arange(len(labels), device=labels.device), labels] -= 1.0
        probabilities.mul_(grad_output / len(labels))
        return probabilities @ items, probabilities.T @ users, None


def full_softmax_loss(
    users: torch.Tensor,  # (P, d)
    catalogue_vectors: torch.Tensor,  # (C, d): every candidate item
    labels: torch.Tensor,  # (P,) column of each row's positive in `catalogue_vectors`
    temperature: float,
) -> torch.Tensor:
    """Exact softmax over the whole catalogue: no sampling, so no correction and no accidental hits."""
    return _FullSoftmax.apply(users / temperature, catalogue_vectors, labels)


def hinge_loss(
    users: torch.Tensor,  # (P, d), L2-normalised
    positive_ids: torch.Tensor,  # (P,)
    positive_vectors: torch.Tensor,  # (P, d)
    candidate_ids: torch.Tensor,  # (C,)
    candidate_vectors: torch.Tensor,  # (C, d)
    margin: float,
    *,
    hard_ids: torch.Tensor | None = None,  # (P, H)
    hard_vectors: torch.Tensor | None = None,  # (P, H, d)
) -> torch.Tensor:
    """Triplet hinge on cosine scores, max(0, margin - s(q, i+) + s(q, i-)), averaged over every
    (row, negative) pair; a candidate that is the row's own positive is not a negative."""
    positive = (users * positive_vectors).sum(-1, keepdim=True)  # (P, 1)
    shared = users @ candidate_vectors.T  # (P, C)
    valid = candidate_ids.unsqueeze(0) != positive_ids.unsqueeze(1)
    total = (F.relu(margin - positive + shared) * valid).sum()
    count = valid.sum()
    if hard_ids is not None and hard_vectors is not None and hard_ids.shape[1] > 0:
        hard = torch.einsum("pd,phd->ph", users, hard_vectors)
        hard_valid = hard_ids != positive_ids.unsqueeze(1)
        total = total + (F.relu(margin - positive + hard) * hard_valid).sum()
        count = count + hard_valid.sum()
    return total / count.clamp(min=1)
