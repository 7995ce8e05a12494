"""Start a model's towers from a trained two-tower bundle of the same data and split.

The learnable indexes (MFLI, URI) begin from the embeddings a two-tower run already learned: trained
once, shared by every run that starts from it. Refused when the bundle was trained on other
interactions, on another split (its towers would have seen this run's validation or test targets), or
with another model shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from recindex.bundle import Bundle
from recindex.errors import RecIndexError
from recindex.models.two_tower import TwoTowerModel


def load_towers(
    target: TwoTowerModel, bundle: Bundle, data, data_config, log: Callable[[str], None] | None = None
) -> None:
    """Copy a two-tower bundle's towers into `target` (the composition root reads the bundle)."""
    bundle_path = bundle.path
    if type(bundle.model) is not TwoTowerModel:
        raise RecIndexError(
            f"{bundle_path}: init_from takes a two-tower bundle, not a {type(bundle.model).__name__} one"
        )
    if bundle.data.fingerprint() != data.fingerprint():
        raise RecIndexError(f"{bundle_path}: trained on other interactions than this run's")
    theirs, ours = (
        dataclasses.replace(bundle.config.data, data_dir=None),
        dataclasses.replace(data_config, data_dir=None),
    )
    if theirs != ours:
        raise RecIndexError(f"{bundle_path}: trained on another split ({theirs}) than this run's ({ours})")
    try:
        target.load_state_dict(bundle.model.state_dict(), strict=True)
    except RuntimeError as error:
        raise RecIndexError(f"{bundle_path}: its towers do not fit this model ({error})") from None
    if log is not None:
        log(f"towers start from {bundle_path} ({bundle.bundle_id})")
