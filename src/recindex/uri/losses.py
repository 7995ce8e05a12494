"""URI's training losses at one layer (section 4.2, equations 8-10), on the decoder's token
distributions for a batch of (query, item) positive pairs, P_Q and P_I, each (B, k):

    E-step    H(P_I, P_Q)            the query learns the item's token distribution
    M-step    H(P_Q, P_I)            the item learns the query's
    commit    H(P_I)                 each item's distribution towards one token
    balance   H_w(U_k, E[P_I])       the batch's mean item distribution towards uniform, weighted (eq. 10)

Choices of ours where the paper is not explicit:
- the target side of each cross-entropy is held fixed (stop-gradient), so the E-step moves only the
  query's distribution and the M-step only the item's, as the EM reading suggests; `stop_gradient=False`
  gives the plain symmetric terms;
- below the first layer the balance is taken per parent prefix (see `balance_loss`);
- the adaptive weight of eq. 10 is read as w_j = |log(1/k) - log E[p_j]| + 1 (the text: "relates to the
  difference between E[P_I] and the uniform distribution"; the extracted formula mixes 1/k with a log),
  held fixed (sg) as the paper says.
Commitment and balance take log-probabilities (see `expected_log_probs`) and also the batch's random
items (the caller concatenates them to P_I's rows).
"""

from __future__ import annotations

import math

import torch


def cross_entropy(target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """H(target, P) = -sum_j target_j log p_j, averaged over the rows."""
    return -(target * log_probs).sum(-1).mean()


def e_step_loss(query_log_probs: torch.Tensor, item_probs: torch.Tensor, stop_gradient: bool = True):
    target = item_probs.detach() if stop_gradient else item_probs
    return cross_entropy(target, query_log_probs)


def m_step_loss(item_log_probs: torch.Tensor, query_probs: torch.Tensor, stop_gradient: bool = True):
    target = query_probs.detach() if stop_gradient else query_probs
    return cross_entropy(target, item_log_probs)


def commitment_loss(item_log_probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the items' distributions (from log-probabilities): low when each item settles on
    one token."""
    return -(item_log_probs.exp() * item_log_probs).sum(-1).mean()


def expected_log_probs(item_log_probs: torch.Tensor) -> torch.Tensor:
    """(k,) log E[p_j] over the rows, computed in log space. Computed as log(mean(p) + eps), a token
    whose probability has fallen below eps gets no gradient and stays dead: the whole layer then
    collapsed onto one token in our runs."""
    return torch.logsumexp(item_log_probs, 0) - math.log(item_log_probs.shape[0])


def balance_weights(item_log_probs: torch.Tensor) -> torch.Tensor:
    """(k,) adaptive weights: larger for tokens whose expected share is far from 1/k."""
    k = item_log_probs.shape[-1]
    return ((math.log(1.0 / k) - expected_log_probs(item_log_probs)).abs() + 1.0).detach()


def balance_loss(
    item_log_probs: torch.Tensor, adaptive: bool = True, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """H_w(U_k, E[P_I]) = -sum_j sg(w_j) (1/k) log E[p_j]; plain H(U_k, E[P_I]) when not adaptive.

    With `groups` (one parent prefix per row) the term is taken within each parent and averaged over the
    parents, weighted by their rows: below the first layer the assignment fills each parent's tokens
    evenly, and a balance over the whole batch let every parent send all its items to one token (each
    parent a different one), so the even split became a split by noise."""
    if groups is None:
        k = item_log_probs.shape[-1]
        weights = balance_weights(item_log_probs) if adaptive else torch.ones(k, device=item_log_probs.device)
        return -(weights * expected_log_probs(item_log_probs)).sum() / k
    # every parent's log E[p_j] at once: a (parents, rows) mask of -inf outside each parent
    parents, member_of = torch.unique(groups, return_inverse=True)
    inside = member_of.unsqueeze(0) == torch.arange(len(parents), device=member_of.device).unsqueeze(1)
    counts = inside.sum(1)
    mask = torch.zeros(inside.shape, device=inside.device).masked_fill(~inside, float("-inf"))
    log_expected = torch.logsumexp(mask.unsqueeze(-1) + item_log_probs.unsqueeze(0), 1)  # (G, k)
    log_expected = log_expected - torch.log(counts.to(log_expected.dtype)).unsqueeze(1)
    k = item_log_probs.shape[-1]
    weights = ((math.log(1.0 / k) - log_expected).abs() + 1.0).detach() if adaptive else torch.ones(1)
    per_parent = -(weights * log_expected).sum(1) / k  # (G,)
    return (counts * per_parent).sum() / len(item_log_probs)
