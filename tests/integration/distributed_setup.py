"""The tiny two-tower training that the data-parallel tests run in one process and in two."""

from __future__ import annotations

from recindex.config import EvalConfig, ModelConfig, TrainConfig
from recindex.data.splits import leave_one_out
from recindex.data.synthetic import SyntheticConfig, generate
from recindex.models.two_tower import TwoTowerModel
from recindex.train.distributed import SINGLE, Distributed
from recindex.train.loop import Trainer, TrainResult, seed_everything

PER_RANK_BATCH = 32  # two ranks of 32 users: the global batch of one process with 64


def train_tiny(batch_size: int, gather: bool, context: Distributed = SINGLE) -> tuple[Trainer, TrainResult]:
    data = generate(SyntheticConfig(n_users=300, n_items=120, n_clusters=6, n_attributes=20, seed=1))
    split = leave_one_out(data)
    seed_everything(0, 1)
    model = TwoTowerModel.for_data(data, ModelConfig(dim=16, max_len=10))
    config = TrainConfig(
        epochs=3,
        batch_size=batch_size,
        negatives="mixed",
        uniform_negatives=16,
        gather_negatives=gather,
        patience=10,
        threads=1,
        device="cpu",
    )
    trainer = Trainer(model, split, config, EvalConfig(ks=(10,)), progress=False, distributed=context)
    return trainer, trainer.fit()
