"""What the composition root hands a family's trainer: one run's config, data, split and towers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from recindex.bundle import Bundle
from recindex.config import ExperimentConfig
from recindex.data.interactions import Interactions
from recindex.data.splits import Split
from recindex.models.two_tower import TwoTowerModel
from recindex.train.checkpoint import Checkpoints
from recindex.train.distributed import SINGLE, Distributed
from recindex.train.loop import TrainResult
from recindex.train.shard_batches import ShardedExamples


@dataclass
class TrainRequest:
    config: ExperimentConfig
    data: Interactions
    split: Split | None  # None with user shards (`sharded`): each shard is split when it is read
    # The two-tower towers, made first after seeding, so every family's random draws start alike;
    # each family builds its model around them.
    base: TwoTowerModel
    # Reads the bundle the family's init_from setting names (None: not set). A function, so that the
    # family reads it where its runs always have: reading builds a model, which draws random numbers.
    load_start: Callable[[], Bundle] | None = None
    progress: bool = True
    log: Callable[[str], None] | None = None
    distributed: Distributed = SINGLE  # this process's rank under torchrun
    checkpoints: Checkpoints | None = None  # where checkpoints go, and whether the run resumes from one
    sharded: ShardedExamples | None = None  # batches drawn from user shards (data.shard_users)

    def trainer_options(self) -> dict:
        """The keyword arguments every `Trainer` of the run takes from the request."""
        return {
            "progress": self.progress,
            "log": self.log,
            "distributed": self.distributed,
            "checkpoints": self.checkpoints,
            **({"sharded": self.sharded} if self.sharded is not None else {}),
        }


@dataclass
class Trained:
    model: object  # a retrieval model: user_vectors, item_vectors, content_vectors
    training: TrainResult
    extra: dict  # what else the family records in the bundle's metrics (under its own name)
