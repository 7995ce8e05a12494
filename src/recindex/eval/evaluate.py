"""Evaluate a retrieval model on validation or test cases with full ranking over the catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from recindex.config import ExperimentConfig
from recindex.data.splits import EvalCases, Split
from recindex.eval.metrics import ranking_report
from recindex.index.exact import exact_search
from recindex.models.devices import model_device
from recindex.models.two_tower import TwoTowerModel, pad_sequences
from recindex.progress import BatchProgress


class CaseShard(Protocol):
    """This process's share of the cases under data parallelism (`train.distributed.CaseShards`)."""

    rank: int
    world_size: int

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every rank's `rows`, concatenated in rank order."""
        ...


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]
    ranks: np.ndarray
    top_items: np.ndarray


def encode_cases(model: TwoTowerModel, cases: EvalCases, batch_size: int = 1024) -> torch.Tensor:
    """User vectors (n, d) for each case's history, on the model's device.

    Cases are encoded in order of history length so that each batch is padded only to its own longest
    history (most users are far shorter than the window), then put back in case order.
    """
    model.eval()
    device = model_device(model)
    out = torch.zeros(len(cases), getattr(model, "output_dim", model.config.dim), device=device)
    order = np.argsort(np.diff(cases.history_offsets), kind="stable")
    with torch.no_grad():
        for start in range(0, len(cases), batch_size):
            rows = order[start : start + batch_size]
            histories = [cases.history(int(c)) for c in rows]
            padded, lengths = pad_sequences(histories, model.config.max_len, model.n_items)
            users = torch.as_tensor(cases.users[rows]).to(device)
            out[torch.as_tensor(rows).to(device)] = model.user_vectors(
                torch.as_tensor(padded).to(device), torch.as_tensor(lengths).to(device), users
            )
    return out


def case_block(cases: EvalCases, shard: CaseShard) -> tuple[EvalCases, slice]:
    """The contiguous block of `cases` that `shard`'s rank evaluates, and where it lies."""
    bounds = np.linspace(0, len(cases), shard.world_size + 1).astype(np.int64)
    lo, hi = int(bounds[shard.rank]), int(bounds[shard.rank + 1])
    offsets = cases.history_offsets
    block = EvalCases(
        cases.users[lo:hi],
        offsets[lo : hi + 1] - offsets[lo],
        cases.history_items[offsets[lo] : offsets[hi]],
        cases.targets[lo:hi],
    )
    return block, slice(lo, hi)


def rank_cases(
    model: TwoTowerModel,
    cases: EvalCases,
    label: str,
    k: int,
    *,
    exclude_seen: bool = True,
    batch_size: int = 1024,
    progress: bool = False,
    queries: torch.Tensor | None = None,
    shard: CaseShard | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each case's top `k` items (n, k) and its target's rank (n,) over the whole catalogue; `label` names
    the progress bar. `queries` and `shard`: as `evaluate_model` takes them."""
    every_case = cases
    if shard is not None and shard.world_size > 1:
        cases, block = case_block(cases, shard)
        queries = queries[block] if queries is not None else None
    model.eval()
    with torch.no_grad():
        items = model.item_vectors()
    if queries is None:
        queries = encode_cases(model, cases, batch_size)
    queries = queries.to(items.device)
    with BatchProgress(-(-len(cases) // batch_size), f"ranking {label}", enabled=progress) as bar:
        top, _, ranks = exact_search(
            queries,
            items,
            k,
            exclude_offsets=cases.history_offsets if exclude_seen else None,
            exclude_items=cases.history_items if exclude_seen else None,
            targets=cases.targets,
            batch_size=batch_size,
            on_batch=bar.advance,
        )
    if cases is not every_case:
        top, ranks = shard.gather_rows(top), shard.gather_rows(ranks)
    return top, ranks


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
    shard: CaseShard | None = None,
) -> EvalResult:
    """`queries`: the cases' user vectors when the caller has them already (else encoded here).
    `shard`: rank only this process's block of the cases and gather the others' (data parallelism);
    every process then returns the same result."""
    cases = split.eval_cases(which)
    top, ranks = rank_cases(
        model,
        cases,
        which,
        max(ks),
        exclude_seen=exclude_seen,
        batch_size=batch_size,
        progress=progress,
        queries=queries,
        shard=shard,
    )
    cold_mask = np.isin(cases.targets, split.cold_items) if len(split.cold_items) else None
    metrics = ranking_report(ranks, top, item_counts, ks, cold_mask)
    return EvalResult(metrics, ranks, top)


def evaluate_split(
    model: TwoTowerModel,
    split: Split,
    which: str,
    config: ExperimentConfig,
    *,
    progress: bool = False,
    shard: CaseShard | None = None,
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
        shard=shard,
    ).metrics
