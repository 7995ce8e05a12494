"""Indexes stored inside a bundle, and the backend table with the families' learned indexes.

Layout: `BUNDLE/indexes/NAME/` holds the index files and a manifest that records the bundle id, the
spec, the build time and the search parameters. The bundle's own manifest is not rewritten (its
checksums cover the model); the index manifest checksums the index files. Loading refuses an index whose
bundle id differs from the bundle's, so a query encoder never meets an index built by another model.

Item attributes written with the index (for filters) come from the bundle's data: see
`recindex.index.item_attributes`.

Learned backends take material from the bundle they are built on (MFLI's codebook, URI's decoder and
codes, the items' query views for CI): the family table says which family's bundles give what.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recindex.bundle import Bundle
from recindex.errors import BundleError, InvalidRequest
from recindex.index.base import BaseIndex, check_metric, read_index_manifest
from recindex.index.factory import CORE_BACKENDS, Backend, check_options, key_values
from recindex.index.factory import load_index as load_with
from recindex.index.factory import make_index as make_with
from recindex.index.item_attributes import item_attributes
from recindex.mfli.index import MFLIIndex
from recindex.pipelines.families import family_of_manifest
from recindex.sci.index import CIIndex
from recindex.uri.index import URIIndex

INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _spec_maker(name: str, index_class: type[BaseIndex], keys: tuple[str, ...], words: tuple[str, ...]):
    """A learned backend whose spec carries its shape as `key=N` / `key=WORD` pairs."""

    def make(rest, dim, metric, search_params, options, backends) -> BaseIndex:
        shape = key_values(f"{name}:{rest}", rest, keys, words)
        check_options(index_class, name, {**shape, **options})
        return index_class(dim, metric, search_params=search_params, **{**shape, **options})

    return make


def _make_uri(rest, dim, metric, search_params, options, backends) -> BaseIndex:
    if rest:
        spec = f"uri:{rest}"
        raise InvalidRequest(f"{spec!r}: the uri backend takes no spec options (its shape is the model's)")
    return URIIndex(dim, metric, search_params=search_params, **options)


# Specs of the learned backends (the `--backend` of `recindex index build`):
#   mfli                       the multifaceted learnable index served by walking codes; its shape as
#   mfli:facets=3,levels=2,codewords=64   options (a trained codebook comes from an MFLI bundle);
#   mfli:storage=fp16,max_leaf=500        also the leaves' vector storage and the rebuild bounds
#   uri                        a URI model's decoder, beam search over its learned token tree and its
#                              ranker; its weights and codes come from the URI bundle
#   ci                         SCI's consistent index: lists by k-means in the query view, scores (exact,
#   ci:nlist=128,levels=2      or residual codes) in the item view; the items' query views and logged
#   ci:coarse=items+queries    queries come from the two-tower bundle; also codewords=N, assign=N,
#   ci:place=item              and place=query|item (which view picks an item's list)
BACKENDS: dict[str, Backend] = {
    **CORE_BACKENDS,
    "mfli": Backend(
        "mfli",
        lambda: MFLIIndex,
        _spec_maker(
            "mfli", MFLIIndex, ("facets", "levels", "codewords", "min_leaf", "max_leaf"), ("storage",)
        ),
    ),
    "uri": Backend("uri", lambda: URIIndex, _make_uri),
    "ci": Backend(
        "ci",
        lambda: CIIndex,
        _spec_maker("ci", CIIndex, ("nlist", "levels", "codewords", "assign", "seed"), ("coarse", "place")),
    ),
}
# Learned backends that cannot be built without their family's material, and the bundles that have it.
NEEDS_MATERIAL = {
    "ci": "two-tower bundles (plain, or trained with SymmAligner)",
    "uri": "URI bundles (model.kind = \"uri\")",
}


def make_index(spec: str, dim: int, metric: str = "ip", **kwargs) -> BaseIndex:
    """An empty index of any backend, the learned ones included (see `recindex.index.make_index`)."""
    return make_with(spec, dim, metric, backends=BACKENDS, **kwargs)


def load_index(path: str | Path) -> BaseIndex:
    """A saved index of any backend, the learned ones included."""
    return load_with(path, BACKENDS)


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
    backend = spec.partition(":")[0]
    if backend in ("milvus", "sharded") and "milvus" in spec:
        # One collection per bundle version; Milvus Lite data sits next to the index folder.
        options.setdefault("collection", "recindex_" + re.sub(r"[^A-Za-z0-9_]", "_", bundle.bundle_id))
        options.setdefault("uri", str(folder.parent / f"{name}.milvus.db"))
    material, search_defaults = bundle_material(bundle, spec, options)
    options = {**material, **options}
    search_params = {**search_defaults, **dict(search_params or {})}
    index = make_index(spec, embedding["dim"], metric, search_params=search_params or None, options=options)
    started = time.perf_counter()
    ids = np.arange(len(bundle.item_embeddings))
    index.add(ids, bundle.item_embeddings, attributes=item_attributes(bundle.data))
    seconds = time.perf_counter() - started
    index.save(folder, extra={"bundle_id": bundle.bundle_id, "spec": spec, "build_seconds": seconds})
    return folder, index, seconds


def bundle_material(bundle: Bundle, spec: str, options: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """(build options, default search parameters) a learned backend takes from this bundle."""
    backend = spec.partition(":")[0]
    family = family_of_manifest(bundle.manifest, bundle.path)
    provide = family.index_material.get(backend)
    if provide is not None:
        return provide(bundle, spec, options)
    if backend in NEEDS_MATERIAL:
        raise BundleError(f"{bundle.path}: the {backend} index is built from {NEEDS_MATERIAL[backend]}")
    return {}, {}


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
    return load_index(folder)
