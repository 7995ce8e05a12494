"""MFLI training on a small synthetic catalogue: delayed, level-by-level codebook activation, facets
that differ, and the trained codebook serving the model's own vectors through the MFLI index."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from recindex.config import load_config
from recindex.data.registry import load_dataset
from recindex.data.splits import split_for
from recindex.errors import RecIndexError
from recindex.eval.evaluate import evaluate_model
from recindex.mfli.index import MFLIIndex
from recindex.mfli.model import MFLIModel
from recindex.mfli.train import MFLITrainConfig, MFLITrainer, codebook_array
from recindex.models.two_tower import TwoTowerModel
from recindex.pipelines.indexes import make_index
from recindex.train.batches import iterate_batches, sequence_examples
from recindex.train.loop import seed_everything

DATASET = "synthetic:n_users=400,n_items=300,n_attributes=20,seed=3"


def settings(epochs: int, negatives: str = "mixed"):
    config = load_config(
        None,
        [
            f'data.dataset="{DATASET}"',
            "model.dim=16",
            "model.max_len=10",
            f"train.epochs={epochs}",
            "train.batch_size=64",
            "train.threads=1",
            "train.uniform_negatives=64",
            f'train.negatives="{negatives}"',
            "train.patience=100",
        ],
    )
    return config


@pytest.fixture(scope="module")
def trained():
    config = settings(epochs=5)
    data = load_dataset(config.data.dataset, None)
    split = split_for(config.data, data)
    seed_everything(0, 1)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model), levels=2, codewords=8)
    trainer = MFLITrainer(
        model, split, config.train, config.eval, MFLITrainConfig(quant_start=1, level_gap=2), progress=False
    )
    result = trainer.fit()
    return model, split, trainer, result


def test_levels_switch_on_after_the_delay_one_by_one(trained):
    model, _, trainer, result = trained
    assert trainer.activations == [{"epoch": 2, "level": 1}, {"epoch": 4, "level": 2}]
    assert int(model.active_levels) == 2
    assert all(np.isfinite(record["loss"]) for record in result.history if record["epoch"] > 0)
    assert codebook_array(model).shape == (2, 3, 8, 16)


def test_the_model_evaluates_like_a_two_tower_model_with_wider_vectors(trained):
    model, split, trainer, _ = trained
    assert model.item_vectors().shape == (300, 48)
    metrics = evaluate_model(model, split, "test", trainer.item_counts, ks=(10,)).metrics
    assert 0 <= metrics["recall@10"] <= 1


def test_facets_are_not_copies_of_one_another(trained):
    model, *_ = trained
    with torch.no_grad():
        facets = model.item_facets(torch.arange(300)).numpy()  # (N, F, d)

    # Compare how each facet ranks the catalogue around an item: the overlap of nearest neighbours.
    def neighbours(f):
        scores = facets[:, f] @ facets[:, f].T
        np.fill_diagonal(scores, -np.inf)
        return np.argsort(-scores, axis=1)[:, :10]

    lists = [neighbours(f) for f in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            shared = np.mean(
                [len(np.intersect1d(x, y)) / 10 for x, y in zip(lists[a], lists[b], strict=True)]
            )
            assert shared < 0.9, f"facets {a} and {b} share {shared:.2f} of their neighbours"


def test_the_trained_codebook_serves_the_models_vectors(trained):
    model, *_ = trained
    with torch.no_grad():
        items = model.item_vectors().numpy()
        queries = model.item_vectors(torch.arange(0, 300, 7)).numpy()
    index = MFLIIndex(items.shape[1], facets=3, levels=2, codebook=codebook_array(model))
    index.add(np.arange(300), items)
    exact = make_index("exact", items.shape[1])
    exact.add(np.arange(300), items)
    found = index.search(queries, 10, params={"leaves": 32}).ids
    truth = exact.search(queries, 10).ids
    recall = np.mean([len(np.intersect1d(f, t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.9


def test_full_softmax_is_refused_with_the_reason():
    config = settings(epochs=1, negatives="full")
    data = load_dataset(config.data.dataset, None)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model))
    with pytest.raises(RecIndexError, match="in_batch or mixed"):
        MFLITrainer(model, split_for(config.data, data), config.train, config.eval, progress=False)
    with pytest.raises(RecIndexError, match="facets"):
        MFLIModel(TwoTowerModel.for_data(data, dataclasses.replace(config.model)), facets=("colour",))


def test_codebook_only_gradient_leaves_the_towers_to_the_facet_loss():
    config = settings(epochs=1)
    data = load_dataset(config.data.dataset, None)
    split = split_for(config.data, data)
    seed_everything(0, 1)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model), levels=1, codewords=8)
    mfli = MFLITrainConfig(
        quant_start=0, level_gap=1, quant_gradient="codebook", fit_weight=0, overuse_weight=0
    )
    trainer = MFLITrainer(model, split, config.train, config.eval, mfli, progress=False)
    trainer.before_epoch(1)  # switches the level on
    examples = sequence_examples(split, model.shape.n_users, model.n_items, config.model.max_len)
    batch = next(iter(iterate_batches(examples, 64, np.random.default_rng(0))))
    frequency = copy.deepcopy(trainer.frequency)  # the logQ estimate moves with every batch
    model.zero_grad()
    torch.manual_seed(0)
    trainer._loss(batch).backward()
    with_quant = [p.grad.clone() for p in model.item_heads.parameters()]
    model.zero_grad()
    torch.manual_seed(0)
    trainer.frequency = frequency
    trainer.mfli = dataclasses.replace(mfli, quant_weight=0.0)
    trainer._loss(batch).backward()
    without = [p.grad.clone() for p in model.item_heads.parameters()]
    for a, b in zip(with_quant, without, strict=True):
        torch.testing.assert_close(a, b)
    assert model.codebook.grad is None or model.codebook.grad.abs().sum() == 0  # fit and quant off here
    with pytest.raises(RecIndexError, match="quant_gradient"):
        MFLITrainer(model, split, config.train, config.eval, MFLITrainConfig(quant_gradient="both"))


def test_a_warm_start_takes_the_towers_of_a_two_tower_bundle_of_the_same_split(tmp_path):
    from recindex.mfli.train import warm_start
    from recindex.pipelines import load_bundle
    from recindex.pipelines.experiment import run_experiment

    config = settings(epochs=1)
    result = run_experiment(config, tmp_path / "two-tower", progress=False)
    data = load_dataset(config.data.dataset, None)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model))
    start = load_bundle(result.bundle_path)
    warm_start(model, start, data, config.data)
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(model.base.state_dict()[name], value)
    other = dataclasses.replace(config.data, split="cold_item")
    with pytest.raises(RecIndexError, match="another split"):
        warm_start(model, start, data, other)


def test_without_a_delay_every_level_switches_on_at_the_first_epoch():
    config = settings(epochs=1)
    data = load_dataset(config.data.dataset, None)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model), levels=2, codewords=8)
    mfli = MFLITrainConfig(quant_start=0, level_gap=0)
    trainer = MFLITrainer(
        model, split_for(config.data, data), config.train, config.eval, mfli, progress=False
    )
    trainer.before_epoch(1)
    assert trainer.activations == [{"epoch": 1, "level": 1}, {"epoch": 1, "level": 2}]


def test_an_item_without_a_trained_id_is_scored_by_the_facets_it_has():
    config = settings(epochs=1)
    data = load_dataset(config.data.dataset, None)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model))
    mask = np.ones(data.n_items, bool)
    mask[:10] = False  # items 0-9 were never seen in training
    model.set_trained_items(mask)
    with torch.no_grad():
        facets = model.item_facets(torch.arange(20))  # (20, 3, d)
        vectors = model.item_vectors(torch.arange(20)).reshape(20, 3, -1)
        fresh = model.content_vectors([[1, 2], [3]]).reshape(2, 3, -1)
    id_facet = model.facets.index("id")
    others = [f for f in range(3) if f != id_facet]
    assert (vectors[:10, id_facet] == 0).all()
    torch.testing.assert_close(vectors[:10, others], 1.5 * facets[:10, others])  # F / facets present
    torch.testing.assert_close(vectors[10:], facets[10:])
    assert (fresh[:, id_facet] == 0).all() and torch.allclose(
        fresh[:, others].norm(dim=-1), torch.tensor(1.5)
    )


def test_facet_weights_come_from_the_config_and_must_fit_the_facets():
    from recindex.config import from_dict
    from recindex.mfli.train import mfli_train_config

    assert mfli_train_config(from_dict({"mfli": {"facet_weights": [1, 0.5, 2]}}).mfli).facet_weights == (
        1.0,
        0.5,
        2.0,
    )
    # the comma-separated form of older configs, and a word where a number belongs
    assert from_dict({"mfli": {"facet_weights": "1, 0.5,2"}}).mfli.facet_weights == (1.0, 0.5, 2.0)
    with pytest.raises(RecIndexError, match=r"facet_weights\[1\]: expected float, got 'heavy'"):
        from_dict({"mfli": {"facet_weights": "1,heavy"}})
    config = settings(epochs=1)
    data = load_dataset(config.data.dataset, None)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model))
    with pytest.raises(RecIndexError, match="2 facet weights for 3 facets"):
        MFLITrainer(
            model,
            split_for(config.data, data),
            config.train,
            config.eval,
            MFLITrainConfig(facet_weights=(1, 1)),
        )


def _one_step_trainer(dataset: str, max_len: int):
    config = load_config(
        None,
        [
            f'data.dataset="{dataset}"',
            "model.dim=16",
            f"model.max_len={max_len}",
            "model.id_dropout=0.2",
            "train.threads=1",
            "train.uniform_negatives=64",
        ],
    )
    data = load_dataset(config.data.dataset, None)
    split = split_for(config.data, data)
    seed_everything(0, 1)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model), levels=1, codewords=8)
    mfli = MFLITrainConfig(quant_start=0, level_gap=1, quant_gradient="codebook")
    trainer = MFLITrainer(model, split, config.train, config.eval, mfli, progress=False)
    examples = sequence_examples(split, model.shape.n_users, model.n_items, max_len)
    return trainer, examples


def test_each_candidate_item_is_scored_once_per_facet(monkeypatch):
    """A batch of long sequences repeats its positives many times; the candidates of every facet's
    softmax (and of its quantized twin) are distinct items, so the logits are at most (positions x
    pool) however often an item repeats, and a popular item is not counted once per occurrence in
    the denominator."""
    from recindex.mfli import train as mfli_train

    trainer, examples = _one_step_trainer(
        "synthetic:n_users=200,n_items=60,n_attributes=10,mean_length=30,min_length=10,seed=2", 30
    )
    trainer.before_epoch(1)  # switches the level on
    calls = []
    original = mfli_train.sampled_softmax_loss

    def recording(users, positive_ids, positive_vectors, candidate_ids, candidate_vectors, *rest, **options):
        calls.append((len(positive_ids), candidate_ids.clone(), candidate_vectors.shape[0]))
        return original(
            users, positive_ids, positive_vectors, candidate_ids, candidate_vectors, *rest, **options
        )

    monkeypatch.setattr(mfli_train, "sampled_softmax_loss", recording)
    batch = next(iter(iterate_batches(examples, 64, np.random.default_rng(0))))
    trainer._loss(batch)
    assert len(calls) == 2 * len(trainer.model.facets)  # every facet, and its reconstruction
    positions = calls[0][0]
    assert positions > 3 * len(trainer.pool)  # the batch does repeat its positives
    for _, ids, rows in calls:
        assert len(torch.unique(ids)) == len(ids) == rows <= len(trainer.pool)


def test_the_id_facet_is_not_touched_by_id_dropout():
    """ID dropout trains the joint facet's content-only path; the id facet of an item whose ID was
    dropped would be the head's bias, one stand-in shared by every dropped item in the batch."""
    trainer, _ = _one_step_trainer(DATASET, 10)
    model = trainer.model
    items = trainer.pool[:50]
    keep = torch.ones(model.n_items + 1, dtype=torch.bool)
    keep[items[::2]] = False
    id_facet, joint_facet = model.facets.index("id"), model.facets.index("joint")
    with torch.no_grad():
        dropped, kept = model.item_facets(items, keep), model.item_facets(items)
    torch.testing.assert_close(dropped[:, id_facet], kept[:, id_facet])
    assert not torch.allclose(dropped[::2, joint_facet], kept[::2, joint_facet])  # the joint facet drops it


def test_the_model_as_it_starts_is_epoch_0_and_kept_when_no_epoch_beats_it():
    """With nothing learned (lr 0) no epoch beats the start: it is kept, and its codebook is completed
    (the levels it lacked fitted by k-means) so that the model can be indexed."""
    config = settings(epochs=3)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, lr=0.0))
    data = load_dataset(config.data.dataset, None)
    split = split_for(config.data, data)
    seed_everything(0, 1)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model), levels=2, codewords=8)
    mfli = MFLITrainConfig(quant_start=1, level_gap=1)
    trainer = MFLITrainer(model, split, config.train, config.eval, mfli, keep_start=True, progress=False)
    result = trainer.fit()
    assert [int(r["epoch"]) for r in result.history] == [0, 1, 2, 3]
    start = result.history[0]["valid_recall@10"]
    assert result.best_epoch == 0 and result.best_valid["recall@10"] == start
    assert int(model.active_levels) == 2 and codebook_array(model).shape == (2, 3, 8, 16)
    assert not model.training


def test_a_run_too_short_to_keep_an_epoch_keeps_its_last_epoch_when_it_beats_the_start():
    """No epoch can be kept before the codebook's last level is on; the start is then weighed against
    the last epoch, which the trainer leaves in place, not against nothing."""
    dataset = "synthetic:n_users=400,n_items=300,n_attributes=20,mean_length=20,seed=3"
    config = load_config(
        None,
        [
            f'data.dataset="{dataset}"',
            "model.dim=16",
            "model.max_len=20",
            "train.epochs=3",
            "train.batch_size=64",
            "train.threads=1",
            "train.uniform_negatives=64",
            "train.lr=0.003",
        ],
    )
    data = load_dataset(config.data.dataset, None)
    seed_everything(0, 1)
    model = MFLIModel(TwoTowerModel.for_data(data, config.model), levels=2, codewords=8)
    mfli = MFLITrainConfig(quant_start=10)  # no level switches on within the run
    split = split_for(config.data, data)
    trainer = MFLITrainer(model, split, config.train, config.eval, mfli, keep_start=True, progress=False)
    result = trainer.fit()
    start, *epochs = [r["valid_recall@10"] for r in result.history]
    assert epochs[-1] > start  # from scratch, three epochs learn something
    with torch.no_grad():
        metrics = evaluate_model(model, trainer.split, "valid", trainer.item_counts, ks=(10,)).metrics
    assert metrics["recall@10"] == epochs[-1]
    assert int(model.active_levels) == 2  # completed by k-means, so the model can be indexed
