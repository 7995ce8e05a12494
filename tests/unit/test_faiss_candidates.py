"""Candidates scored count the work of every pass a row takes, widened retries and the exact fallback
included, so an index that completes short rows does not look cheaper than it is."""

import numpy as np

from recindex.index.factory import make_index


def test_rows_completed_by_wider_retries_count_the_retries():
    rng = np.random.default_rng(0)
    items = rng.standard_normal((2000, 16)).astype(np.float32)
    index = make_index("faiss:IVF64,Flat", 16, search_params={"nprobe": 1})
    index.add(np.arange(len(items)), items)
    index.count_candidates = True
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    plain = index.search(queries, 10)
    # Excluding 200 items per query asks one list (~31 items) for 210: every row needs the retries.
    history = [rng.choice(len(items), 200, replace=False) for _ in range(len(queries))]
    masked = index.search(queries, 10, exclude=history)
    assert (masked.ids >= 0).all()
    assert (masked.scored > 4 * plain.scored).all()
