"""SCI's pieces: both towers reading each other's inputs, the hinge task loss, SymmAligner training and
the misalignment measurements."""

import dataclasses

import numpy as np
import pytest
import torch

from recindex.config import EvalConfig, ModelConfig, SCIConfig, TrainConfig
from recindex.data.splits import leave_one_out
from recindex.errors import RecIndexError
from recindex.models.losses import hinge_loss
from recindex.models.two_tower import TwoTowerModel
from recindex.sci.alignment import distribution_gap, routing_consistency, tail_subsets, view_agreement
from recindex.sci.train import SymmetricTrainer
from recindex.sci.views import (
    catalogue_query_views,
    content_query_views,
    item_view_of_prefixes,
    query_view_of_items,
    training_queries,
)
from recindex.train.batches import iterate_batches, sequence_examples
from recindex.train.loop import Trainer

MODEL = ModelConfig(dim=16, max_len=10, layers=1, heads=2, dropout=0.0)


def test_each_tower_reads_the_other_sides_input(tiny_synthetic):
    torch.manual_seed(0)
    model = TwoTowerModel.for_data(tiny_synthetic, MODEL).eval()
    items = torch.arange(5)
    with torch.no_grad():
        # f_q(I) is the query tower on the one-item sequence [I]
        as_sequences = model.user_vectors(items[:, None], torch.ones(5, dtype=torch.long))
        np.testing.assert_allclose(query_view_of_items(model, items).numpy(), as_sequences.numpy(), atol=1e-6)
        # f_i(Q) after each position is the normalised mean of the items so far; for one item, f_i(I)
        sequences = torch.tensor([[3, 7, 9], [4, 4, 120]])
        views = item_view_of_prefixes(model, sequences)
        raw = model.item_tower(sequences)
        mean = raw[0, :2].mean(0)
        np.testing.assert_allclose(views[0, 1].numpy(), (mean / mean.norm()).numpy(), atol=1e-6)
        np.testing.assert_allclose(
            views[:, 0].numpy(), model.item_vectors(sequences[:, 0]).numpy(), atol=1e-6
        )
        all_views = catalogue_query_views(model)
        assert all_views.shape == (tiny_synthetic.n_items, 16)
        np.testing.assert_allclose(np.linalg.norm(all_views, axis=1), 1, atol=1e-5)
        # a new item known by its content tokens gets a query view through the same path
        tokens = tiny_synthetic.item_features.of(2).tolist()
        assert content_query_views(model, [tokens]).shape == (1, 16)
    split = leave_one_out(tiny_synthetic)
    queries = training_queries(model, split)
    assert queries.shape == (tiny_synthetic.n_users, 16)


def test_symmetric_training_adds_no_parameter(tiny_synthetic):
    model = TwoTowerModel.for_data(tiny_synthetic, MODEL)
    before = {name: p.shape for name, p in model.state_dict().items()}
    split = leave_one_out(tiny_synthetic)
    SymmetricTrainer(
        model,
        split,
        TrainConfig(epochs=1, threads=1),
        EvalConfig(),
        SCIConfig(symmetric_weight=1.0),
        progress=False,
    ).fit()
    assert {name: p.shape for name, p in model.state_dict().items()} == before


def swapped_loss(model, trainer, split) -> float:
    """The task loss with the inputs swapped (f_i(Q) against f_q(I)), over all training examples."""
    examples = sequence_examples(split, model.shape.n_users, model.n_items, model.config.max_len)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in iterate_batches(examples, 256, np.random.default_rng(0)):
            real = batch.targets != model.n_items
            rows = torch.as_tensor(batch.rows).unsqueeze(1).expand_as(real)[real]
            queries = item_view_of_prefixes(model, batch.inputs)[real]
            loss = trainer.retrieval_loss(
                queries, batch.targets[real], lambda items: query_view_of_items(model, items), rows
            )
            total, count = total + float(loss), count + 1
    return total / count


@pytest.mark.parametrize(("loss", "lr"), [("infonce", 1e-3), ("hinge", 3e-3)])
def test_symmetric_training_lowers_the_swapped_loss(tiny_synthetic, loss, lr):
    split = leave_one_out(tiny_synthetic)
    train = TrainConfig(epochs=4, batch_size=64, lr=lr, negatives="full", loss=loss, threads=1, patience=100)
    outcomes = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = TwoTowerModel.for_data(tiny_synthetic, MODEL)
        trainer = SymmetricTrainer(
            model, split, train, EvalConfig(), SCIConfig(symmetric_weight=weight), progress=False
        )
        trainer.fit()
        outcomes[weight] = swapped_loss(model, trainer, split)
    # (Whether f_q(I) and f_i(I) of one item also move together is measured, not assumed: the swapped
    # loss asks f_i(Q) . f_q(I+) to be high, not f_q(I) = f_i(I).)
    assert outcomes[1.0] < 0.9 * outcomes[0.0]


def test_the_consistency_term_pulls_the_two_views_of_an_item_together(tiny_synthetic):
    split = leave_one_out(tiny_synthetic)
    train = TrainConfig(epochs=3, batch_size=64, lr=5e-3, threads=1, patience=100)
    agreement = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = TwoTowerModel.for_data(tiny_synthetic, MODEL)
        SymmetricTrainer(
            model, split, train, EvalConfig(), SCIConfig(consistency_weight=weight), progress=False
        ).fit()
        with torch.no_grad():
            agreement[weight] = view_agreement(catalogue_query_views(model), model.item_vectors().numpy())
    assert agreement[1.0] > agreement[0.0] + 0.1


def test_the_in_batch_mirror_trains_and_lowers_the_swapped_loss(tiny_synthetic):
    split = leave_one_out(tiny_synthetic)
    train = TrainConfig(epochs=4, batch_size=64, negatives="full", threads=1, patience=100)
    losses = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = TwoTowerModel.for_data(tiny_synthetic, MODEL)
        sci = SCIConfig(symmetric_weight=weight, swapped_negatives="in_batch")
        trainer = SymmetricTrainer(model, split, train, EvalConfig(), sci, progress=False)
        trainer.fit()
        losses[weight] = swapped_loss(model, trainer, split)  # measured with the full mirror
    assert losses[1.0] < 0.95 * losses[0.0]


def test_bad_weights_and_losses_are_refused(tiny_synthetic):
    split = leave_one_out(tiny_synthetic)
    model = TwoTowerModel.for_data(tiny_synthetic, MODEL)
    with pytest.raises(RecIndexError, match="symmetric_weight"):
        SymmetricTrainer(model, split, TrainConfig(), EvalConfig(), SCIConfig(symmetric_weight=-1))
    with pytest.raises(RecIndexError, match="swapped_negatives"):
        SymmetricTrainer(model, split, TrainConfig(), EvalConfig(), SCIConfig(swapped_negatives="all"))
    with pytest.raises(RecIndexError, match="train.loss"):
        Trainer(model, split, dataclasses.replace(TrainConfig(), loss="bpr"), EvalConfig())


def test_hinge_loss():
    users = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.9, 0.436]])
    ids = torch.tensor([5, 7, 8])
    # negative 5 scores 0 (violation 0), item 7 is the positive itself (left out), 8 scores 0.9
    loss = hinge_loss(users, torch.tensor([7]), positive, ids, candidates, margin=0.2)
    assert loss.item() == pytest.approx((0.0 + 0.1) / 2, abs=1e-6)
    hard = hinge_loss(
        users,
        torch.tensor([7]),
        positive,
        ids[:1],
        candidates[:1],
        0.2,
        hard_ids=torch.tensor([[8]]),
        hard_vectors=candidates[2:].unsqueeze(0),
    )
    assert hard.item() == pytest.approx(0.1 / 2, abs=1e-6)


def test_distribution_gap_and_routing_consistency():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    same = distribution_gap(a, rng.normal(size=(500, 8)))
    shifted = distribution_gap(a, rng.normal(size=(500, 8)) + 1.0)
    assert abs(same["mmd2"]) < 0.01 < shifted["mmd2"]
    assert same["mean_gap"] < 0.3 < shifted["mean_gap"]
    item_lists = np.array([[0], [1], [1], [2]])
    probed = np.array([[1], [0]])
    exact_top = np.array([[1, 2, 3], [0, 1, -1]])
    assert routing_consistency(item_lists, probed, exact_top) == pytest.approx((2 / 3 + 1 / 2) / 2)
    subsets = tail_subsets(np.array([2, 9]), np.array([0, 3]), np.array([5, 1, 9, 0]), short=5)
    assert subsets["short_history"].tolist() == [True, False]
    assert subsets["tail_target"].tolist() == [False, True]  # items 3 and 1 are the least popular half
