"""URI's layer losses: where their gradients go, and what each one is smallest for."""

import math

import torch

from recindex.uri.losses import (
    balance_loss,
    balance_weights,
    commitment_loss,
    e_step_loss,
    m_step_loss,
)


def distributions(rows: int, k: int, seed: int):
    logits = torch.randn(rows, k, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    return logits, torch.log_softmax(logits, -1)


def test_the_e_step_moves_only_the_query_and_the_m_step_only_the_item():
    q_logits, q_log = distributions(8, 5, 0)
    i_logits, i_log = distributions(8, 5, 1)
    e_step_loss(q_log, i_log.exp()).backward()
    assert q_logits.grad.abs().sum() > 0 and i_logits.grad is None
    q_logits.grad = None
    q_logits2, q_log2 = distributions(8, 5, 0)
    i_logits2, i_log2 = distributions(8, 5, 1)
    m_step_loss(i_log2, q_log2.exp()).backward()
    assert i_logits2.grad.abs().sum() > 0 and q_logits2.grad is None


def test_both_sides_move_without_the_stop_gradient():
    q_logits, q_log = distributions(4, 3, 2)
    i_logits, i_log = distributions(4, 3, 3)
    e_step_loss(q_log, i_log.exp(), stop_gradient=False).backward()
    assert q_logits.grad.abs().sum() > 0 and i_logits.grad.abs().sum() > 0


def test_commitment_is_zero_for_one_hot_items_and_largest_for_uniform_ones():
    one_hot = torch.log(torch.eye(4) * (1 - 3e-12) + 1e-12)
    uniform = torch.log(torch.full((4, 4), 0.25))
    assert commitment_loss(one_hot) < 1e-6
    assert math.isclose(float(commitment_loss(uniform)), math.log(4), rel_tol=1e-5)


def test_balance_is_smallest_when_items_spread_evenly_and_weights_grow_with_imbalance():
    def log(probabilities):
        return torch.log(probabilities * (1 - 1e-6) + 1e-6 / probabilities.shape[-1])

    even = log(torch.eye(4))  # four items, one per token
    skewed = log(torch.eye(4)[[0, 0, 0, 1]])
    assert balance_loss(even, adaptive=False) < balance_loss(skewed, adaptive=False)
    assert math.isclose(float(balance_loss(even, adaptive=False)), math.log(4), rel_tol=1e-4)
    torch.testing.assert_close(balance_weights(even), torch.ones(4))  # at 1/k each: weight 1
    weights = balance_weights(log(torch.eye(4)[[0, 0, 0, 0, 0, 1, 2, 3]] * 0.96 + 0.01))
    assert weights.min() >= 1.0 and weights[0] > 1.3  # token 0 holds over half the items
    assert balance_loss(skewed) > balance_loss(even)


def test_a_token_nobody_uses_still_gets_a_gradient_back():
    """A dead token's probability can underflow any epsilon; the balance term must still revive it."""
    logits = torch.zeros(16, 4)
    logits[:, 3] = -60.0  # p ~ 1e-26 for every row
    logits.requires_grad_(True)
    balance_loss(torch.log_softmax(logits, -1)).backward()
    assert logits.grad[:, 3].sum() < -0.1  # descending the loss raises the dead token's logit


def test_the_balance_per_parent_is_the_row_weighted_mean_of_each_parents_balance():
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(50, 6), -1)
    parents = torch.randint(0, 4, (50,))
    for adaptive in (True, False):
        expected = sum(
            (parents == p).sum() * balance_loss(log_probs[parents == p], adaptive)
            for p in torch.unique(parents)
        ) / len(parents)
        torch.testing.assert_close(balance_loss(log_probs, adaptive, parents), expected)
    # parents that spread their items over two tokens each score lower than parents that use one
    even = torch.log(torch.eye(4)[[0, 1, 0, 1, 2, 3, 2, 3]] * (1 - 1e-6) + 2.5e-7)
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert balance_loss(even, False, groups) < balance_loss(even[[0, 0, 0, 0, 4, 4, 4, 4]], False, groups)
