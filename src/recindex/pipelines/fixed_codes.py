"""The fixed index a two-stage generative baseline learns (`uri.index` other than "learn"): a
semantic-id method over the encoders' item vectors, SCI's consistent-index codes, or the learned index
of another URI bundle. Wired here because it joins the URI family with SCI's index and with bundles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from recindex.bundle import Bundle
from recindex.config import ExperimentConfig
from recindex.data.interactions import Interactions
from recindex.errors import RecIndexError
from recindex.models.two_tower import TwoTowerModel
from recindex.quant.semantic_ids import METHODS, build_semantic_ids
from recindex.sci.semantic_ids import sci_semantic_ids
from recindex.uri.run import FixedCodes, learned_codes


def fixed_codes_for(
    config: ExperimentConfig, data: Interactions, load_bundle: Callable[[Path], Bundle]
) -> FixedCodes | None:
    """A function of the router towers giving every item's codes; None for URI's learned index."""
    uri, seed = config.uri, config.train.seed
    if uri.index == "learn":
        return None
    if uri.index == "sci":
        return lambda router: sci_semantic_ids(router, uri.k, uri.layers, seed=seed)
    if uri.index in METHODS:
        method, k, layers = uri.index, uri.k, uri.layers
        return lambda router: build_semantic_ids(_item_vectors(router), method, k, layers, seed=seed).codes
    path = Path(uri.index_bundle)
    if not uri.index_bundle or not path.is_dir():
        raise RecIndexError(
            f"uri.index_bundle: {uri.index_bundle or '(not set)'} is not the folder of a URI bundle "
            f"(uri.index = \"bundle\" learns the index of one; other choices: learn, sci, "
            f"{', '.join(METHODS)})"
        )
    return lambda router: learned_codes(load_bundle(path), data, config)


def _item_vectors(router: TwoTowerModel) -> np.ndarray:
    with torch.no_grad():
        return router.item_vectors().cpu().numpy()
