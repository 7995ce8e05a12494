"""The compiled loops of a partitioned index's query path (`index/learned/kernels.py`).

Their sums are reassociated, so a score may differ from numpy's matrix product in its last bit; what
must hold exactly is that a query asked alone and the same query in a batch get the same bits (both
paths sum in the same kernel), and that the padding conventions (-1 probes and slots) are kept.
"""

import numpy as np

from recindex.index.learned.candidates import rescore_top_k
from recindex.index.learned.kernels import codes_probed, ids_of_slots, inner_products, list_biases
from recindex.index.learned.store import RowStore


def _data(seed=3, n_rows=500, dim=48, queries=12, width=150):
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n_rows, dim)).astype(np.float32)
    qs = rng.standard_normal((queries, dim)).astype(np.float32)
    candidates = np.stack([rng.choice(n_rows, width, replace=False) for _ in range(queries)]).astype(np.int64)
    return rows, qs, candidates


def test_inner_products_are_the_matrix_product_and_minus_inf_where_a_candidate_is_missing():
    rows, qs, candidates = _data()
    candidates[3, 100:] = -1
    got = inner_products(qs, rows, candidates)
    expected = np.einsum("nkd,nd->nk", rows[np.maximum(candidates, 0)], qs)
    present = candidates >= 0
    np.testing.assert_allclose(got[present], expected[present], rtol=1e-5, atol=1e-5)
    assert np.isneginf(got[~present]).all()


def test_a_query_alone_and_in_a_batch_get_the_same_slots_and_score_bits():
    rows, qs, candidates = _data(width=300)
    batch_slots, batch_scores = rescore_top_k(qs, rows, candidates, 100)
    for i in range(len(qs)):  # one row goes through the one-query kernel (`rescore_one`)
        slots, scores = rescore_top_k(qs[i : i + 1], rows, candidates[i : i + 1], 100)
        np.testing.assert_array_equal(slots[0], batch_slots[i])
        np.testing.assert_array_equal(scores[0].view(np.int32), batch_scores[i].view(np.int32))


def test_the_rescore_orders_by_exact_score_best_first():
    rows, qs, candidates = _data(width=300)
    slots, scores = rescore_top_k(qs[:1], rows, candidates[:1], 20)
    exact = rows[candidates[0]] @ qs[0]
    expected = candidates[0][np.argsort(-exact)[:20]]
    np.testing.assert_array_equal(slots[0], expected)
    assert (np.diff(scores[0]) <= 0).all()


def test_a_padded_probe_takes_its_rows_first_bias_and_a_row_without_lists_zero():
    rows, qs, _ = _data()
    probes = np.array([[4, 7, -1, -1], [0, 1, 2, 3], [-1, -1, -1, -1]], np.int64)
    got = list_biases(qs[:3], rows, probes)
    np.testing.assert_allclose(got[0, :2], rows[[4, 7]] @ qs[0], rtol=1e-5, atol=1e-5)
    assert (got[0, 2:] == got[0, 0]).all()  # inside the row's range: FAISS quantizes over it
    np.testing.assert_allclose(got[1], rows[:4] @ qs[1], rtol=1e-5, atol=1e-5)
    assert (got[2] == 0).all()


def test_codes_probed_counts_each_row_and_flags_a_padded_probe():
    sizes = np.array([5, 0, 7, 11], np.int64)
    probes = np.array([[0, 2, 3], [3, -1, 0], [1, 1, 1]], np.int64)
    np.testing.assert_array_equal(codes_probed(sizes, probes), [23, -1, 0])


def test_ids_of_keeps_minus_one_for_padded_places():
    store = RowStore(4)
    store.upsert(np.array([40, 10, 30]), np.eye(3, 4, dtype=np.float32), None)
    slots = store.table.lookup(np.array([10, 30, 40]))
    result = np.array([[slots[0], -1], [slots[2], slots[1]]], np.int64)
    np.testing.assert_array_equal(store.ids_of(result), [[10, -1], [40, 30]])
    np.testing.assert_array_equal(ids_of_slots(store.table.ids, result), [[10, -1], [40, 30]])
