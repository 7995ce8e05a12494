"""Candidates of a partitioned index, scored for a whole batch of queries at once.

A learned index routes each query to a few partitions: `probes`, a (Q, P) matrix of partition numbers,
best first, -1 where a query has fewer. The items of those partitions are its candidates. `Lists` says
which slots each partition holds; `rank` turns probes into each query's top k:

1. the candidates are scored partition by partition: the queries of the batch that probe a partition
   are one matrix product with that partition's items. Queries of a batch share partitions, so an item
   is read once per batch instead of once per query, and the products run in BLAS, not in a Python
   loop over queries. A single query gathers its candidates and scores them in one product;
2. a candidate that is not eligible (filtered out, removed, or excluded by the caller) scores -inf, and
   one found in two probed partitions (lists that overlap) counts once;
3. each query keeps its best k, best first, equal scores in slot order (as exact search orders them).

`exact_top_k` scores a set of slots exhaustively: the filtered fallback, where the probed partitions
held fewer than k eligible items. `rescore_top_k` is the exact refine of a shortlist that compressed
codes picked (`fast_scan`): each row's candidates scored by the stored vectors, copies dropped, top k.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from recindex.index.base import top_k
from recindex.index.learned.kernels import (
    FLOAT32_MAX,
    inner_products,
    probes_within_cosine_gap,
    probes_within_gap,
    rescore_one,
    squared_norms,
)

# Score matrix entries held at once (about 50 MB with their slots): queries per block = this / the
# widest query's candidates.
BLOCK_ENTRIES = 1 << 22

# (batch rows, slots) -> (len(rows), len(slots)) float32 scores of those queries against those items
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Lists:
    """Slots grouped by partition (CSR): partition p holds members[offsets[p]:offsets[p + 1]]."""

    offsets: np.ndarray  # (P + 1,) int64
    members: np.ndarray  # (n,) int64 slots, ascending within a partition

    @classmethod
    def of(cls, partition_of: np.ndarray, n_partitions: int) -> Lists:
        """From each slot's partitions: (n,) or (n, a) partition numbers (-1: none). A slot named twice
        for one partition is held there once."""
        partition_of = np.asarray(partition_of, np.int64)
        width = 1 if partition_of.ndim == 1 else partition_of.shape[1]
        flat = partition_of.reshape(-1)
        slots = np.repeat(np.arange(len(partition_of), dtype=np.int64), width)
        placed = flat >= 0
        flat, slots = flat[placed], slots[placed]
        if width > 1:
            pairs = np.unique(flat * max(1, len(partition_of)) + slots)
            flat, slots = pairs // max(1, len(partition_of)), pairs % max(1, len(partition_of))
        order = np.argsort(flat, kind="stable")
        offsets = np.zeros(n_partitions + 1, np.int64)
        np.cumsum(np.bincount(flat, minlength=n_partitions), out=offsets[1:])
        return cls(offsets, slots[order])

    @cached_property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def eligible_sizes(self, eligible: np.ndarray | None) -> np.ndarray:
        """Eligible members per partition."""
        if eligible is None:
            return self.sizes
        flags = np.append(eligible[self.members], False).astype(np.int64)
        return np.add.reduceat(flags, self.offsets[:-1]) * (self.sizes > 0)

    def expand(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The members of each row's probed partitions, in probe order: (slots, row, probe column)."""
        valid = probes >= 0
        rows, columns = np.nonzero(valid)
        parts = probes[valid]
        counts = self.offsets[parts + 1] - self.offsets[parts]
        starts = np.repeat(self.offsets[parts], counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return self.members[starts + within], np.repeat(rows, counts), np.repeat(columns, counts)


def rank(
    probes: np.ndarray,
    lists: Lists,
    k: int,
    score: Scorer,
    *,
    eligible: np.ndarray | None = None,
    overlapping: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's top k over the members of its probed partitions: (slots, scores, candidates scored).

    Slots are -1 and scores -inf where a row has fewer than k eligible candidates."""
    n = len(probes)
    slots = np.full((n, k), -1, np.int64)
    scores = np.full((n, k), -np.inf, np.float32)
    scored = np.zeros(n, np.int64)
    valid = probes >= 0
    sizes = np.where(valid, lists.sizes[np.where(valid, probes, 0)], 0)  # (Q, P)
    for start, stop in _blocks(sizes.sum(1)):
        block = slice(start, stop)
        values, members = _scored_block(probes[block], sizes[block], lists, score, start)
        keep = members >= 0
        if eligible is not None:
            keep &= eligible[np.maximum(members, 0)]
        if overlapping:
            keep &= _first_occurrences(members, keep)
        values[~keep] = -np.inf
        scored[block] = keep.sum(1)
        slots[block], scores[block] = _best(values, members, k)
    return slots, scores, scored


def _blocks(per_row: np.ndarray):
    """Row ranges whose score matrices (rows x widest row) stay within BLOCK_ENTRIES."""
    start = 0
    while start < len(per_row):
        most = max(1, BLOCK_ENTRIES // max(1, int(per_row[start])))  # rows that could fit at all
        widest = np.maximum.accumulate(np.maximum(per_row[start : start + most], 1))
        fits = widest * np.arange(1, len(widest) + 1) <= BLOCK_ENTRIES
        stop = start + max(1, int(fits.sum()))  # widest x rows only grows, so the fitting rows lead
        yield start, stop
        start = stop


def _scored_block(probes, sizes, lists: Lists, score: Scorer, first_row: int):
    """(rows, widest) scores and slots of a block's candidates, laid out in probe order (-1: padding)."""
    rows, _ = probes.shape
    width = max(1, int(sizes.sum(1).max(initial=0)))
    values = np.full((rows, width), -np.inf, np.float32)
    members = np.full((rows, width), -1, np.int64)
    if rows == 1:  # one query: gather its candidates and score them in one product
        found, _, _ = lists.expand(probes)
        if len(found):
            values[0, : len(found)] = score(np.array([first_row]), found)[0]
            members[0, : len(found)] = found
        return values, members
    column = np.cumsum(sizes, axis=1) - sizes  # where each probe's members start in its row
    valid = probes >= 0
    row_of = np.broadcast_to(np.arange(rows)[:, None], probes.shape)[valid]
    part_of, column_of = probes[valid], column[valid]
    order = np.argsort(part_of, kind="stable")
    part_of, row_of, column_of = part_of[order], row_of[order], column_of[order]
    bounds = np.flatnonzero(np.diff(part_of)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(part_of)], strict=True):
        part = part_of[lo]
        held = lists.members[lists.offsets[part] : lists.offsets[part + 1]]
        if not len(held):
            continue
        who = row_of[lo:hi]
        places = column_of[lo:hi, None] + np.arange(len(held))
        values[who[:, None], places] = score(first_row + who, held)
        members[who[:, None], places] = held
    return values, members


def _first_occurrences(members: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """True at the first kept place of each (row, slot): later copies of an item are dropped."""
    rows, places = np.nonzero(keep)
    key = rows * (int(members.max(initial=0)) + 1) + members[rows, places]
    _, first = np.unique(key, return_index=True)
    out = np.zeros_like(keep)
    out[rows[first], places[first]] = True
    return out


def _best(values: np.ndarray, members: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best (slots, scores), best first, equal scores in slot order; -1 / -inf past the end."""
    rows, width = values.shape
    take = min(k, width)
    row = np.arange(rows)[:, None]
    if take < width:
        part = np.argpartition(-values, take - 1, axis=1)[:, :take]
        best = values[row, part]
        kth = best.min(1, keepdims=True)
        # argpartition splits a tie at the k-th score arbitrarily (scores from shared codes tie often):
        # where it did (more items reach the k-th score than there are places), keep the tied items of
        # the lowest slots, so that the answer is well defined
        split = np.flatnonzero(((values >= kth).sum(1) > take) & np.isfinite(kth[:, 0]))
        if len(split):
            ahead, level = values[split] > kth[split], values[split] == kth[split]
            key = np.where(ahead, -1, np.where(level, members[split], np.iinfo(np.int64).max))
            part[split] = np.argpartition(key, take - 1, axis=1)[:, :take]
            best = values[row, part]
        found = members[row, part]
    else:
        best, found = values, members
    order = _by_score(best, found)
    best = best[row, order]
    found = np.where(np.isfinite(best), found[row, order], -1)
    if take == k:  # the usual case: nothing to pad
        return found.astype(np.int64, copy=False), best.astype(np.float32, copy=False)
    slots = np.full((rows, k), -1, np.int64)
    scores = np.full((rows, k), -np.inf, np.float32)
    slots[:, :take], scores[:, :take] = found, best
    return slots, scores


def _by_score(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each row's column order, higher values first and equal values by key: np.lexsort((keys,
    -values)), which costs several times one argsort on a query's few hundred candidates. A row whose
    values are all distinct has only one such order, so one argsort gives it; lexsort runs only where
    some row holds equal values (copies of an item, or padding)."""
    order = np.argsort(-values, axis=1)
    ranked = values[np.arange(len(values))[:, None], order]
    if (ranked[:, 1:] == ranked[:, :-1]).any():
        return np.lexsort((keys, -values), axis=1)
    return order


def rescore_top_k(
    queries: np.ndarray, rows: np.ndarray, candidates: np.ndarray, k: int, *, overlapping: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best k of its (n, D) candidate slots (-1: none) by exact inner product with `rows`:
    (slots, scores), best first, equal scores in slot order, -1 / -inf past the candidates.
    `overlapping`: a row may name a slot twice (lists that overlap); it then counts once."""
    if len(candidates) == 1 and not overlapping and candidates.shape[1] > k and candidates.min() >= 0:
        return rescore_full_shortlist(queries, rows, candidates, k)
    present = candidates >= 0
    values = inner_products(queries, rows, candidates)  # -inf where a candidate is -1
    if overlapping:
        present &= _first_occurrences(candidates, present)
    values[~present] = -np.inf
    return _best(values, candidates, k)


def rescore_full_shortlist(
    query: np.ndarray, rows: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """`rescore_top_k` for one query whose (1, D) candidates are D > k distinct slots (none -1): the
    serving case, the same answer in one compiled call where no two of the best scores are equal."""
    slots, scores = rescore_one(query, rows, candidates, k)
    if not slots.shape[1]:  # equal scores: the general ordering, on the same scores
        return _best(inner_products(query, rows, candidates), candidates, k)
    return slots, scores


def exact_top_k(
    queries: np.ndarray, rows: np.ndarray, pool: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's top k of the slots in `pool`, scored exhaustively by inner product: (slots, scores),
    padded with -1 / -inf where the pool holds fewer than k. Ties go to the earlier place in `pool`."""
    slots = np.full((len(queries), k), -1, np.int64)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    take = min(k, len(pool))
    if not take:
        return slots, scores
    pooled = rows[pool]
    step = max(1, BLOCK_ENTRIES // len(pool))
    for start in range(0, len(queries), step):
        values = queries[start : start + step] @ pooled.T
        positions, best = top_k(values, take)
        slots[start : start + step, :take] = pool[positions]
        scores[start : start + step, :take] = best
    return slots, scores


def probe_until_k(
    scores: np.ndarray, sizes: np.ndarray, nprobe: int, k: int, gap: float | np.ndarray = 0.0
) -> np.ndarray:
    """(Q, P) probes from (Q, L) partition scores: each row's nprobe best partitions, then further ones,
    best first, until they hold k candidates (every partition if they never do); -1 past a row's last.
    Equal scores go to the lower partition number (a stable sort of the whole row).

    `gap` > 0 (one for all rows, or one per row): of the nprobe best, a row walks only those scoring
    within `gap` of its best partition (still as many as hold k). How many partitions hold a query's
    neighbours varies with the query: one in a small cluster finds them in its first few partitions,
    whose scores then fall away fast, while one in a large cluster split over many partitions meets
    many near-equal scores. A fixed nprobe walks as many for both; the gap spends them where the
    scores say they are needed (at 1M items of the index benchmark's synthetic draw, about half the
    codes for the same recall: docs/indexes.md)."""
    n, total = scores.shape
    take = min(total, 2 * nprobe + 8)
    if n == 1 and take < total:  # one query (the serving case): the same probes in fewer numpy calls
        # rounded to float32 as the rows' gaps below are
        row_gap = _as_float32(gap if type(gap) is float else float(np.asarray(gap).reshape(-1)[0]))
        one = _probe_one(scores[0], sizes, nprobe, k, row_gap, take)
        if one is not None:
            return one[None]
    gap = np.broadcast_to(np.asarray(gap, np.float32), (n,))
    order = _best_first(scores, take) if take < total else np.argsort(-scores, axis=1, kind="stable")
    held = np.cumsum(sizes[order], axis=1)
    if take < total and (held[:, -1] < k).any():  # a row needs partitions past the ones sorted
        order = np.argsort(-scores, axis=1, kind="stable")
        held = np.cumsum(sizes[order], axis=1)
    enough = np.minimum((held < k).sum(1) + 1, order.shape[1])  # partitions needed to hold k
    walked = nprobe
    if (gap > 0).any():
        best = scores[np.arange(n)[:, None], order[:, :nprobe]]
        walked = np.where(gap > 0, (best >= best[:, :1] - gap[:, None]).sum(1), nprobe)
    count = np.maximum(walked, enough)
    probes = order[:, : int(count.max())].copy()
    probes[np.arange(probes.shape[1])[None, :] >= count[:, None]] = -1
    return probes


def cosine_gaps(queries: np.ndarray, gap: float) -> np.ndarray | float:
    """A probe gap in cosine units as `probe_until_k`'s gap per query, for partitions whose centroids
    are unit vectors (spherical k-means): gap x |q| in inner product, whatever the queries' scale."""
    gap = float(gap)
    if gap <= 0:
        return 0.0
    squares = squared_norms(queries)  # one compiled sum for one query and for a batch: the same gaps
    if len(queries) == 1:  # one query: a scalar is a few numpy calls cheaper
        return gap * math.sqrt(squares[0])
    return gap * np.sqrt(squares.astype(np.float64))


def probes_within_cosine(
    coarse: np.ndarray, queries: np.ndarray, sizes: np.ndarray, nprobe: int, k: int, gap: float
) -> np.ndarray:
    """`probe_until_k` with the gap in cosine units (`cosine_gaps`). One query with a gap (the serving
    case) takes one compiled call for the norm, the gap and the lists within it, where the general
    path makes four numpy steps that each cost more than their arithmetic; the same probes."""
    if len(queries) == 1 and gap > 0:
        within = probes_within_cosine_gap(coarse[0], queries[0], sizes, nprobe, k, gap)
        if len(within):  # empty: the lists within the gap hold fewer than k items
            return within[None]
    return probe_until_k(coarse, sizes, nprobe, k, cosine_gaps(queries, gap))


FLOAT32 = struct.Struct("f")


def _as_float32(value: float) -> float:
    """`value` rounded to float32, as `np.float32(value)` rounds it (a value past float32's range
    becomes its largest value instead of inf: the same threshold against finite scores). struct rounds
    without numpy's scalar machinery, which costs microseconds right after a scan."""
    return FLOAT32.unpack(FLOAT32.pack(max(-FLOAT32_MAX, min(value, FLOAT32_MAX))))[0]


def _probe_one(scores: np.ndarray, sizes: np.ndarray, nprobe: int, k: int, gap: float, take: int):
    """`probe_until_k` for one row of scores, or None where the row needs the general path: a tie among
    the `take` best scores (or at the boundary), or too few candidates in them to hold k. It works on
    the negated scores (ascending is best first) and counts by binary search: each numpy call costs
    about a microsecond here, as much as the arithmetic."""
    if gap > 0:  # the lists within the gap, by one comparison over the row and a sort of those few
        within = probes_within_gap(scores, sizes, nprobe, k, gap)
        if len(within):
            return within
    negated = -scores
    part = np.argpartition(negated, (take - 1, take))  # the take-th and the next one in their places
    if negated[part[take]] == negated[part[take - 1]]:  # a tie at the boundary
        return None
    part = part[:take]
    below = negated[part]
    order = below.argsort()
    below = below[order]
    if (below[1:] == below[:-1]).any():
        return None
    order = part[order]
    held = sizes[order].cumsum()
    if held[-1] < k:
        return None
    enough = min(int(held.searchsorted(k)) + 1, take)  # held is non-decreasing: the count below k
    if gap <= 0:
        return order[: max(nprobe, enough)]
    # scores within gap of the best: -score <= -(best - gap), with best - gap rounded as probe_until_k does
    walked = int(below[:nprobe].searchsorted(-(-below[0] - gap), side="right"))
    return order[: max(walked, enough)]


def _best_first(scores: np.ndarray, take: int) -> np.ndarray:
    """The `take` best columns of each row, best first, equal scores by column (as a stable argsort of
    the row would order them): argpartition reads the row once instead of sorting it."""
    # Plain (rows, columns) indexing, not np.take_along_axis: the same elements, without its index
    # building, which cost more than the partition itself on one query's row (the serving case).
    row = np.arange(len(scores))[:, None]
    part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    values = scores[row, part]
    kth = values.min(1, keepdims=True)
    if ((scores >= kth).sum(1) > take).any():  # a tie at the boundary: only a full sort orders it
        return np.argsort(-scores, axis=1, kind="stable")[:, :take]
    return part[row, _by_score(values, part)]
