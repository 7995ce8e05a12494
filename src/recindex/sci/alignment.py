"""Measurements of the two defects SCI targets, beside the end metrics.

Space misalignment:
- `distribution_gap`: how far apart the query and item vectors lie: the distance between their means
  and the maximum mean discrepancy (MMD^2, Gaussian kernel, bandwidth by the median heuristic) between
  samples of the two; 0 when the two distributions are the same;
- `view_agreement`: mean cos(f_q(I), f_i(I)), each item read by both towers;
- `list_agreement`: the same question asked of an index's lists: how many items have a query view and
  an item vector that pick the same list (what the consistent index's build checks, `recindex.sci.index`);
- `routing_consistency`: the share of a query's exact top-K items that sit in the lists the query is
  routed to (nprobe of them): the routing errors an index makes before it scores anything.

Long tail (`tail_subsets`): test cases of users with short histories, and cases whose target is among
the least popular half of the items (by training interactions).
"""

from __future__ import annotations

import numpy as np

from recindex.errors import InvalidRequest


def distribution_gap(queries: np.ndarray, items: np.ndarray, sample: int = 2000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    q = queries[rng.choice(len(queries), min(sample, len(queries)), replace=False)].astype(np.float64)
    i = items[rng.choice(len(items), min(sample, len(items)), replace=False)].astype(np.float64)

    def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T, 0.0)

    qq, ii, qi = squared_distances(q, q), squared_distances(i, i), squared_distances(q, i)
    bandwidth = float(np.median(qi))  # the median heuristic, on the cross distances
    kernel = lambda d: np.exp(-d / max(bandwidth, 1e-12))  # noqa: E731
    n, m = len(q), len(i)
    # Unbiased MMD^2: the diagonals (a point with itself) are left out of the within-sample terms.
    within_q = (kernel(qq).sum() - n) / (n * (n - 1))
    within_i = (kernel(ii).sum() - m) / (m * (m - 1))
    mmd = within_q + within_i - 2 * kernel(qi).mean()
    return {
        "mean_gap": float(np.linalg.norm(queries.mean(0) - items.mean(0))),
        "mmd2": float(mmd),
        "query_item_cosine": float((q @ i.T).mean()),
    }


def view_agreement(query_views: np.ndarray, item_views: np.ndarray) -> float:
    return float((query_views * item_views).sum(1).mean())


def list_agreement(query_views: np.ndarray, item_vectors: np.ndarray, centroids: np.ndarray) -> dict | None:
    """How far an item's query view f_q(I) stands for its item vector f_i(I), over the items whose item
    vector is not zero (an item the item tower knows nothing of, e.g. one never seen in training and
    without attributes, has no item view to agree with): `cosine`, their mean cos(f_q(I), f_i(I)); and
    `same_list`, the share of them whose query view's nearest centroid is also the centroid that scores
    their item vector highest, i.e. the list a query aimed at the item vector would probe first. None
    when no item qualifies."""
    norms = np.linalg.norm(item_vectors, axis=1)
    known = norms > 1e-6
    if not known.any():
        return None
    views, vectors = query_views[known], item_vectors[known] / norms[known, None]
    views = views / np.maximum(np.linalg.norm(views, axis=1, keepdims=True), 1e-12)
    same = np.argmax(views @ centroids.T, axis=1) == np.argmax(vectors @ centroids.T, axis=1)
    return {
        "items": int(known.sum()),
        "cosine": view_agreement(views, vectors),
        "same_list": float(same.mean()),
    }


def routing_consistency(item_lists: np.ndarray, probed: np.ndarray, exact_top: np.ndarray) -> float:
    """Mean share of each query's exact top-K items found in its probed lists.

    item_lists: (N, m) the list(s) of each item id (-1 for none); probed: (Q, nprobe) the lists each
    query visits; exact_top: (Q, K) each query's exact top-K item ids (-1 padding is ignored).
    """
    shares = np.empty(len(probed))
    for q in range(len(probed)):
        top = exact_top[q][exact_top[q] >= 0]
        if not len(top):
            shares[q] = np.nan
            continue
        inside = np.isin(item_lists[top], probed[q]).any(axis=1)
        shares[q] = inside.mean()
    return float(np.nanmean(shares))


def tail_subsets(
    history_lengths: np.ndarray, targets: np.ndarray, item_counts: np.ndarray, short: int = 5
) -> dict[str, np.ndarray]:
    """Boolean masks over test cases: `short_history` (at most `short` items of history) and
    `tail_target` (the target is in the least popular 50% of items, by training count)."""
    order = np.argsort(item_counts, kind="stable")  # least popular first; ties by item id
    tail = np.zeros(len(item_counts), bool)
    tail[order[: len(order) // 2]] = True
    return {"short_history": history_lengths <= short, "tail_target": tail[targets]}


def check_agreement(found: dict | None, min_agreement: float) -> None:
    """Refuse lists formed in a query view that does not stand for the item vectors queries score:
    they hold the items a query resembles, not those it scores, and an index over them misses
    most of exact search's top k at any useful nprobe."""
    if not min_agreement or found is None or found["cosine"] >= min_agreement:
        return
    raise InvalidRequest(
        f"ci: the towers' two views of an item disagree: mean cos(f_q(I), f_i(I)) is "
        f"{found['cosine']:.3f} over the {found['items']:,} items with an item vector (at least "
        f"{min_agreement:g} asked), and only {found['same_list']:.1%} of them have a query view "
        "and an item vector that pick the same list. Lists formed in the query view would miss most "
        "of what queries score. CI needs towers whose query tower reads an item as the item tower "
        'does: trained to convergence, or with SymmAligner (model.kind = "sci", docs/sci.md). '
        "Or index these towers by their item vectors (e.g. --backend faiss:HNSW32), or build anyway "
        "with --backend ci:min_agreement=0."
    )
