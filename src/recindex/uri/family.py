"""What the composition root needs of URI: read a model back, and the decoder, token sizes and learned
codes for the `uri` index. Training is `uri.run.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recindex.bundle import Bundle
from recindex.config import ExperimentConfig
from recindex.errors import BundleError
from recindex.models.two_tower import TwoTowerModel, shape_from_manifest
from recindex.uri.model import URIModel, uri_model


def read_model(manifest: dict, config: ExperimentConfig, path: Path) -> URIModel:
    shape, added = shape_from_manifest(manifest, str(path), extra=("token_sizes",))
    token_sizes = added["token_sizes"]
    if not token_sizes or not all(isinstance(s, int) and s > 0 for s in token_sizes):
        raise BundleError(f"{path}/manifest.json: a URI bundle's model_shape needs its token_sizes")
    return uri_model(TwoTowerModel(shape, config.model), config.uri, token_sizes)


def uri_options(bundle: Bundle, spec: str, options: dict[str, Any]) -> tuple[dict, dict]:
    """A URI bundle's decoder, token sizes and learned codes, for the `uri` index, and the beam it was
    trained to serve with: (options, search parameters)."""
    model = bundle.model
    if model.assigned_layers() < model.decoder.layers:
        raise BundleError(f"{bundle.path}: not every item has its codes; the URI training did not finish")
    return {
        "decoder": {name: value.numpy() for name, value in model.decoder.state_dict().items()},
        "token_sizes": list(model.decoder.sizes),
        "leaf_layers": bundle.config.uri.layers,
        "blocks": len(model.decoder.blocks),
        "heads": model.decoder.blocks[0].self_attn.num_heads,
        "codes": model.item_codes.numpy().copy(),
    }, {"beam": bundle.config.uri.beam}
