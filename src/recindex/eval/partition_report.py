"""How an index partitions the catalogue: bucket sizes, codeword use and APE, for `recindex index quality`.

Partitions come from the indexes that have one: MFLI (one per facet, named as the bundle's
`mfli.facets` names it: its leaves), URI (one per layer
of its token tree; the last is the leaves, where items that share a full code are counted as
collisions), CI (its coarse lists, and the leaves of its full coarse + fine codes) and FAISS IVF (its
lists). APE is measured with the users' training items as each query's
positives (see eval.ape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recindex.bundle import Bundle
from recindex.data.splits import split_for
from recindex.errors import InvalidRequest
from recindex.eval.ape import average_partition_entropy, bucket_report
from recindex.index.base import BaseIndex


def facet_names(bundle: Bundle, index: BaseIndex) -> list[str]:
    """The names of an MFLI index's facets (joint, id, content, ...) from its bundle's `mfli.facets`,
    or their numbers where the bundle does not name as many."""
    count = getattr(index, "facets", 0)
    names = list(bundle.config.mfli.facets)
    return names if len(names) == count else [str(f) for f in range(count)]


def partitions_of(index: BaseIndex, facets: list[str] | None = None) -> dict[str, np.ndarray]:
    """name -> bucket of each item id (items 0..n-1, -1 where absent), for the indexes that partition.
    `facets` names an MFLI index's facets (default: their numbers)."""
    from recindex.index.faiss_index import FaissIndex
    from recindex.mfli.index import MFLIIndex
    from recindex.sci.index import CIIndex
    from recindex.uri.index import URIIndex

    if isinstance(index, CIIndex):
        ids = index.table.ids[index.table.live_slots()]
        codes = index.semantic_ids(ids)
        bucket_of = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, np.int64)
        partitions = {}
        bucket_of[ids] = codes[:, 0]
        partitions["coarse lists"] = bucket_of.copy()
        if index.levels:
            number = codes[:, 0].astype(np.int64)
            for level in range(index.levels):
                number = number * index.codebook.shape[2] + codes[:, 1 + level]
            # Numbered by the codes that occur: the code space (nlist x codewords^levels) is mostly
            # unused by design, and "empty" counts only mean something over the numbers in use.
            bucket_of[ids] = np.unique(number, return_inverse=True)[1]
            partitions["leaves"] = bucket_of
        return partitions
    if isinstance(index, MFLIIndex):
        names = facets or [str(f) for f in range(index.facets)]
        return {f"{names[f]} facet": index.leaves_of_items(f) for f in range(index.facets)}
    if isinstance(index, URIIndex):
        ids, codes = index.codes_of_items()
        partitions = {}
        number = np.zeros(len(ids), np.int64)
        for layer in range(index.leaf_layers):
            number = number * index.token_sizes[layer] + codes[:, layer]
            bucket_of = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, np.int64)
            bucket_of[ids] = number
            name = "leaves" if layer == index.leaf_layers - 1 else f"layer {layer + 1}"
            partitions[name if index.leaf_layers > 1 else "leaves"] = bucket_of
        return partitions
    if isinstance(index, FaissIndex):
        import faiss

        try:
            ivf = faiss.extract_index_ivf(index.index)
        except RuntimeError:
            ivf = None
        if ivf is not None:
            labels = index.table.ids  # FAISS stores slots; the table maps them to item ids
            bucket_of = np.full(int(labels.max()) + 1 if len(labels) else 0, -1, np.int64)
            for cell in range(ivf.nlist):
                size = ivf.invlists.list_size(cell)
                if size:
                    ids = labels[faiss.rev_swig_ptr(ivf.invlists.get_ids(cell), size)]
                    bucket_of[ids[ids >= 0]] = cell
            return {"IVF lists": bucket_of}
    raise InvalidRequest(
        f"a {index.backend} index has no partition to report (mfli, uri, ci and faiss IVF do)"
    )


def quality_report(bundle: Bundle, index: BaseIndex) -> dict:
    split = split_for(bundle.config.data, bundle.data)
    report = {}
    for name, bucket_of in partitions_of(index, facet_names(bundle, index)).items():
        bucket_of = bucket_of[: bundle.model.n_items]
        report[name] = {
            "ape": average_partition_entropy(bucket_of, split.train_offsets, split.train_items),
            **bucket_report(bucket_of),
        }
        if name == "leaves":  # a generative index: items beyond the first in a leaf share its code
            placed = bucket_of[bucket_of >= 0]
            report[name]["collisions"] = float(len(placed) - len(np.unique(placed)))
    utilisation = getattr(index, "codeword_use", None)
    if callable(utilisation):
        report["codeword_use"] = utilisation()
    return report


def plot_bucket_sizes(index: BaseIndex, path: Path, title: str, facets: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    partitions = partitions_of(index, facets)
    figure, axes = plt.subplots(1, len(partitions), figsize=(5 * len(partitions), 3.5), squeeze=False)
    for axis, (name, bucket_of) in zip(axes[0], partitions.items(), strict=True):
        sizes = np.bincount(bucket_of[bucket_of >= 0])
        sizes = sizes[sizes > 0]
        bins = np.logspace(0, np.log10(max(2, sizes.max())), 30)
        axis.hist(sizes, bins=bins, color="#4c72b0")
        axis.set_xscale("log")
        axis.set_xlabel("items per bucket")
        axis.set_ylabel("buckets")
        axis.set_title(f"{name}: {len(sizes):,} buckets")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
