"""Average Partition Entropy (APE) of an index's buckets, as defined in section 3 of the URI paper.

For a query x with positive items Y_x spread over the buckets of an index, Q_x is the share of Y_x in
each bucket and H(Q_x) = -sum_j Q_x[j] log Q_x[j] (natural log). APE is the mean of H(Q_x) over the
queries: low when a query's positives sit together in few buckets, which bounds how well a model
that routes a query to buckets can do. It is only meaningful for balanced indices (one bucket holding
everything has APE 0), so it is reported beside bucket-size statistics.

Our reading for recommendation data (the paper states APE per query without naming the positives of a
sequential data set): a query is a user and its positives are the distinct items of the user's
training history; users with fewer than two distinct items carry no information and are left out.
"""

from __future__ import annotations

import numpy as np


def average_partition_entropy(bucket_of: np.ndarray, offsets: np.ndarray, items: np.ndarray) -> float:
    """APE of `bucket_of` (item -> bucket, int; -1 for items outside the index, which are skipped) for
    queries whose positives are items[offsets[q]:offsets[q+1]] (CSR)."""
    bucket_of = np.asarray(bucket_of, np.int64)
    offsets = np.asarray(offsets, np.int64)
    items = np.asarray(items, np.int64)
    query_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    # distinct (query, item) pairs, then (query, bucket) counts: one sort, no Python loop per query
    pairs = np.unique(np.stack([query_of, items], axis=1), axis=0)
    buckets = bucket_of[pairs[:, 1]]
    inside = buckets >= 0
    queries, buckets = pairs[inside, 0], buckets[inside]
    if not len(queries):
        return float("nan")
    cells, counts = np.unique(np.stack([queries, buckets], axis=1), axis=0, return_counts=True)
    per_query = np.bincount(cells[:, 0], weights=counts, minlength=len(offsets) - 1)
    share = counts / per_query[cells[:, 0]]
    entropy = np.bincount(cells[:, 0], weights=-share * np.log(share), minlength=len(offsets) - 1)
    counted = per_query >= 2
    return float(entropy[counted].mean()) if counted.any() else float("nan")


def bucket_report(bucket_of: np.ndarray, n_buckets: int | None = None) -> dict[str, float]:
    """Bucket sizes beside an APE figure: used and empty buckets, size spread, largest share."""
    bucket_of = np.asarray(bucket_of, np.int64)
    bucket_of = bucket_of[bucket_of >= 0]
    sizes = np.bincount(bucket_of, minlength=n_buckets or 0)
    used = sizes[sizes > 0]
    return {
        "buckets": float(len(sizes)),
        "used": float(len(used)),
        "empty": float((sizes == 0).sum()),
        "size_p50": float(np.median(used)) if len(used) else 0.0,
        "size_p90": float(np.percentile(used, 90)) if len(used) else 0.0,
        "size_max": float(used.max()) if len(used) else 0.0,
        "largest_share": float(used.max() / used.sum()) if len(used) else 0.0,
    }
