"""SCI's coarse-to-fine semantic IDs: an item's consistent-index list, then its fine residual codes.

With k tokens per layer and L layers: k lists by k-means in the query view (the items' f_q(I), the
index's default), then L - 1 levels of k codewords quantizing the item-view residual
b_i - c_list(i). They are built by the `ci` index itself, so the IDs a generative retriever learns are
the ones that index serves.
"""

from __future__ import annotations

import numpy as np

from recindex.models.two_tower import TwoTowerModel
from recindex.sci.index import CIIndex
from recindex.sci.views import catalogue_query_views


def sci_semantic_ids(model: TwoTowerModel, k: int, layers: int, *, seed: int = 0) -> np.ndarray:
    """(N, layers) tokens in 0..k-1 for every item of the model's catalogue."""
    import torch

    with torch.no_grad():
        model.eval()
        items = model.item_vectors().cpu().numpy().astype(np.float32)
    index = CIIndex(
        items.shape[1],
        "ip",
        nlist=k,
        levels=layers - 1,
        codewords=k,
        query_views=catalogue_query_views(model),
        seed=seed,
    )
    ids = np.arange(len(items))
    index.add(ids, items)
    return index.semantic_ids(ids)
