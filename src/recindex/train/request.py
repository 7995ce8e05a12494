"""What the composition root hands a family's trainer: one run's config, data, split and towers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from recindex.bundle import Bundle
from recindex.config import ExperimentConfig
from recindex.data.interactions import Interactions
from recindex.data.splits import Split
from recindex.models.two_tower import TwoTowerModel
from recindex.train.loop import TrainResult


@dataclass
class TrainRequest:
    config: ExperimentConfig
    data: Interactions
    split: Split
    # The two-tower towers, made first after seeding, so every family's random draws start alike;
    # each family builds its model around them.
    base: TwoTowerModel
    # Reads the bundle the family's init_from setting names (None: not set). A function, so that the
    # family reads it where its runs always have: reading builds a model, which draws random numbers.
    load_start: Callable[[], Bundle] | None = None
    progress: bool = True
    log: Callable[[str], None] | None = None


@dataclass
class Trained:
    model: object  # a retrieval model: user_vectors, item_vectors, content_vectors
    training: TrainResult
    extra: dict  # what else the family records in the bundle's metrics (under its own name)
