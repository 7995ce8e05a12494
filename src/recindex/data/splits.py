"""Train / validation / test splits.

A `Split` holds the training sequences (what the model may learn from) and, for validation and test,
one `EvalCases` each: a user, the history the model sees (its input) and the held-out target item.

- `leave_one_out`: train on all but each user's last two items, validate on the second-to-last, test on
  the last (the S3-Rec / SASRec / TIGER protocol). Users with fewer than 3 items only train.
- `temporal`: global time cut-offs at the given quantiles of all timestamps; validation and test targets
  are each user's first interaction inside the window, with everything before it as history.
- `cold_item`: leave-one-out, then a seeded random share of items is removed from training entirely
  (as inputs and as targets). Their content features stay, so the item tower can still encode them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recindex.config import DataConfig
from recindex.data.interactions import Interactions
from recindex.errors import RecIndexError


@dataclass(frozen=True)
class EvalCases:
    users: np.ndarray  # (n,) internal user index
    history_offsets: np.ndarray  # (n + 1,)
    history_items: np.ndarray  # items the model sees, time-ordered
    targets: np.ndarray  # (n,) held-out item

    def __len__(self) -> int:
        return len(self.users)

    def history(self, case: int) -> np.ndarray:
        return self.history_items[self.history_offsets[case] : self.history_offsets[case + 1]]

    def subset(self, rows: np.ndarray) -> EvalCases:
        """The cases at `rows`, in that order."""
        histories = [self.history(int(r)) for r in rows]
        lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate(histories) if histories else self.history_items[:0]
        return EvalCases(self.users[rows], offsets, items, self.targets[rows])


@dataclass(frozen=True)
class Split:
    kind: str
    train_offsets: np.ndarray  # (n_users + 1,) CSR over training sequences
    train_items: np.ndarray
    valid: EvalCases
    test: EvalCases
    cold_items: np.ndarray  # items never seen in training by design (cold-item split); else empty

    def train_sequence(self, user: int) -> np.ndarray:
        return self.train_items[self.train_offsets[user] : self.train_offsets[user + 1]]

    def train_item_mask(self, n_items: int) -> np.ndarray:
        """True for items that occur in training."""
        mask = np.zeros(n_items, bool)
        mask[self.train_items] = True
        return mask

    def eval_cases(self, which: str) -> EvalCases:
        if which not in ("valid", "test"):
            raise RecIndexError(f"unknown split part {which!r}: expected 'valid' or 'test'")
        return self.valid if which == "valid" else self.test


def _csr(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate(sequences).astype(np.int64) if sequences else np.zeros(0, np.int64)
    return offsets, items


def _cases(users, histories: list[np.ndarray], targets) -> EvalCases:
    offsets, items = _csr(histories)
    return EvalCases(np.asarray(users, np.int64), offsets, items, np.asarray(targets, np.int64))


def leave_one_out(data: Interactions) -> Split:
    train, valid_cases, test_cases = [], ([], [], []), ([], [], [])
    for user in range(data.n_users):
        sequence = data.sequence(user)
        if len(sequence) < 3:
            train.append(sequence)
            continue
        train.append(sequence[:-2])
        for cases, cut in ((valid_cases, -2), (test_cases, -1)):
            cases[0].append(user)
            cases[1].append(sequence[:cut])
            cases[2].append(sequence[cut])
    offsets, items = _csr(train)
    return Split(
        "leave_one_out", offsets, items, _cases(*valid_cases), _cases(*test_cases), np.zeros(0, np.int64)
    )


def temporal(data: Interactions, valid_quantile: float = 0.8, test_quantile: float = 0.9) -> Split:
    if data.timestamps is None:
        raise RecIndexError(f"dataset {data.name!r} has no timestamps: use the leave_one_out split")
    if not 0.0 < valid_quantile < test_quantile < 1.0:
        raise RecIndexError("temporal split needs 0 < valid_quantile < test_quantile < 1")
    valid_start, test_start = np.quantile(data.timestamps, [valid_quantile, test_quantile])
    train = []
    valid_cases, test_cases = ([], [], []), ([], [], [])
    for user in range(data.n_users):
        lo, hi = data.offsets[user], data.offsets[user + 1]
        sequence, stamps = data.items[lo:hi], data.timestamps[lo:hi]
        train.append(sequence[stamps < valid_start])
        for cases, start, end in ((valid_cases, valid_start, test_start), (test_cases, test_start, np.inf)):
            # A target needs some history to be predictable: the first in-window item after another.
            inside = np.flatnonzero((stamps >= start) & (stamps < end) & (np.arange(len(stamps)) > 0))
            if len(inside):
                first = inside[0]
                cases[0].append(user)
                cases[1].append(sequence[:first])
                cases[2].append(sequence[first])
    offsets, items = _csr(train)
    return Split("temporal", offsets, items, _cases(*valid_cases), _cases(*test_cases), np.zeros(0, np.int64))


def cold_item(data: Interactions, share: float = 0.1, seed: int = 0) -> Split:
    if not 0.0 < share < 1.0:
        raise RecIndexError("cold-item share must be between 0 and 1")
    base = leave_one_out(data)
    rng = np.random.default_rng(seed)
    n_cold = max(1, int(round(share * data.n_items)))
    cold = np.sort(rng.choice(data.n_items, size=n_cold, replace=False))
    is_cold = np.zeros(data.n_items, bool)
    is_cold[cold] = True
    train = [s[~is_cold[s]] for s in (base.train_sequence(u) for u in range(data.n_users))]
    offsets, items = _csr(train)
    return Split("cold_item", offsets, items, base.valid, base.test, cold)


def make_split(data: Interactions, kind: str, *, cold_share: float = 0.1, seed: int = 0) -> Split:
    if kind == "leave_one_out":
        return leave_one_out(data)
    if kind == "temporal":
        return temporal(data)
    if kind == "cold_item":
        return cold_item(data, cold_share, seed)
    raise RecIndexError(f"unknown split {kind!r}: expected leave_one_out, temporal or cold_item")


def split_for(data_config: DataConfig, data: Interactions) -> Split:
    """The split a run's `[data]` section describes (the same one every later evaluation re-makes)."""
    return make_split(data, data_config.split, cold_share=data_config.cold_share, seed=data_config.split_seed)
