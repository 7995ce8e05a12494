"""The learned indexes' base on its own: the row store, batched rescoring, filters, history masking, the
filtered fallback and the partitions view, through a toy index that places an item in the list of its
nearest of a few fixed centres and routes a query to its `nprobe` nearest centres."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.base import read_index_manifest
from recindex.index.exact_index import ExactIndex
from recindex.index.learned import Column, Lists, PartitionedIndex, Route, RowStore, number_codes, rank
from recindex.index.learned import candidates as candidates_module
from recindex.index.learned.candidates import probe_until_k

DIM, LISTS = 8, 6
CENTRES = np.random.default_rng(42).standard_normal((LISTS, DIM)).astype(np.float32)


class ToyIndex(PartitionedIndex):
    backend = "toy"
    default_search_params = {"nprobe": 2}

    def __init__(self, dim: int = DIM, metric="ip", search_params=None):
        super().__init__(dim, metric, search_params, {"list": Column(1, np.int64, -1, "list.npy")})
        self._lists: Lists | None = None

    def _placement(self, ids, vectors):
        if (ids == 666).any():
            raise InvalidRequest("item 666 cannot be placed")
        return np.argmax(vectors @ CENTRES.T, axis=1)

    def _place(self, slots, new, vectors, placement):
        self.store.columns["list"][slots, 0] = placement
        self._lists = None

    def _compacted(self, keep):
        self._lists = None

    def _route(self, queries, k, params, eligible):
        if self._lists is None:
            self._lists = Lists.of(self.store.columns["list"][: self.table.used, 0], LISTS)
        probes = np.argsort(-(queries @ CENTRES.T), axis=1, kind="stable")[:, : params["nprobe"]]
        return Route(probes, self._lists)

    def _slot_partitions(self, live):
        return {"lists": self.store.columns["list"][live, 0]}

    def _save_state(self, folder: Path) -> dict:
        return {}

    @classmethod
    def _restore(cls, folder: Path, manifest: dict) -> ToyIndex:
        return cls(manifest["dim"], manifest["metric"])


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


RNG = np.random.default_rng(0)
ITEMS = unit(RNG.standard_normal((800, DIM)))
QUERIES = unit(RNG.standard_normal((40, DIM)))
IDS = np.arange(800) * 3 + 5  # ids that are not slots
COLOUR = [["red", "green", "blue", "grey"][i % 4] for i in range(800)]


def toy(**params) -> ToyIndex:
    index = ToyIndex(search_params=params or None)
    index.add(IDS, ITEMS, attributes={"colour": COLOUR})
    return index


def exact() -> ExactIndex:
    index = ExactIndex(DIM)
    index.add(IDS, ITEMS, attributes={"colour": COLOUR})
    return index


def same(found, expected) -> None:
    np.testing.assert_array_equal(found.ids, expected.ids)
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-5, atol=1e-6)


# ---- the row store -------------------------------------------------------------------------------


def test_the_store_grows_its_columns_with_the_rows_and_keeps_a_replaced_items_slot():
    store = RowStore(4, {"code": Column(2, np.int32, -1, "code.npy")})
    vectors = RNG.standard_normal((1500, 4)).astype(np.float32)
    slots, new = store.upsert(np.arange(1000), vectors[:1000], None)
    assert new.all() and len(store.rows) == len(store.columns["code"]) >= 1000
    store.columns["code"][slots] = np.stack([slots, -slots], 1)
    slots, new = store.upsert(np.arange(900, 1500), vectors[900:], None)  # 100 replaced, 500 new
    assert not new[:100].any() and new[100:].all()
    np.testing.assert_array_equal(slots[:100], np.arange(900, 1000))  # replaced items keep their slot
    assert len(store.rows) == len(store.columns["code"]) >= 1500
    assert (store.columns["code"][1000:1500] == -1).all()  # never written: the fill value
    np.testing.assert_array_equal(store.vectors_of(np.arange(1500)), vectors)


def test_compaction_moves_rows_and_columns_together(tmp_path):
    store = RowStore(4, {"code": Column(1, np.int64, 0, "code.npy")})
    vectors = RNG.standard_normal((50, 4)).astype(np.float32)
    ids = np.arange(50) * 10
    slots, _ = store.upsert(ids, vectors, {"n": list(range(50))})
    store.columns["code"][slots, 0] = ids + 1
    store.kill(ids[::2])
    keep = store.compact()
    assert store.table.dead == 0 and len(store) == 25
    np.testing.assert_array_equal(keep, np.arange(1, 50, 2))
    np.testing.assert_array_equal(store.table.ids[:25], ids[1::2])
    np.testing.assert_array_equal(store.rows[:25], vectors[1::2])
    np.testing.assert_array_equal(store.columns["code"][:25, 0], ids[1::2] + 1)
    assert store.table.attributes.rows(np.arange(25))["n"] == list(range(1, 50, 2))
    store.save(tmp_path)
    loaded = RowStore.load(tmp_path, 4, store.specs)
    np.testing.assert_array_equal(loaded.vectors_of(ids[1::2]), vectors[1::2])
    np.testing.assert_array_equal(loaded.columns["code"][:, 0], ids[1::2] + 1)
    np.save(tmp_path / "code.npy", np.zeros((3, 1), np.int64))
    with pytest.raises(InvalidRequest, match="code.npy has shape"):
        RowStore.load(tmp_path, 4, store.specs)


def test_codes_are_numbered_as_mixed_radix_numbers():
    codes = np.array([[1, 2, 3], [0, 0, 1], [3, 3, 3]])
    np.testing.assert_array_equal(number_codes(codes, 4), [1 * 16 + 2 * 4 + 3, 1, 63])
    np.testing.assert_array_equal(number_codes(codes, [9, 5, 7]), [1 * 35 + 2 * 7 + 3, 1, 3 * 35 + 3 * 7 + 3])
    np.testing.assert_array_equal(number_codes(codes[:, :0], 4), [0, 0, 0])  # the empty prefix


# ---- batched rescoring ---------------------------------------------------------------------------


def brute_force(queries, rows, probes, lists, k, eligible):
    """Each query's top k over the members of its probes, one query at a time (the reference)."""
    ids = np.full((len(queries), k), -1)
    for q, row in enumerate(probes):
        members = np.unique(
            np.concatenate([lists.members[lists.offsets[p] : lists.offsets[p + 1]] for p in row[row >= 0]])
        )
        members = members[eligible[members]]
        order = np.lexsort((members, -(rows[members] @ queries[q])))[:k]
        ids[q, : len(order)] = members[order]
    return ids


@pytest.mark.parametrize("overlapping", [False, True])
def test_batched_rescoring_is_exact_search_over_the_candidates(overlapping, monkeypatch):
    rows = unit(RNG.standard_normal((500, DIM)))
    queries = unit(RNG.standard_normal((30, DIM)))
    assignment = RNG.integers(0, 10, (500, 2 if overlapping else 1))
    lists = Lists.of(assignment, 10)
    probes = np.stack([RNG.permutation(10)[:4] for _ in range(30)])
    probes[::3, 3] = -1  # some rows probe fewer lists
    eligible = RNG.random(500) < 0.7
    expected = brute_force(queries, rows, probes, lists, 25, eligible)
    score = lambda who, slots: queries[who] @ rows[slots].T  # noqa: E731
    slots, scores, scored = rank(probes, lists, 25, score, eligible=eligible, overlapping=overlapping)
    np.testing.assert_array_equal(slots, expected)
    np.testing.assert_allclose(
        scores[slots >= 0], np.einsum("qkd,qd->qk", rows[slots], queries)[slots >= 0], rtol=1e-5
    )
    for q, row in enumerate(probes):
        held = np.unique(lists.expand(row[None, row >= 0])[0])
        assert scored[q] == eligible[held].sum()
    # one query per call, and blocks of a few rows, give the same answer
    single = [
        rank(
            probes[q : q + 1],
            lists,
            25,
            lambda who, s, q=q: score(who + q, s),
            eligible=eligible,
            overlapping=overlapping,
        )[0][0]
        for q in range(30)
    ]
    np.testing.assert_array_equal(np.stack(single), expected)
    monkeypatch.setattr(candidates_module, "BLOCK_ENTRIES", 300)
    np.testing.assert_array_equal(
        rank(probes, lists, 25, score, eligible=eligible, overlapping=overlapping)[0], expected
    )


def test_equal_scores_come_in_slot_order():
    rows = np.ones((6, 2), np.float32)  # every item scores the same
    lists = Lists.of(np.array([1, 0, 1, 0, 1, 0]), 2)
    score = lambda who, s: np.ones((len(who), 1)) @ rows[s, :1].T  # noqa: E731
    slots, _, _ = rank(np.array([[1, 0], [0, -1]]), lists, 6, score)
    np.testing.assert_array_equal(slots, [[0, 1, 2, 3, 4, 5], [1, 3, 5, -1, -1, -1]])
    # a tie across the k-th place is settled the same way: the lowest slots are kept
    for k in range(1, 6):
        slots, _, _ = rank(np.array([[1, 0], [0, 1]] * 4), lists, k, score)
        assert (slots == np.arange(k)).all()


# ---- the index -----------------------------------------------------------------------------------


def test_probing_every_list_is_exact_search_with_filters_and_history():
    index, reference = toy(nprobe=LISTS), exact()
    same(index.search(QUERIES, 10), reference.search(QUERIES, 10))
    where = 'colour in ["red", "blue"]'
    same(index.search(QUERIES, 10, filter=where), reference.search(QUERIES, 10, filter=where))
    history = [reference.search(QUERIES[i : i + 1], 5).ids[0] for i in range(len(QUERIES))]
    same(index.search(QUERIES, 10, exclude=history), reference.search(QUERIES, 10, exclude=history))


def test_a_short_filtered_row_falls_back_to_every_eligible_item():
    index, reference = toy(nprobe=1), exact()
    allowed = IDS[np.argmax(ITEMS @ CENTRES.T, axis=1) == 0][:12]  # all in list 0
    queries = QUERIES[np.argmax(QUERIES @ CENTRES.T, axis=1) != 0][:5]  # routed elsewhere
    index.count_candidates = True
    found = index.search(queries, 10, filter={"allow_ids": allowed.tolist()})
    same(found, reference.search(queries, 10, filter={"allow_ids": allowed.tolist()}))
    assert (found.scored == len(allowed)).all()
    # without a filter a row keeps what its lists hold (no fallback): exact over those lists
    unfiltered = index.search(queries, 10)
    lists = np.argmax(ITEMS @ CENTRES.T, axis=1)
    for row, query in zip(unfiltered.ids, queries, strict=True):
        assert (lists[np.searchsorted(IDS, row)] == np.argmax(query @ CENTRES.T)).all()


def test_removed_items_are_never_found_and_compaction_keeps_the_answers():
    index = toy(nprobe=LISTS)
    gone = IDS[:300]
    assert index.remove(np.append(gone, 10**9)) == 300
    assert not np.isin(index.search(QUERIES, 20).ids, gone).any()
    index.add(IDS[300:], ITEMS[300:])  # replaced in place: still 500 items
    assert len(index) == 500
    more = np.arange(10**6, 10**6 + 1500)
    index.add(more, unit(RNG.standard_normal((1500, DIM))))
    index.remove(more)  # 1,500 dead slots out of 2,300: compacted
    assert index.table.dead == 0 and len(index) == 500
    reference = ExactIndex(DIM)
    reference.add(IDS[300:], ITEMS[300:])
    same(index.search(QUERIES, 10), reference.search(QUERIES, 10))


def test_a_refused_placement_stores_nothing():
    index = toy()
    with pytest.raises(InvalidRequest, match="666"):
        index.add([1, 666], ITEMS[:2])
    assert len(index) == 800 and index.table.lookup(np.array([1]))[0] == -1


def test_partitions_are_buckets_by_item_id():
    index = toy()
    index.remove(IDS[:2])
    buckets = index.partitions().buckets["lists"]
    assert len(buckets) == IDS.max() + 1
    lists = np.argmax(ITEMS @ CENTRES.T, axis=1)
    np.testing.assert_array_equal(buckets[IDS[2:]], lists[2:])
    assert (buckets[IDS[:2]] == -1).all() and (
        buckets[np.setdiff1d(np.arange(len(buckets)), IDS)] == -1
    ).all()


def test_capabilities_say_what_the_index_does_not_do():
    index = toy()
    caps = index.capabilities
    assert not caps.triggers and not caps.rebuild and not caps.query_views
    with pytest.raises(InvalidRequest, match="no trigger path"):
        index.search_triggers([IDS[0]], 5)
    with pytest.raises(InvalidRequest, match="nothing to rebuild"):
        index.rebuild()


def test_saved_and_loaded_it_answers_the_same(tmp_path):
    index = toy(nprobe=3)
    index.remove(IDS[:10])
    index.save(tmp_path / "toy")
    loaded = ToyIndex.from_manifest(tmp_path / "toy", read_index_manifest(tmp_path / "toy"))
    assert loaded.search_params == {"nprobe": 3} and len(loaded) == 790
    same(
        loaded.search(QUERIES, 10, filter='colour == "grey"'),
        index.search(QUERIES, 10, filter='colour == "grey"'),
    )


def _probes_by_full_sort(scores, sizes, nprobe, k):
    """The definition probe_until_k must keep: a stable sort of each whole row."""
    order = np.argsort(-scores, axis=1, kind="stable")
    held = np.cumsum(sizes[order], axis=1)
    count = np.maximum(nprobe, np.minimum((held < k).sum(1) + 1, order.shape[1]))
    probes = order[:, : int(count.max())].copy()
    probes[np.arange(probes.shape[1])[None, :] >= count[:, None]] = -1
    return probes


def test_probing_by_partial_selection_equals_a_full_sort_with_ties_and_short_rows():
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((40, 300)).astype(np.float32)
    scores[:10] = np.round(scores[:10], 1)  # many ties, some at the selection's boundary
    sizes = rng.integers(0, 4, 300)
    for nprobe, k in ((1, 1), (8, 10), (8, 400), (100, 50), (300, 1)):
        np.testing.assert_array_equal(
            probe_until_k(scores, sizes, nprobe, k), _probes_by_full_sort(scores, sizes, nprobe, k)
        )


def test_probing_one_query_at_a_time_equals_the_batch():
    rng = np.random.default_rng(6)
    scores = rng.standard_normal((12, 300)).astype(np.float32)
    scores[:4] = np.round(scores[:4], 1)  # ties
    sizes = rng.integers(0, 4, 300)
    for nprobe, k in ((8, 10), (100, 50)):
        batch = _probes_by_full_sort(scores, sizes, nprobe, k)
        for row in range(len(scores)):
            one = probe_until_k(scores[row : row + 1], sizes, nprobe, k)[0]
            np.testing.assert_array_equal(one[one >= 0], batch[row][batch[row] >= 0])


def _rescored_by_definition(queries, rows, candidates, k):
    """Best k by exact score, equal scores in slot order, a slot named twice counted once."""
    slots = np.full((len(queries), k), -1, np.int64)
    for row, (query, named) in enumerate(zip(queries, candidates, strict=True)):
        named = np.unique(named[named >= 0])
        values = rows[named] @ query
        order = np.lexsort((named, -values))[:k]
        slots[row, : len(order)] = named[order]
    return slots


@pytest.mark.parametrize("rows_at_once", [1, 7])
def test_rescoring_orders_by_score_then_slot_with_ties_copies_and_short_rows(rows_at_once):
    from recindex.index.learned.candidates import rescore_top_k

    rng = np.random.default_rng(7)
    rows = np.round(rng.standard_normal((60, DIM)), 0).astype(np.float32)  # coarse values: many ties
    rows[30:40] = rows[0]  # copies of one vector: equal scores
    queries = np.round(rng.standard_normal((7, DIM)), 0).astype(np.float32)
    candidates = rng.integers(-1, 60, (7, 25))
    candidates[3, 5:] = -1  # a row short of k
    candidates[4, 10:20] = candidates[4, :10]  # a slot named twice
    expected = _rescored_by_definition(queries, rows, candidates, 10)
    for start in range(0, len(queries), rows_at_once):
        block = slice(start, start + rows_at_once)
        slots, scores = rescore_top_k(queries[block], rows, candidates[block], 10, overlapping=True)
        np.testing.assert_array_equal(slots, expected[block])
        assert slots.dtype == np.int64 and scores.dtype == np.float32
        assert np.all(np.isneginf(scores[slots < 0])) and np.all(np.isfinite(scores[slots >= 0]))
        assert all(np.all(np.diff(row[np.isfinite(row)]) <= 0) for row in scores)
