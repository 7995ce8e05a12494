"""Filling the rows of a URI answer that the beam's leaves leave short of k.

URI's candidates are the items of the `beam` leaves the decoder picks; a narrow beam whose leaves hold
fewer than k items a row may return (once its history is left out) would answer short. Such a row keeps
the beam's answers as they are, in the first places, and only the places left are filled, by continuing
the beam search: the beam is widened (doubled) for the short rows alone, the leaves it reaches beyond the
ones already scored are scored by the ranker, and their best items are appended after the ones already
there; again, until the row is full. Once a wider beam would hold every leaf (or pass `max_width`), every
leaf not scored yet is scored at once: the last resort, which fills a row whenever the catalogue holds
enough items it may return. (A row that a filter or removed items leave short has already been scored
over every eligible item, as in every learned index; the eligible mask is applied here all the same.)

Re-ranking the beam's items together with the further leaves' would change the beam's own answers (the
decoder's routing is part of what URI retrieves, see docs/uri.md), so the further items only ever come
after them. Rows that are full are never touched; a short row scores only the items of the leaves it
adds, and they count in its candidates scored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recindex.index.base import SearchResult
from recindex.index.learned import Lists, rank
from recindex.index.learned.candidates import Scorer

# (batch rows, width) -> (len(rows), width) leaves (places among the tree's leaves) that a beam of that
# width finds for those rows, best first, -1 where it finds fewer
FindLeaves = Callable[[np.ndarray, int], np.ndarray]


def fill_short_rows(
    result: SearchResult,
    need: np.ndarray,
    scored_leaves: np.ndarray,
    beam: int,
    find_leaves: FindLeaves,
    lists: Lists,
    scorer_of: Callable[[np.ndarray], Scorer],
    ids_of: Callable[[np.ndarray], np.ndarray],
    *,
    eligible: np.ndarray | None = None,
    excluded: list[np.ndarray] | None = None,
    max_width: int,
) -> None:
    """Fill, in place, the rows of `result` holding fewer than `need` (Q,) items.

    `scored_leaves`: (Q, B) the leaves each row's candidates came from (-1: none); `scorer_of(rows)`
    scores those rows' queries against slots; `eligible`: the slots a search may return (None: every
    slot in the leaves); `excluded`: each row's slots left out (its history)."""
    short = np.flatnonzero((result.ids >= 0).sum(1) < need)
    visited = scored_leaves[short]
    n_leaves = len(lists.sizes)
    sizes = lists.eligible_sizes(eligible)
    leaf_of = _leaf_of_slots(lists, excluded)
    width = beam
    while len(short):
        width = min(2 * width, n_leaves)
        last = width > max_width  # the last resort: every leaf not scored yet, in no particular order
        if last:
            probes = np.broadcast_to(np.arange(n_leaves), (len(short), n_leaves))
        else:
            probes = find_leaves(short, width)
        probes = np.where(_already_in(probes, visited, n_leaves), -1, probes)
        missing = need[short] - (result.ids[short] >= 0).sum(1)
        if not last:  # the new leaves in the decoder's order, as many as the missing places take
            held = sizes[np.maximum(probes, 0)] * (probes >= 0)
            if excluded:
                held -= _excluded_per_leaf(probes, [leaf_of[excluded[row]] for row in short])
            probes = np.where(np.cumsum(held, 1) - held < missing[:, None], probes, -1)
        _append(result, short, missing, probes, lists, scorer_of(short), ids_of, eligible, excluded)
        if last or width == n_leaves:  # every leaf is reached: the rows are as full as they can be
            return
        still = (result.ids[short] >= 0).sum(1) < need[short]
        short, visited = short[still], np.concatenate([visited, probes], 1)[still]


def _leaf_of_slots(lists: Lists, excluded: list[np.ndarray] | None) -> np.ndarray:
    """The leaf of each slot the leaves hold (-1: none), up to the largest slot named."""
    top = max([int(lists.members.max(initial=-1))] + [int(row.max(initial=-1)) for row in excluded or []])
    leaf_of = np.full(top + 1, -1, np.int64)
    leaf_of[lists.members] = np.repeat(np.arange(len(lists.sizes)), lists.sizes)
    return leaf_of


def _excluded_per_leaf(probes: np.ndarray, excluded_leaves: list[np.ndarray]) -> np.ndarray:
    """(rows, P) how many of each row's excluded items lie in each of its probed leaves."""
    counts = np.zeros(probes.shape, np.int64)
    for row, leaves in enumerate(excluded_leaves):
        if len(leaves):
            counts[row] = (probes[row][:, None] == leaves[None, :]).sum(1) * (probes[row] >= 0)
    return counts


def _already_in(probes: np.ndarray, visited: np.ndarray, n_leaves: int) -> np.ndarray:
    """Whether each row's probe is among that row's visited leaves."""
    rows = np.arange(len(probes))[:, None]
    seen = (rows * n_leaves + visited)[visited >= 0]
    return (probes >= 0) & np.isin(rows * n_leaves + probes, seen)


def _append(result, short, missing, probes, lists, score, ids_of, eligible, excluded) -> None:
    """Score the `short` rows' new leaves and put their best items after the row's own, in order."""
    found = (result.ids[short] >= 0).sum(1)
    longest = max((len(excluded[row]) for row in short), default=0) if excluded else 0
    slots, scores, scored = rank(probes, lists, int(missing.max()) + longest, score, eligible=eligible)
    if result.scored is not None:
        result.scored[short] += scored
    for i, row in enumerate(short):
        keep = slots[i] >= 0
        if excluded:
            keep &= ~np.isin(slots[i], excluded[row])
        new = slots[i][keep][: missing[i]]
        place = slice(found[i], found[i] + len(new))
        result.ids[row, place] = ids_of(new)
        result.scores[row, place] = scores[i][keep][: missing[i]]
