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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from recindex.bundle import Bundle
from recindex.config import IndexConfig
from recindex.errors import BundleError, InvalidRequest
from recindex.index.base import BaseIndex, check_metric, read_index_manifest
from recindex.index.factory import CORE_BACKENDS, Backend, spec_table
from recindex.index.factory import load_index as load_with
from recindex.index.factory import make_index as make_with
from recindex.index.item_attributes import item_attributes  # noqa: F401 (recindex.pipelines exports it)
from recindex.index.learned.fast_scan import CODE_DIMS
from recindex.index.specs import IndexSpec, MilvusSpec, check_index_config, parse_spec, spec_of_config
from recindex.mfli.index import MFLIIndex
from recindex.pipelines.families import family_of_manifest
from recindex.pipelines.index_vectors import index_vectors
from recindex.pipelines.self_check import (
    CHECK_QUERIES,
    WARN_RECALL,
    IndexCheckFailed,
    SelfCheck,
    advice,
    check_queries,
    run_check,
    suggest,
)
from recindex.sci.index import CHECKED_AGREEMENT, CIIndex
from recindex.uri.index import URIIndex

INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# Specs of the learned backends (the `--backend` of `recindex index build`, or `[index.NAME]` tables):
#   mfli                       the multifaceted learnable index served by walking codes; its shape as
#   mfli:facets=3,levels=2,codewords=64   key=value pairs (a trained codebook comes from an MFLI bundle);
#   mfli:storage=fp16,max_leaf=500        also the leaves' vector storage and the rebuild bounds
#   uri                        a URI model's decoder, beam search over its learned token tree and its
#   uri:compress=pq4           ranker; its weights and codes come from the URI bundle (the leaves as
#                              4-bit codes too, rescored exactly: the only settings)
#   ci                         SCI's consistent index: lists by k-means in the query view, scores (exact,
#   ci:nlist=128,levels=2      or residual codes) in the item view; the items' query views and logged
#   ci:coarse=items+queries    queries come from the two-tower bundle; the build refuses towers whose
#   ci:min_agreement=0         two views of an item disagree (min_agreement=0: build anyway)
@dataclass(frozen=True)
class MFLISpec(IndexSpec):
    NAME: ClassVar[str] = "mfli"
    facets: int = 1  # an MFLI bundle's codebook sets facets and levels
    levels: int = 2
    codewords: int = 16  # per level and facet
    min_leaf: int | None = None  # leaves below this merge, above max_leaf split (default: from the size)
    max_leaf: int | None = None
    storage: Literal["flat", "fp16", "pq4"] = "flat"  # the leaves' vectors or codes (mfli.lists.STORAGES)
    code_dims: int = CODE_DIMS  # dimensions per 4-bit code with storage pq4 (fast_scan.subquantizers)
    seed: int = 0


@dataclass(frozen=True)
class URISpec(IndexSpec):
    NAME: ClassVar[str] = "uri"  # its shape is the model's; only how its leaves are held is a setting
    compress: Literal["none", "pq4"] = "none"  # the leaves also held as 4-bit fast-scan codes (uri.index)
    code_dims: int = CODE_DIMS  # dimensions per 4-bit code with compress pq4 (fast_scan.subquantizers)


@dataclass(frozen=True)
class CISpec(IndexSpec):
    NAME: ClassVar[str] = "ci"
    nlist: int = 0  # coarse lists (0: about sqrt(items))
    levels: int = 2  # residual code levels of the fine scores (0: exact scores)
    codewords: int = 256  # per level
    assign: int = 1  # lists each item is placed in
    coarse: Literal["items", "items+queries"] = "items"  # what the lists' k-means clusters (sci.index.COARSE)
    place: Literal["query", "item"] = "query"  # which view picks an item's list (sci.index.PLACE)
    # least mean cos(f_q(I), f_i(I)) of the items the build places by their query views; below it the
    # build refuses (towers whose lists would miss what queries score); 0: build anyway
    min_agreement: float = CHECKED_AGREEMENT
    compress: Literal["none", "pq4"] = "none"  # the lists also held as 4-bit fast-scan codes (sci.index)
    code_dims: int = CODE_DIMS  # dimensions per 4-bit code with compress pq4 (fast_scan.subquantizers)
    seed: int = 0


BACKENDS: dict[str, Backend] = {
    **CORE_BACKENDS,
    "mfli": Backend("mfli", MFLISpec, lambda: MFLIIndex, material=("codebook",)),
    "uri": Backend(
        "uri",
        URISpec,
        lambda: URIIndex,
        material=("decoder", "token_sizes", "leaf_layers", "blocks", "heads", "codes"),
    ),
    "ci": Backend("ci", CISpec, lambda: CIIndex, material=("query_views", "logged_queries")),
}
SPECS = spec_table(BACKENDS)
# Learned backends that cannot be built without their family's material, and the bundles that have it.
NEEDS_MATERIAL = {
    "ci": "two-tower bundles (plain, or trained with SymmAligner)",
    "uri": 'URI bundles (model.kind = "uri")',
}


def check_index(section: IndexConfig, where: str) -> IndexConfig:
    """The run config's [index] section typed by the backends' specs (`load_config(check_index=...)`)."""
    return check_index_config(section, where, SPECS)


def config_spec(section: IndexConfig) -> IndexSpec | None:
    """The spec a bundle's [index] section asks for (None: none)."""
    return spec_of_config(section, SPECS)


def make_index(spec: str | IndexSpec, dim: int, metric: str = "ip", **kwargs) -> BaseIndex:
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


@dataclass(frozen=True)
class CheckSettings:
    """The check every build makes (`recindex.pipelines.self_check`): `queries` (0: none), the recall@100
    below which it warns and sweeps for a better parameter, and the one below which the build fails
    (nothing is stored)."""

    queries: int = CHECK_QUERIES
    warn_recall: float = WARN_RECALL
    min_recall: float | None = None

    @classmethod
    def of(cls, section: IndexConfig, **overrides: Any) -> CheckSettings:
        """The settings of a bundle config's [index] section, with the caller's (not None) on top."""
        given = {k: v for k, v in overrides.items() if v is not None}
        base = {"queries": section.check_queries, "warn_recall": section.warn_recall}
        return cls(**{**base, "min_recall": section.min_recall or None, **given})


class BuiltIndex(NamedTuple):
    folder: Path
    index: BaseIndex
    seconds: float  # adding the items
    check: SelfCheck | None  # None when the build was asked not to check


def build_bundle_index(
    bundle: Bundle,
    spec: str | IndexSpec,
    name: str | None = None,
    *,
    metric: str | None = None,
    options: Mapping[str, Any] | None = None,
    search_params: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    check: CheckSettings = CheckSettings(),
    embeddings: Path | None = None,
) -> BuiltIndex:
    """Build `spec` over the bundle's item embeddings, or over the vectors `recindex embed` exported to
    the folder `embeddings` (`pipelines.index_vectors`), check it against exact search, and store it.
    The manifest keeps the spec string as given (a typed spec: the string it writes as) and the check's
    figures; a check below `check.min_recall` raises IndexCheckFailed and stores nothing."""
    parsed = spec if isinstance(spec, IndexSpec) else parse_spec(spec, SPECS)
    text = spec if isinstance(spec, str) else parsed.text()
    embedding = bundle.manifest["embedding"]
    metric = metric or embedding["metric"]
    check_metric(metric, embedding["metric"], embedding.get("normalized", False))
    name = name or default_name(text)
    folder = index_folder(bundle, name)
    if folder.exists() and not overwrite:
        raise BundleError(f"{folder} exists; pass --overwrite to rebuild it, or choose another --name")
    options = dict(options or {})
    if parsed.NAME in ("milvus", "sharded") and "milvus" in text:
        # One collection per bundle version; Milvus Lite data sits next to the index folder.
        lite = {
            "collection": "recindex_" + re.sub(r"[^A-Za-z0-9_]", "_", bundle.bundle_id),
            "uri": str(folder.parent / f"{name}.milvus.db"),
        }
        for key, value in lite.items():
            if key not in options and not _set_in_spec(parsed, key):
                options[key] = value
    vectors = index_vectors(bundle, embeddings)  # an export is checked here, before any work
    material, search_defaults = bundle_material(bundle, text, options)
    options = {**material, **options}
    search_params = {**search_defaults, **dict(search_params or {})}
    index = make_index(parsed, embedding["dim"], metric, search_params=search_params or None, options=options)
    started = time.perf_counter()
    added = []
    for ids, batch, attributes in vectors:
        index.add(ids, batch, attributes=attributes)
        added.append(ids)
    seconds = time.perf_counter() - started
    checked = self_check(bundle, index, check, np.concatenate(added) if added else np.zeros(0, np.int64))
    extra = {"bundle_id": bundle.bundle_id, "spec": text, "build_seconds": seconds}
    index.save(folder, extra={**extra, "self_check": checked.to_dict()} if checked else extra)
    return BuiltIndex(folder, index, seconds, checked)


def self_check(
    bundle: Bundle, index: BaseIndex, settings: CheckSettings, ids: np.ndarray
) -> SelfCheck | None:
    """The build's check of the items `ids` it added (the bundle's item numbers; exact search over the
    bundle's vectors of those items is the reference); below the warning threshold with the sweep's
    suggestion, below the minimum an IndexCheckFailed that says what would reach it."""
    if settings.queries <= 0 or not len(ids):
        return None
    queries = check_queries(bundle, settings.queries)
    whole = len(ids) == len(bundle.item_embeddings) and (ids == np.arange(len(ids))).all()
    items = (bundle.item_embeddings, None) if whole else (bundle.item_embeddings[ids], ids)
    checked = run_check(index, items[0], queries, item_ids=items[1])
    floor = max(settings.warn_recall, settings.min_recall or 0.0)
    if checked.recall_at_k < floor:
        found = suggest(index, items[0], queries, floor, item_ids=items[1])
        checked = SelfCheck(**{**checked.to_dict(), "suggestion": found})
    if settings.min_recall is not None and checked.recall_at_k < settings.min_recall:
        raise IndexCheckFailed(f"{index.backend} index not stored: " + advice(checked, settings.min_recall))
    return checked


def _set_in_spec(spec: IndexSpec, key: str) -> bool:
    """Whether a Milvus spec sets `key` itself (a config table's uri), so a bundle's default yields."""
    return isinstance(spec, MilvusSpec) and getattr(spec, key) != getattr(MilvusSpec(), key)


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
