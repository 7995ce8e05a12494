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
    target: TwoTowerModel,
    bundle: Bundle,
    data,
    data_config,
    log: Callable[[str], None] | None = None,
    *,
    setting: str = "init_from",
) -> None:
    """Copy the towers of a two-tower bundle (read by the composition root) into `target`. `setting`
    names the config key the bundle came from (e.g. `mfli.init_from`), so every error says what to
    change."""
    bundle_path = bundle.path
    if type(bundle.model) is not TwoTowerModel:
        raise RecIndexError(
            f"{setting}: {bundle_path} is a {type(bundle.model).__name__} bundle; "
            "it must be a two-tower bundle"
        )
    if bundle.data.fingerprint() != data.fingerprint():
        raise RecIndexError(f"{setting}: {bundle_path} was trained on other interactions than this run's")
    theirs, ours = (
        dataclasses.replace(bundle.config.data, data_dir=None),
        dataclasses.replace(data_config, data_dir=None),
    )
    if theirs != ours:
        raise RecIndexError(
            f"{setting}: {bundle_path} was trained on another split ({theirs}) than this run's ({ours})"
        )
    try:
        target.load_state_dict(bundle.model.state_dict(), strict=True)
    except RuntimeError as error:
        raise RecIndexError(
            f"{setting}: the towers of {bundle_path} do not fit this model; [model] must match the "
            f"bundle's ({error})"
        ) from None
    if log is not None:
        log(f"towers start from {bundle_path} ({bundle.bundle_id})")
