"""The family table: for each model family, what it trains, how its bundles are read back, and which
learned indexes take material from its bundles. This is the one place that names the families;
`bundle.py`, `index/` and the layers below know none of them.

Adding a family: a package beside `mfli/`, `uri/`, `sci/` with its model, trainer and a `family.py`
(train, read_model, index options), one entry here, one `model.kind` value in `config/sections.py`, and its
tests (docs/architecture.md walks through it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recindex.bundle import Bundle, read_bundle
from recindex.config import MODEL_KINDS, ExperimentConfig
from recindex.errors import BundleError, RecIndexError
from recindex.mfli import family as mfli
from recindex.pipelines.fixed_codes import fixed_codes_for
from recindex.sci import family as sci
from recindex.train.request import Trained, TrainRequest
from recindex.two_tower import family as two_tower
from recindex.uri import family as uri
from recindex.uri import run as uri_run

# (bundle, spec, build options) -> the options a learned index needs from that bundle
IndexMaterial = Callable[[Bundle, str, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Family:
    kind: str  # the `model.kind` that selects it
    model_classes: tuple[str, ...]  # the manifest's model_class values it reads (older names too)
    train: Callable[[TrainRequest], Trained]
    read_model: Callable[[dict, ExperimentConfig, Path], torch.nn.Module]
    init_from: str | None = None  # the setting naming a two-tower bundle to start from, if any
    index_material: Mapping[str, IndexMaterial] = field(default_factory=dict)  # backend -> material


def _train_uri(request: TrainRequest) -> Trained:
    # The two-stage baselines' fixed index comes from here (another family's codes, or another
    # bundle's), so the URI package depends on no other family.
    return uri_run.train(request, fixed_codes_for(request.config, request.data, load_bundle))


FAMILIES: dict[str, Family] = {
    "two_tower": Family(
        "two_tower",
        ("recindex.models.two_tower.TwoTowerModel",),
        two_tower.train,
        two_tower.read_model,
        index_material={"ci": sci.ci_options},
    ),
    "mfli": Family(
        "mfli",
        ("recindex.mfli.model.MFLIModel",),
        mfli.train,
        mfli.read_model,
        init_from="mfli.init_from",
        index_material={"mfli": mfli.mfli_options},
    ),
    "uri": Family(
        "uri",
        ("recindex.uri.model.URIModel", "recindex.uri.model.URIModel"),
        _train_uri,
        uri.read_model,
        init_from="uri.init_from",
        index_material={"uri": uri.uri_options},
    ),
    # SymmAligner trains the plain two-tower model: its bundles are two-tower bundles.
    "sci": Family("sci", (), sci.train, two_tower.read_model),
}
assert set(FAMILIES) == set(MODEL_KINDS), "every model.kind has one family entry"


def family_of_config(config: ExperimentConfig) -> Family:
    return FAMILIES[config.model.kind]


def family_of_manifest(manifest: dict, path: Path) -> Family:
    for family in FAMILIES.values():
        if manifest["model_class"] in family.model_classes:
            return family
    raise BundleError(f"{path}: unknown model class {manifest['model_class']!r}")


def read_model(manifest: dict, config: ExperimentConfig, path: Path) -> torch.nn.Module:
    return family_of_manifest(manifest, path).read_model(manifest, config, path)


def load_bundle(path: str | Path) -> Bundle:
    """A bundle of any family, every checksum verified before anything is deserialised."""
    return read_bundle(path, read_model)


def start_loader(config: ExperimentConfig, family: Family) -> Callable[[], Bundle] | None:
    """A reader of the two-tower bundle a family's `init_from` setting names (None when it is not
    set); a path that is not there is refused now, before any training time is spent."""
    if family.init_from is None:
        return None
    section, key = family.init_from.split(".")
    path = getattr(getattr(config, section), key)
    if not path:
        return None
    fix = f"train the two-tower bundle first or pass --set {family.init_from}=PATH"
    if not Path(path).exists():
        raise RecIndexError(f"{family.init_from}: {path} does not exist; {fix}")
    if not (Path(path) / "manifest.json").is_file():
        raise RecIndexError(f"{family.init_from}: {path} is not a bundle (it has no manifest.json); {fix}")

    def load() -> Bundle:
        try:
            return load_bundle(path)
        except BundleError as error:
            raise BundleError(f"{family.init_from}: {error}") from None

    return load
