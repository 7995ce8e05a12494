"""How an index partitions the catalogue: bucket sizes, codeword use and APE, for `recindex index quality`.

Partitions come from the index itself (`index.partitions()`): MFLI names one per facet (its leaves;
named here as the bundle's `mfli.facets` names them), URI one per layer of its token tree (the last is
the leaves, where items that share a full code are counted as collisions), CI its coarse lists and the
leaves of its full coarse + fine codes, FAISS IVF its lists; other backends refuse. APE is measured with
the users' training items as each query's positives (see eval.ape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recindex.bundle import Bundle
from recindex.data.splits import split_for
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
    `facets` names an MFLI index's facets (`facet 0` is reported as `joint facet`)."""
    return {_named(name, facets): buckets for name, buckets in index.partitions().buckets.items()}


def _named(name: str, facets: list[str] | None) -> str:
    number = name.removeprefix("facet ")
    if facets and number != name and number.isdigit() and int(number) < len(facets):
        return f"{facets[int(number)]} facet"
    return name


def quality_report(bundle: Bundle, index: BaseIndex) -> dict:
    split = split_for(bundle.config.data, bundle.data)
    view = index.partitions()
    facets = facet_names(bundle, index)
    report = {}
    for name, bucket_of in view.buckets.items():
        name = _named(name, facets)
        bucket_of = bucket_of[: bundle.model.n_items]
        report[name] = {
            "ape": average_partition_entropy(bucket_of, split.train_offsets, split.train_items),
            **bucket_report(bucket_of),
        }
        if name == "leaves":  # a generative index: items beyond the first in a leaf share its code
            placed = bucket_of[bucket_of >= 0]
            report[name]["collisions"] = float(len(placed) - len(np.unique(placed)))
    report.update(view.details)  # e.g. MFLI's codeword use
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
