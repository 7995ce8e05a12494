"""What the composition root needs of the two-tower family: train a model, read one back."""

from __future__ import annotations

from pathlib import Path

from recindex.config import ExperimentConfig
from recindex.models.two_tower import TwoTowerModel, shape_from_manifest
from recindex.train.loop import Trainer
from recindex.train.request import Trained, TrainRequest


def train(request: TrainRequest) -> Trained:
    """The towers trained by the two-tower recipe."""
    config = request.config
    trainer = Trainer(request.base, request.split, config.train, config.eval, **request.trainer_options())
    return Trained(request.base, trainer.fit(), {})


def read_model(manifest: dict, config: ExperimentConfig, path: Path) -> TwoTowerModel:
    shape, _ = shape_from_manifest(manifest, str(path))
    return TwoTowerModel(shape, config.model)
