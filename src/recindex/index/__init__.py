"""Item indexes: one contract (`BaseIndex`), exact / FAISS / Milvus / sharded backends, filters.

    from recindex.index import make_index, load_index
    index = make_index("faiss:HNSW32", dim=64)

See docs/indexes.md.
"""

from recindex.index.base import BaseIndex, Capabilities, SearchResult, check_metric
from recindex.index.factory import load_index, make_index
from recindex.index.filters import Filter, make_filter

__all__ = [
    "BaseIndex",
    "Capabilities",
    "Filter",
    "SearchResult",
    "check_metric",
    "load_index",
    "make_filter",
    "make_index",
]
