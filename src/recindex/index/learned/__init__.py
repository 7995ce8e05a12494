"""The learned (partitioned) indexes' one base: storage, batched rescoring, filters, triggers, reports.

MFLI (`recindex.mfli.index`), URI (`recindex.uri.index`) and CI (`recindex.sci.index`) subclass
`PartitionedIndex` and implement how an item is placed and how a query is routed; see `base.py`.
"""

from recindex.index.learned.base import PartitionedIndex, Route
from recindex.index.learned.candidates import Lists, exact_top_k, rank, rescore_top_k
from recindex.index.learned.codes import number_codes
from recindex.index.learned.fast_scan import FastScanLists
from recindex.index.learned.store import Column, RowStore

__all__ = [
    "FastScanLists",
    "rescore_top_k",
    "Column",
    "Lists",
    "PartitionedIndex",
    "Route",
    "RowStore",
    "exact_top_k",
    "number_codes",
    "rank",
]
