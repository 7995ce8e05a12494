"""What the composition root needs of MFLI: train the facets and the codebook around the two-tower
towers (warm-started from a two-tower bundle when `mfli.init_from` is set), read a model back, and the
trained codebook for the `mfli` index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recindex.bundle import Bundle
from recindex.config import ExperimentConfig
from recindex.errors import BundleError
from recindex.mfli.model import MFLIModel
from recindex.mfli.train import MFLITrainer, codebook_array, mfli_model, mfli_train_config, warm_start
from recindex.models.two_tower import TwoTowerModel, shape_from_manifest
from recindex.train.request import Trained, TrainRequest


def train(request: TrainRequest) -> Trained:
    """The facets and codebook around the towers, which start from `mfli.init_from` when it is set."""
    config = request.config
    model = mfli_model(request.base, config.mfli)
    if request.load_start is not None:
        warm_start(model, request.load_start(), request.data, config.data, request.log)
    trainer = MFLITrainer(
        model,
        request.split,
        config.train,
        config.eval,
        mfli_train_config(config.mfli),
        keep_start=request.load_start is not None,
        **request.trainer_options(),
    )
    return Trained(model, trainer.fit(), {})


def read_model(manifest: dict, config: ExperimentConfig, path: Path) -> MFLIModel:
    shape, _ = shape_from_manifest(manifest, str(path))
    return mfli_model(TwoTowerModel(shape, config.model), config.mfli)


def mfli_options(bundle: Bundle, spec: str, options: dict[str, Any]) -> tuple[dict, dict]:
    """An MFLI bundle's index walks the codebook trained with its embeddings: (options, no search
    parameters)."""
    codebook = codebook_array(bundle.model)
    if not len(codebook):
        raise BundleError(
            f"{bundle.path}: the MFLI codebook was never switched on (train for more than "
            "mfli.quant_start epochs)"
        )
    return {"codebook": codebook, "facets": codebook.shape[1], "levels": codebook.shape[0]}, {}
