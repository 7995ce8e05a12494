"""The composition root: the one place that joins the families (two-tower, MFLI, URI, SCI) with
training, bundles and indexes. The edges (`recindex.cli`, `recindex.serve`) call it; nothing below it
knows a family by name.

    from recindex.pipelines import load_bundle, run_experiment, build_bundle_index, load_bundle_index
"""

from recindex.pipelines.experiment import ExperimentResult, evaluate_bundle, run_experiment
from recindex.pipelines.families import FAMILIES, Family, load_bundle
from recindex.pipelines.indexes import (
    build_bundle_index,
    item_attributes,
    list_bundle_indexes,
    load_bundle_index,
    load_index,
    make_index,
)
from recindex.sci.views import content_query_views  # how the service places new items in a `ci` index

__all__ = [
    "FAMILIES",
    "ExperimentResult",
    "Family",
    "build_bundle_index",
    "content_query_views",
    "evaluate_bundle",
    "item_attributes",
    "list_bundle_indexes",
    "load_bundle",
    "load_bundle_index",
    "load_index",
    "make_index",
    "run_experiment",
]
