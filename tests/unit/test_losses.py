import math

import torch

from recindex.models.frequency import StreamingFrequency
from recindex.models.losses import corrected_logits, full_softmax_loss, sampled_softmax_loss


def test_logq_correction_subtracts_log_probability_after_temperature():
    users = torch.tensor([[1.0, 0.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    log_q = torch.log(torch.tensor([0.5, 0.01]))
    plain = corrected_logits(users, items, 0.1, None)
    corrected = corrected_logits(users, items, 0.1, log_q)
    # Scale: raw score / temperature; sign: a frequent item (large Q) is pushed DOWN by exactly -log Q.
    assert torch.allclose(plain, torch.tensor([[10.0, 0.0]]))
    assert torch.allclose(corrected - plain, torch.tensor([[-math.log(0.5), -math.log(0.01)]]))
    assert (corrected - plain)[0, 1] > (corrected - plain)[0, 0]  # rare item gains more than popular one


def test_logq_correction_lowers_loss_weight_of_popular_negatives():
    users = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[0.0, 1.0]])
    kwargs = dict(
        positive_ids=torch.tensor([0]),
        positive_vectors=positive,
        candidate_ids=torch.tensor([1]),
        candidate_vectors=candidates,
        temperature=1.0,
    )
    popular = sampled_softmax_loss(
        users,
        candidate_log_q=torch.log(torch.tensor([0.9])),
        positive_log_q=torch.log(torch.tensor([0.01])),
        **kwargs,
    )
    rare = sampled_softmax_loss(
        users,
        candidate_log_q=torch.log(torch.tensor([0.01])),
        positive_log_q=torch.log(torch.tensor([0.01])),
        **kwargs,
    )
    assert popular < rare


def test_accidental_hits_are_removed_not_counted_as_negatives():
    users = torch.eye(2)
    vectors = torch.eye(2)
    ids = torch.tensor([7, 7])  # both rows share the same positive item
    loss = sampled_softmax_loss(users, ids, vectors, ids, vectors, 1.0)
    # Every candidate is the row's own positive, so only the positive column remains: loss is exactly 0.
    assert torch.isclose(loss, torch.tensor(0.0), atol=1e-6)
    other = torch.tensor([7, 8])
    assert sampled_softmax_loss(users, other, vectors, other, vectors, 1.0) > 0.1


def test_hard_negatives_equal_to_positive_are_masked():
    users = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0]])
    empty_ids, empty = torch.zeros(0, dtype=torch.long), torch.zeros(0, 2)
    hit = sampled_softmax_loss(
        users,
        torch.tensor([3]),
        positive,
        empty_ids,
        empty,
        1.0,
        hard_ids=torch.tensor([[3]]),
        hard_vectors=positive.unsqueeze(1),
    )
    miss = sampled_softmax_loss(
        users,
        torch.tensor([3]),
        positive,
        empty_ids,
        empty,
        1.0,
        hard_ids=torch.tensor([[4]]),
        hard_vectors=positive.unsqueeze(1),
    )
    assert torch.isclose(hit, torch.tensor(0.0), atol=1e-6)
    assert torch.isclose(miss, torch.tensor(math.log(2.0)), atol=1e-5)


def test_full_softmax_matches_autograd_cross_entropy():
    torch.manual_seed(0)
    users = torch.randn(9, 4, requires_grad=True)
    items = torch.randn(13, 4, requires_grad=True)
    labels = torch.randint(13, (9,))
    ours = full_softmax_loss(users, items, labels, 0.3)
    ours.backward()
    grads = users.grad.clone(), items.grad.clone()
    users.grad = items.grad = None
    reference = torch.nn.functional.cross_entropy((users / 0.3) @ items.T, labels)
    reference.backward()
    assert torch.isclose(ours, reference, atol=1e-5)
    assert torch.allclose(grads[0], users.grad, atol=1e-5)
    assert torch.allclose(grads[1], items.grad, atol=1e-5)


def test_streaming_frequency_recovers_rate_of_a_periodic_item():
    frequency = StreamingFrequency(3, decay=0.1)
    for step in range(1, 2001):
        batch = [0] + ([1] if step % 4 == 0 else []) + ([2] if step % 20 == 0 else [])
        frequency.update(torch.tensor(batch))
    p = frequency.per_batch_probability(torch.tensor([0, 1, 2]))
    assert torch.allclose(p, torch.tensor([1.0, 0.25, 0.05]), rtol=0.05)
