"""A learned index's one-query paths and the probe gap: the same answers as the batched definitions.

The serving path routes and rescores one query in compiled loops (`_probe_one`, `kernels.rescore_one`) and
skips `BaseIndex.search`'s conversions (`_lean`); each must give what the general path gives, ties
included. `gap` walks fewer of the nprobe lists where their scores fall away from the best one's.
"""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.learned.candidates import (
    cosine_gaps,
    probe_until_k,
    probes_within_cosine,
    rescore_top_k,
)
from recindex.index.learned.compressed import CompressedPartitions
from recindex.index.learned.kernels import probes_within_cosine_gap
from recindex.sci.index import CIIndex


def _probes_by_definition(scores, sizes, nprobe, k, gap=0.0):
    """A stable sort of each whole row; of its nprobe best, those within gap of the best (gap > 0); then
    as many as hold k."""
    order = np.argsort(-scores, axis=1, kind="stable")
    held = np.cumsum(sizes[order], axis=1)
    enough = np.minimum((held < k).sum(1) + 1, order.shape[1])
    ranked = np.take_along_axis(scores, order, axis=1)[:, :nprobe]
    walked = (ranked >= ranked[:, :1] - np.float32(gap)).sum(1) if gap > 0 else nprobe
    count = np.maximum(walked, enough)
    probes = order[:, : int(count.max())].copy()
    probes[np.arange(probes.shape[1])[None, :] >= count[:, None]] = -1
    return probes


@pytest.mark.parametrize("gap", [0.0, 0.3, 1.0, 100.0])
def test_one_query_probes_equal_the_definition_with_a_gap_ties_and_short_lists(gap):
    rng = np.random.default_rng(11)
    scores = rng.standard_normal((30, 300)).astype(np.float32)
    scores[:10] = np.round(scores[:10], 1)  # ties, some at the selection's boundary
    sizes = rng.integers(0, 4, 300)
    for nprobe, k in ((1, 1), (8, 10), (8, 400), (40, 50)):
        expected = _probes_by_definition(scores, sizes, nprobe, k, gap)
        np.testing.assert_array_equal(probe_until_k(scores, sizes, nprobe, k, gap), expected)
        for row in range(len(scores)):
            one = probe_until_k(scores[row : row + 1], sizes, nprobe, k, gap)[0]
            np.testing.assert_array_equal(one, expected[row][expected[row] >= 0])


def test_a_gap_per_row_applies_to_its_row_and_a_wide_gap_is_no_gap():
    rng = np.random.default_rng(12)
    scores = rng.standard_normal((4, 200)).astype(np.float32)
    sizes = np.full(200, 5)
    gaps = np.array([0.0, 0.2, 1.0, 50.0], np.float32)
    probes = probe_until_k(scores, sizes, 32, 10, gaps)
    for row, gap in enumerate(gaps):
        alone = _probes_by_definition(scores[row : row + 1], sizes, 32, 10, float(gap))[0]
        np.testing.assert_array_equal(probes[row][probes[row] >= 0], alone)
    walked = (probes >= 0).sum(1)
    assert walked[0] == walked[3] == 32 and 2 <= walked[1] < walked[2] < 32


def _one_call(query, centroids, sizes, nprobe, k, gap):
    """The serving path's compiled call alone: its probes, or None where it hands the query on."""
    within = probes_within_cosine_gap((query @ centroids.T)[0], query[0], sizes, nprobe, k, gap)
    return within[None] if len(within) else None


@pytest.mark.parametrize("gap", [0.05, 0.3, 2.0])
def test_one_query_probes_in_one_compiled_call_equal_the_general_route(gap):
    """The serving path's lists within a cosine gap (`kernels.probes_within_cosine_gap`: the query's
    norm, the gap and the lists in one kernel) are `probe_until_k`'s for the same coarse scores, ties
    included; where it finds too few items within the gap, `probes_within_cosine` hands the query to
    `probe_until_k`, so the entry always answers as the general route does."""
    rng = np.random.default_rng(15)
    centroids = unit(rng.standard_normal((300, 16)))
    centroids[50:60] = centroids[0]  # equal scores, ordered by list number
    sizes = rng.integers(0, 4, 300)
    queries = (3 * rng.standard_normal((30, 16))).astype(np.float32)
    answered = 0
    for nprobe, k in ((1, 1), (8, 10), (8, 400), (40, 50), (300, 20)):
        for query in queries[:, None]:
            one = _one_call(query, centroids, sizes, nprobe, k, gap)
            general = probe_until_k(query @ centroids.T, sizes, nprobe, k, cosine_gaps(query, gap))
            entry = probes_within_cosine(query @ centroids.T, query, sizes, nprobe, k, gap)
            np.testing.assert_array_equal(entry, general)
            if one is not None:
                np.testing.assert_array_equal(one, general)
                answered += 1
            else:
                assert sizes[general[0][general[0] >= 0]].sum() >= k  # the general path walked further
    assert answered >= 20  # of 150: the one-call path answered, and was checked, that often
    coarse = queries[:1] @ centroids.T  # no gap: the general route
    np.testing.assert_array_equal(
        probes_within_cosine(coarse, queries[:1], sizes, 8, 10, 0.0), probe_until_k(coarse, sizes, 8, 10, 0.0)
    )


def _rescored_by_definition(queries, rows, candidates, k):
    slots = np.full((len(queries), k), -1, np.int64)
    for row, (query, named) in enumerate(zip(queries, candidates, strict=True)):
        values = rows[named] @ query
        order = np.lexsort((named, -values))[:k]
        slots[row, : len(order)] = named[order]
    return slots


@pytest.mark.parametrize("coarse", [False, True])
def test_one_query_rescoring_equals_the_definition_with_and_without_ties(coarse):
    rng = np.random.default_rng(13)
    rows = rng.standard_normal((500, 8)).astype(np.float32)
    if coarse:
        rows = np.round(rows, 0)  # many equal scores: the one-row path must hand them over
        rows[100:140] = rows[0]
    queries = np.round(rng.standard_normal((20, 8)), 0 if coarse else 3).astype(np.float32)
    candidates = np.stack([rng.choice(500, 60, replace=False) for _ in range(20)])
    expected = _rescored_by_definition(queries, rows, candidates, 10)
    for row in range(len(queries)):
        slots, scores = rescore_top_k(queries[row : row + 1], rows, candidates[row : row + 1], 10)
        np.testing.assert_array_equal(slots[0], expected[row])
        assert slots.dtype == np.int64 and scores.dtype == np.float32 and np.all(np.diff(scores[0]) <= 0)


def test_one_query_rescoring_breaks_a_tie_at_the_kth_score_by_slot():
    """The k best are distinct but the k-th ties with the next one: the lower slot takes the place."""
    rows = np.arange(40, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    rows[7] = rows[9]  # slots 7 and 9 score the same, ninth and tenth best of slots 0..39 from the top
    candidates = np.array([[39, 38, 37, 36, 35, 34, 33, 32, 9, 7, 1, 2]])  # 9 named before 7
    query = np.ones((1, 4), np.float32)
    expected = _rescored_by_definition(query, rows, candidates, 9)
    slots, _ = rescore_top_k(query, rows, candidates, 9)
    np.testing.assert_array_equal(slots, expected)
    assert slots[0, -1] == 7


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def ci():
    rng = np.random.default_rng(14)
    centres = unit(rng.standard_normal((20, 16)))
    items = unit(centres[rng.integers(0, 20, 3000)] + 0.3 * rng.standard_normal((3000, 16)))
    index = CIIndex(16, "ip", nlist=64, levels=0, compress="pq4")
    index.add(np.arange(3000), items)
    queries = unit(centres[rng.integers(0, 20, 40)] + 0.3 * rng.standard_normal((40, 16)))
    return index, queries


def test_a_gap_walks_fewer_lists_in_cosine_units_whatever_the_query_scale(ci):
    index, queries = ci
    full = index.search(queries, 20, params={"nprobe": 32})
    narrow = index.search(queries, 20, params={"nprobe": 32, "gap": 0.1})
    assert narrow.scored.mean() < 0.7 * full.scored.mean()
    scaled = index.search(8 * queries, 20, params={"nprobe": 32, "gap": 0.1})
    np.testing.assert_array_equal(scaled.ids, narrow.ids)  # the same lists at any query norm
    wide = index.search(queries, 20, params={"nprobe": 32, "gap": 3.0})  # cosines differ by at most 2
    np.testing.assert_array_equal(wide.ids, full.ids)
    np.testing.assert_array_equal(index.search(queries, 20, params={"nprobe": 32, "gap": 0}).ids, full.ids)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "0.1", None])
def test_a_bad_gap_is_refused(ci, bad):
    index, queries = ci
    with pytest.raises(InvalidRequest, match="gap must be a finite number >= 0"):
        index.search(queries[:1], 5, params={"gap": bad})


def test_the_lean_entry_answers_as_the_checked_path_and_leaves_errors_to_it(ci):
    index, queries = ci
    history = [np.arange(row, row + 30) for row in range(len(queries))]
    for params in (None, {"nprobe": 8, "gap": 0.05}):
        lean = [
            index.search(q[None], 10, params=params, exclude=[h])
            for q, h in zip(queries, history, strict=True)
        ]
        checked = [  # a float64 list takes the checked path, converted there
            index.search(q[None].astype(np.float64).tolist(), 10, params=params, exclude=[h])
            for q, h in zip(queries, history, strict=True)
        ]
        for a, b in zip(lean, checked, strict=True):
            np.testing.assert_array_equal(a.ids, b.ids)
    for a, h in zip(lean, history, strict=True):
        assert not np.isin(a.ids[0], h).any()
    bad = queries[:1].copy()
    bad[0, 3] = np.nan
    with pytest.raises(InvalidRequest, match="NaN or inf"):
        index.search(bad, 10)
    with pytest.raises(InvalidRequest, match="one id list per query"):
        index.search(queries[:2], 10, exclude=[[1]])
    with pytest.raises(InvalidRequest, match="unknown search parameters"):
        index.search(queries[:1], 10, params={"beam": 3})


def test_a_list_exactly_gap_below_the_best_is_walked():
    scores = np.concatenate([[1.0, 0.75, 0.5, 0.25], -np.arange(1, 37) / 8]).astype(np.float32)[None]
    sizes = np.full(40, 10)
    np.testing.assert_array_equal(probe_until_k(scores, sizes, 5, 1, 0.5)[0], [0, 1, 2])
    np.testing.assert_array_equal(probe_until_k(np.repeat(scores, 2, 0), sizes, 5, 1, 0.5)[1], [0, 1, 2])


def test_one_query_of_the_compressed_lists_answers_as_their_general_path(ci, monkeypatch):
    """`CompressedPartitions._ranked_one` (the serving case) against `ranked`'s general path for the
    same single query, on an index holding copies of items (equal scores in the rescore)."""
    index, queries = ci
    copies = CIIndex(16, "ip", nlist=64, levels=0, compress="pq4")
    items = np.concatenate([index.store.rows[: len(index)], index.store.rows[:300]])
    copies.add(np.arange(len(items)), items)
    settings = (
        {"fine": "pq4", "nprobe": 8, "refine": 2},
        {"fine": "pq4", "nprobe": 32, "refine": 3, "gap": 0.1},
    )
    for built in (index, copies):
        fast = [[built.search(q[None], 10, params=p) for q in queries] for p in settings]
        monkeypatch.setattr(CompressedPartitions, "_ranked_one", lambda *args: None)
        general = [[built.search(q[None], 10, params=p) for q in queries] for p in settings]
        monkeypatch.undo()
        for a, b in zip(sum(fast, []), sum(general, []), strict=True):
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)
            np.testing.assert_array_equal(a.scored, b.scored)


def test_a_query_gets_the_same_estimates_alone_and_in_a_batch_padded_to_other_rows_lists(ci):
    """With a gap, rows of a batch walk different numbers of lists and the shorter ones are padded (-1).
    The 4-bit estimates are quantized over the range of a row's list biases, so a padded place must not
    widen that range: each row gets the estimates, to the bit, and so the answer of the query alone."""
    index, queries = ci
    params = {"fine": "pq4", "nprobe": 32, "refine": 2, "gap": 0.05}
    resolved = index.resolve_params(params)
    lists = index._compressed.lists
    probes = index._route(queries, 10, resolved, None).probes
    walked = (probes >= 0).sum(1)
    assert walked.min() < walked.max()  # the batch is padded
    scores, slots = lists.search(queries, 20, probes)
    for row in np.flatnonzero(walked < walked.max()):
        own = probes[row : row + 1, : walked[row]]
        alone_scores, alone_slots = lists.search(queries[row : row + 1], 20, own)
        np.testing.assert_array_equal(alone_slots[0], slots[row])
        np.testing.assert_array_equal(alone_scores[0].view(np.int32), scores[row].view(np.int32))
    batch = index.search(queries, 10, params=params)
    for row, query in enumerate(queries):
        alone = index.search(query[None], 10, params=params)
        np.testing.assert_array_equal(alone.ids[0], batch.ids[row])
        np.testing.assert_array_equal(alone.scores[0].view(np.int32), batch.scores[row].view(np.int32))
