"""Indexes stored inside a bundle: built from its item embeddings, tied to its bundle id.

Layout: `BUNDLE/indexes/NAME/` holds the index files and a manifest that records the bundle id, the
spec, the build time and the search parameters. The bundle's own manifest is not rewritten (its
checksums cover the model); the index manifest checksums the index files. Loading refuses an index whose
bundle id differs from the bundle's, so a query encoder never meets an index built by another model.

Item attributes written with the index (for filters) come from the bundle's data: see
`recindex.data.item_attributes`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recindex.bundle import Bundle
from recindex.data.item_attributes import item_attributes
from recindex.errors import BundleError, InvalidRequest
from recindex.index.base import BaseIndex, check_metric, read_index_manifest
from recindex.index.factory import backend_class, make_index

INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec).strip("-")[:64]


def index_folder(bundle: Bundle, name: str) -> Path:
    if not INDEX_NAME.match(name):
        raise InvalidRequest(f"index name {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    return bundle.path / "indexes" / name


def build_bundle_index(
    bundle: Bundle,
    spec: str,
    name: str | None = None,
    *,
    metric: str | None = None,
    options: Mapping[str, Any] | None = None,
    search_params: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> tuple[Path, BaseIndex, float]:
    """Build `spec` over the bundle's item embeddings and store it; returns (folder, index, seconds)."""
    embedding = bundle.manifest["embedding"]
    metric = metric or embedding["metric"]
    check_metric(metric, embedding["metric"], embedding.get("normalized", False))
    name = name or default_name(spec)
    folder = index_folder(bundle, name)
    if folder.exists() and not overwrite:
        raise BundleError(f"{folder} exists; pass --overwrite to rebuild it, or choose another --name")
    options = dict(options or {})
    if spec.partition(":")[0] in ("milvus", "sharded") and "milvus" in spec:
        # One collection per bundle version; Milvus Lite data sits next to the index folder.
        options.setdefault("collection", "recindex_" + re.sub(r"[^A-Za-z0-9_]", "_", bundle.bundle_id))
        options.setdefault("uri", str(folder.parent / f"{name}.milvus.db"))
    if spec.partition(":")[0] == "mfli":
        options = {**mfli_options(bundle), **options}
    if spec.partition(":")[0] == "ci":
        with_queries = "coarse=items+queries" in spec or options.get("coarse") == "items+queries"
        options = {**ci_options(bundle, with_queries), **options}
    if spec.partition(":")[0] == "uri":
        options = {**uri_options(bundle), **options}
        search_params = {"beam": bundle.config.uri.beam, **dict(search_params or {})}
    index = make_index(spec, embedding["dim"], metric, search_params=search_params, options=options)
    started = time.perf_counter()
    ids = np.arange(len(bundle.item_embeddings))
    index.add(ids, bundle.item_embeddings, attributes=item_attributes(bundle.data))
    seconds = time.perf_counter() - started
    index.save(folder, extra={"bundle_id": bundle.bundle_id, "spec": spec, "build_seconds": seconds})
    return folder, index, seconds


def mfli_options(bundle: Bundle) -> dict[str, Any]:
    """An MFLI bundle's index walks the codebook trained with its embeddings (none for other bundles:
    the index then fits one by RQ-KMeans)."""
    if not hasattr(bundle.model, "codebook"):
        return {}
    from recindex.mfli.train import codebook_array

    codebook = codebook_array(bundle.model)
    if not len(codebook):
        raise BundleError(
            f"{bundle.path}: the MFLI codebook was never switched on (train for more than "
            "mfli.quant_start epochs)"
        )
    return {"codebook": codebook, "facets": codebook.shape[1], "levels": codebook.shape[0]}


def uri_options(bundle: Bundle) -> dict[str, Any]:
    """A URI bundle's decoder, token sizes and learned codes, for the `uri` index."""
    from recindex.generative.uri_model import URIModel

    model = bundle.model
    if not isinstance(model, URIModel):
        raise BundleError(f"{bundle.path}: the uri index serves URI bundles (trained with [uri] enabled)")
    if model.assigned_layers() < model.decoder.layers:
        raise BundleError(f"{bundle.path}: not every item has its codes; the URI training did not finish")
    return {
        "decoder": {name: value.numpy() for name, value in model.decoder.state_dict().items()},
        "token_sizes": list(model.decoder.sizes),
        "leaf_layers": bundle.config.uri.layers,
        "blocks": len(model.decoder.blocks),
        "heads": model.decoder.blocks[0].self_attn.num_heads,
        "codes": model.item_codes.numpy().copy(),
    }


def ci_options(bundle: Bundle, with_queries: bool = False) -> dict[str, Any]:
    """The query views of a two-tower bundle's items, for the `ci` index (SCI's consistent index reads
    both towers), and one logged query per training user when its lists cluster them too."""
    from recindex.experiment import split_for
    from recindex.models.two_tower import TwoTowerModel
    from recindex.sci.views import catalogue_query_views, training_queries

    if type(bundle.model) is not TwoTowerModel:
        raise BundleError(
            f"{bundle.path}: the ci index serves two-tower bundles (with or without [sci] training)"
        )
    options: dict[str, Any] = {
        "query_views": catalogue_query_views(bundle.model),
        "seed": bundle.config.train.seed,
    }
    if with_queries:
        options["logged_queries"] = training_queries(bundle.model, split_for(bundle.config, bundle.data))
    return options


def list_bundle_indexes(bundle: Bundle) -> list[dict]:
    root = bundle.path / "indexes"
    manifests = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / "manifest.json").is_file():
            manifests.append({"name": folder.name, **read_index_manifest(folder)})
    return manifests


def load_bundle_index(bundle: Bundle, name: str) -> BaseIndex:
    """The named index of this bundle, refusing one that was built for another bundle."""
    folder = index_folder(bundle, name)
    if not folder.is_dir():
        known = ", ".join(m["name"] for m in list_bundle_indexes(bundle)) or "none yet"
        raise BundleError(
            f"{bundle.path} has no index {name!r} (it has: {known}); "
            f"build one with: recindex index build {bundle.path} --backend SPEC --name {name}"
        )
    manifest = read_index_manifest(folder)
    if manifest.get("bundle_id") != bundle.bundle_id:
        raise BundleError(
            f"index {name!r} was built for bundle {manifest.get('bundle_id')!r}, not {bundle.bundle_id!r}: "
            "serving it with this model would mix model versions; rebuild it"
        )
    return backend_class(manifest["backend"]).from_manifest(folder, manifest)
