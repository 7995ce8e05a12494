"""Exact inner-product retrieval: batched matmul + top-k, with each query's own items masked.

This is the reference every approximate index is checked against.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def _mask_rows(scores: torch.Tensor, exclude_offsets: np.ndarray, exclude_items: np.ndarray, start: int):
    """Set scores of excluded items to -inf for rows [start, start + len(scores))."""
    lo, hi = exclude_offsets[start], exclude_offsets[start + len(scores)]
    if hi == lo:
        return
    rows = np.repeat(np.arange(len(scores)), np.diff(exclude_offsets[start : start + len(scores) + 1]))
    device = scores.device  # the rows are masked where the scores are (a GPU's when evaluating there)
    columns = torch.as_tensor(exclude_items[lo:hi], device=device)
    scores[torch.as_tensor(rows, device=device), columns] = float("-inf")


def check_finite(scores: torch.Tensor, what: str = "scores") -> None:
    """Refuse NaN/inf scores (call before masking).

    A NaN compares as neither better nor worse than the target, which silently inflates recall.
    """
    if not bool(torch.isfinite(scores).all()):
        raise FloatingPointError(f"{what} contain NaN or inf: the model produced invalid vectors")


def exact_search(
    queries: torch.Tensor,  # (Q, d)
    items: torch.Tensor,  # (N, d)
    k: int,
    *,
    exclude_offsets: np.ndarray | None = None,
    exclude_items: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    batch_size: int = 1024,
    on_batch: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Top-k item indices and scores per query; optionally each target's rank (0 = best).

    Ranks are pessimistic on ties: an item scoring exactly the target's score counts as ranked above
    it, so a degenerate model (all scores equal) gets the worst rank, never the best.
    """
    k = min(k, items.shape[0])
    top_ids = np.empty((len(queries), k), np.int64)
    top_scores = np.empty((len(queries), k), np.float32)
    ranks = None if targets is None else np.empty(len(queries), np.int64)
    with torch.no_grad():
        for start in range(0, len(queries), batch_size):
            scores = queries[start : start + batch_size] @ items.T  # (b, N)
            check_finite(scores)
            if exclude_offsets is not None:
                _mask_rows(scores, exclude_offsets, exclude_items, start)
            values, indices = torch.topk(scores, k, dim=1)
            top_ids[start : start + len(scores)] = indices.cpu().numpy()
            top_scores[start : start + len(scores)] = values.cpu().numpy()
            if targets is not None:
                batch_targets = torch.as_tensor(targets[start : start + len(scores)], device=scores.device)
                every_row = torch.arange(len(scores), device=scores.device)
                target_scores = scores[every_row, batch_targets].unsqueeze(1)
                above = (scores >= target_scores).sum(dim=1) - 1
                ranks[start : start + len(scores)] = above.cpu().numpy()
            if on_batch is not None:
                on_batch()
    return top_ids, top_scores, ranks
