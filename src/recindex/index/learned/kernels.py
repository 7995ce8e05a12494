"""Compiled loops (numba) of a partitioned index's query path, where numpy's per-call cost is the cost.

One query of CI's compressed lists at a million items spends about half its time in FAISS's fast-scan
and most of the rest in a dozen small numpy calls around it: the probed lists' biases, the probes
within the gap, the shortlist's exact scores and their k best. Each does a microsecond of arithmetic,
but pays several microseconds of dispatch and temporaries, more after the scan, which evicts numpy's
working set from the caches. No library fuses these steps (they are this index's own routing and
rescore), so they are written here as plain loops, compiled once per process (`cache=True` keeps the
machine code on disk between processes).

One query and a batch get the same bits from these steps because both paths call the same kernels:
`inner_products` is the only place where a rescore's exact scores and a list's bias are summed, and
`squared_norms` the only place where a query's norm (its probe gap) is. Their sums are reassociated
(`fastmath` with `reassoc` only, so no assumption about infinities or NaNs) so that they vectorise; a
score may differ from numpy's matrix product in its last bit, never between a query asked alone and
the same query in a batch. (The lists' coarse scores stay a BLAS product, whose sums may differ in a
last bit between one query and a batch.)
"""

from __future__ import annotations

import math

import numba
import numpy as np

SUMS = {"reassoc", "contract"}  # reassociate and fuse the sums (vectorised), nothing else relaxed
FLOAT32_MAX = float(np.finfo(np.float32).max)


def compiled(**options):
    """`numba.njit`, with the machine code cached on disk where numba finds a writable place for it
    (beside this file, or the user's cache folder), else compiled afresh in each process: numba
    refuses `cache=True` outright on a read-only install run by a user without a home folder."""

    def wrap(function):
        try:
            return numba.njit(cache=True, nogil=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(nogil=True, **options)(function)

    return wrap


@compiled(fastmath=SUMS)
def inner_products(queries: np.ndarray, rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(n, D) float32: each query's inner product with the `rows` its (n, D) candidates name; -inf
    where a candidate is -1."""
    n, width = candidates.shape
    dim = queries.shape[1]
    out = np.empty((n, width), np.float32)
    for i in range(n):
        query = queries[i]
        for j in range(width):
            slot = candidates[i, j]
            if slot < 0:
                out[i, j] = -np.inf
                continue
            row = rows[slot]
            total = np.float32(0.0)
            for d in range(dim):
                total += query[d] * row[d]
            out[i, j] = total
    return out


def list_biases(queries: np.ndarray, references: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """(n, p) float32: each query's inner product with the reference vector of each list it probes,
    the bias a compressed list's estimates are offset by: `inner_products` over the references, so a
    bias has the same bits wherever it is summed.

    A padded probe (-1, past a row's last list) is given its row's first bias, not a value of its
    own: FAISS skips the list but quantizes the estimates over the range of the row's biases, so a
    value outside that range (0, say) would change the row's estimates, and a query's answer would
    depend on how wide the batch it came in was padded. (0 where a row probes no list at all.)"""
    biases = inner_products(queries, references, probes)
    padded = probes < 0
    if padded.any():
        first = np.where(padded[:, :1], np.float32(0.0), biases[:, :1])
        biases[padded] = np.broadcast_to(first, biases.shape)[padded]
    return biases


@compiled()
def probes_within_gap(scores: np.ndarray, sizes: np.ndarray, nprobe: int, k: int, gap: float) -> np.ndarray:
    """One query's lists scoring within `gap` of its best (the threshold best - gap in float32), best
    first, equal scores by list number, at most `nprobe` of them; empty where they hold fewer than k
    items (the caller then walks further lists its general way)."""
    threshold = scores.max() - np.float32(gap)
    within = np.flatnonzero(scores >= threshold)  # ascending list numbers, which the stable sort
    # below keeps for equal scores
    order = within[np.argsort(-scores[within], kind="mergesort")[:nprobe]]
    held = 0
    for number in order:
        held += sizes[number]
    if held < k:
        return order[:0]
    return order


@compiled(fastmath=SUMS)
def rescore_one(query: np.ndarray, rows: np.ndarray, candidates: np.ndarray, k: int):
    """One (1, d) query's k best of its (1, D) candidates (D > k distinct slots, none -1) by exact inner
    product: ((1, k) slots, (1, k) scores), best first; empty (1, 0) arrays where the order needs the
    general path's tie rule or its handling of what is not finite: equal scores among the k + 1 best,
    or any score that is not finite. The scores are `inner_products`' (the same compiled sum, so the
    same bits).

    The k + 1 best are kept by insertion, not by sorting all D: the shortlist comes ordered by its
    estimates, so most candidates past the first k fall below the k + 1 kept at one comparison; and
    the loop is a few hundred bytes of machine code, where a sort's is kilobytes that the scan before
    it has evicted from the caches (about 3 us a query at 1M items, in a scratch timing)."""
    values = inner_products(query, rows, candidates)[0]
    keep = k + 1
    order = np.empty(keep, np.int64)  # positions in `candidates`, best first
    held = 0
    for i in range(values.shape[0]):
        value = values[i]
        if not np.isfinite(value):
            return candidates[:, :0].copy(), values[:0].reshape(1, 0).copy()
        if held == keep:
            if not value > values[order[keep - 1]]:
                continue
            place = keep - 1  # the last kept one makes way
        else:
            place = held
            held += 1
        while place > 0 and values[order[place - 1]] < value:
            order[place] = order[place - 1]
            place -= 1
        order[place] = i
    for i in range(k):
        if values[order[i]] == values[order[i + 1]]:
            return candidates[:, :0].copy(), values[:0].reshape(1, 0).copy()
    slots = np.empty((1, k), np.int64)
    scores = np.empty((1, k), np.float32)
    for i in range(k):
        slots[0, i] = candidates[0, order[i]]
        scores[0, i] = values[order[i]]
    return slots, scores


@compiled()
def codes_probed(sizes: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """(n,) int64: how many codes each query's probed lists hold together; -1 for a row with a -1
    probe (a padded place, which FAISS would read as a list number)."""
    held = np.zeros(probes.shape[0], np.int64)
    for i in range(probes.shape[0]):
        for number in probes[i]:
            if number < 0:
                held[i] = -1
                break
            held[i] += sizes[number]
    return held


@compiled()
def ids_of_slots(ids: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """The item ids of (n, k) slots, -1 where a slot is -1 (a padded place in a result)."""
    out = np.empty(slots.shape, np.int64)
    for i in range(slots.shape[0]):
        for j in range(slots.shape[1]):
            slot = slots[i, j]
            out[i, j] = ids[slot] if slot >= 0 else -1
    return out


@compiled()
def all_finite(values: np.ndarray) -> bool:
    """Whether every value of a (n, d) matrix is finite: one pass and no temporary (numpy's
    `isfinite(...).all()` is two calls, each several microseconds right after a scan)."""
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if not np.isfinite(values[i, j]):
                return False
    return True


@compiled(fastmath=SUMS)
def squared_norm(vector: np.ndarray) -> np.float32:
    """A vector's inner product with itself: the one sum behind every probe gap."""
    total = np.float32(0.0)
    for d in range(vector.shape[0]):
        total += vector[d] * vector[d]
    return total


@compiled()
def squared_norms(queries: np.ndarray) -> np.ndarray:
    """(n,) float32: each query's inner product with itself (the same compiled sum for one query and
    for a batch, so a query's probe gap does not depend on the batch it came in)."""
    out = np.empty(queries.shape[0], np.float32)
    for i in range(queries.shape[0]):
        out[i] = squared_norm(queries[i])
    return out


@compiled()
def probes_within_cosine_gap(
    scores: np.ndarray, query: np.ndarray, sizes: np.ndarray, nprobe: int, k: int, gap: float
) -> np.ndarray:
    """`probes_within_gap` for one query whose gap is in cosine units: gap x |query| in inner product,
    rounded to float32 as `candidates.cosine_gaps` and `probe_until_k` round it. One call where the
    serving path made four, each costing more than its arithmetic right after a scan."""
    width = min(gap * math.sqrt(np.float64(squared_norm(query))), FLOAT32_MAX)
    return probes_within_gap(scores, sizes, nprobe, k, np.float32(width))


_warm = False


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel for the types a search passes, once per
    process: a partitioned index calls it when it is made, so that its first query does not wait for
    the compiler (seconds on a fresh install, half a second from the cache)."""
    global _warm
    if _warm:
        return
    queries, rows = np.zeros((1, 2), np.float32), np.zeros((4, 2), np.float32)
    slots, sizes = np.arange(4, dtype=np.int64)[None], np.ones(4, np.int64)
    inner_products(queries, rows, slots)
    probes_within_gap(rows[:, 0].copy(), sizes, 2, 1, 0.1)
    rescore_one(queries, rows, slots, 2)
    codes_probed(sizes, slots)
    ids_of_slots(sizes, slots)
    all_finite(queries)
    squared_norms(queries)
    probes_within_cosine_gap(rows[:, 0].copy(), queries[0], sizes, 2, 1, 0.1)
    _warm = True
