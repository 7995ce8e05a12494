"""Where an index's vectors come from: the bundle's own `item_embeddings.npy`, or an export of
`recindex embed` (`pipelines.embedding_shards`), read through memory maps and added in batches.

An export is used only with the bundle that wrote it (the ids must match: a model is never served
against another model's vectors), and holds items of that bundle's catalogue only: the index's ids
are the bundle's item numbers, which the service maps back to item ids. The first batch is large
(`ADD_ROWS`) because partitioned indexes (FAISS IVF, the learned ones) learn their layout on their
first add.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from recindex.bundle import Bundle
from recindex.errors import BundleError
from recindex.index.attribute_values import ValueLists
from recindex.index.item_attributes import item_attributes
from recindex.pipelines.embedding_shards import Export, open_export

ADD_ROWS = 1_000_000

Batch = tuple[np.ndarray, np.ndarray, dict[str, Sequence]]  # (ids, vectors, attributes)


def index_vectors(
    bundle: Bundle, embeddings: Path | None = None, add_rows: int = ADD_ROWS
) -> Iterator[Batch]:
    """(ids, vectors, attributes) batches for `index.add`; an export is checked before anything is read."""
    attributes = item_attributes(bundle.data)
    if embeddings is None:
        return iter([(np.arange(len(bundle.item_embeddings)), bundle.item_embeddings, attributes)])
    export = open_export(Path(embeddings))
    _check(bundle, export)
    return _export_batches(bundle, export, attributes, add_rows)


def _check(bundle: Bundle, export: Export) -> None:
    if export.bundle_id != bundle.bundle_id:
        raise BundleError(
            f"{export.folder} holds vectors of bundle {export.bundle_id!r}, not of {bundle.bundle_id!r}: "
            "serving a model against another model's vectors would mix model versions; "
            f"run 'recindex embed {bundle.path} ...' for this bundle"
        )
    embedding = bundle.manifest["embedding"]
    if export.dim != embedding["dim"] or export.manifest["metric"] != embedding["metric"]:
        raise BundleError(
            f"{export.folder}: vectors of dim {export.dim} ({export.manifest['metric']}), the bundle's are "
            f"of dim {embedding['dim']} ({embedding['metric']})"
        )
    if export.manifest.get("cold", 0):
        raise BundleError(
            f"{export.folder}: {export.manifest['cold']:,} of its {export.count:,} items are not in the "
            f"catalogue of {bundle.bundle_id} (cold items, encoded from their features); an index stored in "
            "a bundle holds the bundle's items: export those, and add new items to a running service "
            "(PUT /v1/items) by content or by vector"
        )


def _export_batches(bundle: Bundle, export: Export, attributes: dict, add_rows: int) -> Iterator[Batch]:
    seen = np.zeros(bundle.data.n_items, bool)
    for ids, vectors in export.batches(add_rows):
        if seen[ids].any() or len(np.unique(ids)) != len(ids):
            repeated = bundle.data.item_ids[ids[seen[ids]][0] if seen[ids].any() else ids[0]]
            raise BundleError(f"{export.folder}: item {repeated!r} appears more than once; one row per item")
        seen[ids] = True
        yield ids, vectors, {name: _take(column, ids) for name, column in attributes.items()}


def _take(column: Sequence, ids: np.ndarray) -> Sequence:
    if isinstance(column, ValueLists):
        return column.take(ids)
    return [column[i] for i in ids.tolist()]
