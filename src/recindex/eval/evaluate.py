"""Evaluate a retrieval model on validation or test cases with full ranking over the catalogue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recindex.config import ExperimentConfig
from recindex.data.splits import EvalCases, Split
from recindex.eval.metrics import ranking_report
from recindex.index.exact import exact_search
from recindex.models.two_tower import TwoTowerModel, pad_sequences
from recindex.progress import BatchProgress


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]
    ranks: np.ndarray
    top_items: np.ndarray


def encode_cases(model: TwoTowerModel, cases: EvalCases, batch_size: int = 1024) -> torch.Tensor:
    """User vectors (n, d) for each case's history.

    Cases are encoded in order of history length so that each batch is padded only to its own longest
    history (most users are far shorter than the window), then put back in case order.
    """
    model.eval()
    out = torch.zeros(len(cases), getattr(model, "output_dim", model.config.dim))
    order = np.argsort(np.diff(cases.history_offsets), kind="stable")
    with torch.no_grad():
        for start in range(0, len(cases), batch_size):
            rows = order[start : start + batch_size]
            histories = [cases.history(int(c)) for c in rows]
            padded, lengths = pad_sequences(histories, model.config.max_len, model.n_items)
            users = torch.as_tensor(cases.users[rows])
            out[torch.as_tensor(rows)] = model.user_vectors(
                torch.as_tensor(padded), torch.as_tensor(lengths), users
            )
    return out


def evaluate_model(
    model: TwoTowerModel,
    split: Split,
    which: str,
    item_counts: np.ndarray,
    *,
    ks: tuple[int, ...] = (5, 10, 20, 50, 100),
    exclude_seen: bool = True,
    batch_size: int = 1024,
    progress: bool = False,
    queries: torch.Tensor | None = None,
) -> EvalResult:
    """`queries`: the cases' user vectors when the caller has them already (else encoded here)."""
    cases = split.eval_cases(which)
    model.eval()
    with torch.no_grad():
        items = model.item_vectors()
    if queries is None:
        queries = encode_cases(model, cases, batch_size)
    with BatchProgress(-(-len(cases) // batch_size), f"ranking {which}", enabled=progress) as bar:
        top, _, ranks = exact_search(
            queries,
            items,
            max(ks),
            exclude_offsets=cases.history_offsets if exclude_seen else None,
            exclude_items=cases.history_items if exclude_seen else None,
            targets=cases.targets,
            batch_size=batch_size,
            on_batch=bar.advance,
        )
    cold_mask = np.isin(cases.targets, split.cold_items) if len(split.cold_items) else None
    metrics = ranking_report(ranks, top, item_counts, ks, cold_mask)
    return EvalResult(metrics, ranks, top)


def evaluate_split(
    model: TwoTowerModel, split: Split, which: str, config: ExperimentConfig, *, progress: bool = False
) -> dict[str, float]:
    """The protocol's metrics for one split part; training popularity is what 'popularity' refers to."""
    counts = np.bincount(split.train_items, minlength=model.n_items)
    return evaluate_model(
        model,
        split,
        which,
        counts,
        ks=config.eval.ks,
        exclude_seen=config.eval.exclude_seen,
        batch_size=config.eval.batch_size,
        progress=progress,
    ).metrics
