import numpy as np
import pytest

from recindex.config import EvalConfig, ModelConfig, TrainConfig
from recindex.data.splits import leave_one_out
from recindex.eval.evaluate import evaluate_model
from recindex.models.two_tower import TwoTowerModel
from recindex.train.loop import Trainer, seed_everything


def _train(data, negatives, epochs=10, hard=0, encoder="sasrec", seed=0):
    split = leave_one_out(data)
    seed_everything(seed, 1)
    model = TwoTowerModel.for_data(data, ModelConfig(encoder=encoder, dim=32, max_len=20, dropout=0.1))
    config = TrainConfig(
        epochs=epochs,
        batch_size=64,
        lr=3e-3,
        negatives=negatives,
        uniform_negatives=64,
        hard_negatives=hard,
        hard_negative_every=2,
        patience=50,
        seed=seed,
        threads=1,
    )
    result = Trainer(model, split, config, EvalConfig(), progress=False).fit()
    return model, split, result


@pytest.mark.parametrize("negatives", ["in_batch", "mixed", "full"])
def test_loss_falls_and_model_beats_chance(tiny_synthetic, negatives):
    model, split, result = _train(tiny_synthetic, negatives)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0] * 0.95
    counts = np.bincount(split.train_items, minlength=model.n_items)
    recall = evaluate_model(model, split, "valid", counts, ks=(10,)).metrics["recall@10"]
    assert recall > 2 * 10 / model.n_items  # well above random ranking


def test_hard_negative_mining_runs_and_training_stays_finite(tiny_synthetic):
    _, _, result = _train(tiny_synthetic, "mixed", epochs=4, hard=3, encoder="mean")
    assert all(np.isfinite(r["loss"]) for r in result.history)


def test_same_seed_repeats_to_four_decimals(tiny_synthetic):
    _, _, a = _train(tiny_synthetic, "mixed", epochs=2, seed=5)
    _, _, b = _train(tiny_synthetic, "mixed", epochs=2, seed=5)
    assert round(a.best_valid["recall@10"], 4) == round(b.best_valid["recall@10"], 4)
    assert [round(r["loss"], 4) for r in a.history] == [round(r["loss"], 4) for r in b.history]


def test_negatives_and_loss_are_strategies_the_trainer_is_handed(tiny_synthetic):
    from recindex.train.negatives import InBatchNegatives, InfoNCE, TripletHinge

    def history(train_config, **strategies):
        split = leave_one_out(tiny_synthetic)
        seed_everything(0, 1)
        model = TwoTowerModel.for_data(tiny_synthetic, ModelConfig(dim=16, max_len=10))
        trainer = Trainer(model, split, train_config, EvalConfig(ks=(10,)), progress=False, **strategies)
        return [round(r["loss"], 6) for r in trainer.fit().history]

    base = dict(epochs=2, batch_size=64, threads=1, seed=0)
    # handing the strategy a config describes gives that config's run, draw for draw
    by_config = history(TrainConfig(negatives="in_batch", **base))
    handed = history(TrainConfig(negatives="mixed", **base), negatives=InBatchNegatives(), loss=InfoNCE(0.05))
    assert handed == by_config
    hinge = history(TrainConfig(negatives="in_batch", loss="hinge", margin=0.3, **base))
    assert history(TrainConfig(negatives="in_batch", **base), loss=TripletHinge(0.3)) == hinge
    assert hinge != by_config
