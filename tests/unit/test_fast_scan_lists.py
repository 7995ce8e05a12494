"""Partitions held as 4-bit fast-scan codes (`index/learned/fast_scan.py`): appends and removals keep
the packed lists equal to a bulk build, scans stay inside the probed lists and the eligible items,
and the estimates rank well enough for an exact refine to find the true best."""

import numpy as np
import pytest

from recindex.index.learned.fast_scan import FastScanLists, subquantizers

DIM, LISTS, N = 16, 20, 3000
RNG = np.random.default_rng(0)
VECTORS = RNG.standard_normal((N, DIM)).astype(np.float32)
LIST_OF = RNG.integers(0, LISTS, N)
QUERIES = RNG.standard_normal((6, DIM)).astype(np.float32)


def bulk(keep=None) -> FastScanLists:
    lists = FastScanLists(DIM, 32)
    lists.train(VECTORS, LIST_OF)
    keep = np.arange(N) if keep is None else keep
    lists.add(keep, VECTORS[keep], LIST_OF[keep])
    return lists


def same_results(a: FastScanLists, b: FastScanLists, probes, depth=50, eligible=None) -> None:
    sa, ia = a.search(QUERIES, depth, probes, eligible)
    sb, ib = b.search(QUERIES, depth, probes, eligible)
    np.testing.assert_array_equal(np.sort(ia, 1), np.sort(ib, 1))
    np.testing.assert_allclose(np.sort(sa, 1), np.sort(sb, 1), atol=1e-5)


def test_appends_of_any_size_pack_the_same_lists_as_one_bulk_add():
    reference = bulk()
    grown = FastScanLists(DIM, 32)
    grown.restore(reference.state())
    start = 0
    while start < N:  # batches that end anywhere inside a block of 32 codes
        stop = min(N, start + int(RNG.integers(1, 70)))
        grown.add(np.arange(start, stop), VECTORS[start:stop], LIST_OF[start:stop])
        start = stop
    probes = np.tile(np.arange(LISTS), (len(QUERIES), 1))
    same_results(reference, grown, probes)
    np.testing.assert_array_equal(grown.sizes, reference.sizes)


def test_removal_equals_never_adding():
    lists = bulk()
    removed = RNG.choice(N, 500, replace=False)
    lists.remove(removed, LIST_OF[removed])
    kept = bulk(np.setdiff1d(np.arange(N), removed))
    probes = np.tile(np.arange(LISTS), (len(QUERIES), 1))
    same_results(lists, kept, probes)
    assert lists.sizes.sum() == N - 500
    _, found = lists.search(QUERIES, 200, probes)
    assert not np.isin(found, removed).any()


def test_a_scan_reads_only_probed_lists_and_eligible_items():
    lists = bulk()
    probes = np.tile(np.arange(LISTS), (len(QUERIES), 1))
    probes[:, 5:] = -1  # fewer probes than columns
    _, found = lists.search(QUERIES, 100, probes)
    assert np.isin(LIST_OF[found[found >= 0]], np.arange(5)).all()
    eligible = np.arange(N) % 3 == 0
    scores, found = lists.search(QUERIES, 100, probes, eligible)
    assert (found[found >= 0] % 3 == 0).all()
    assert np.isneginf(scores[found < 0]).all()


def test_estimates_carry_the_ranking_an_exact_refine_needs():
    lists = bulk()
    everything = np.arange(LISTS)[None, :].repeat(len(QUERIES), 0)
    _, found = lists.search(QUERIES, N, everything)  # depth past the items: every item, once
    assert all(len(np.unique(row[row >= 0])) == N for row in found)
    _, shortlist = lists.search(QUERIES, 100, everything)  # the 100 best estimates of 3,000
    truth = np.argsort(-(QUERIES @ VECTORS.T), axis=1)[:, :10]
    found_top10 = np.mean([np.isin(t, s).mean() for t, s in zip(truth, shortlist, strict=True)])
    assert found_top10 >= 0.9  # random codes would find 100 / 3000 of them


def test_state_restores_the_same_codes_and_checks_its_shape():
    reference = bulk()
    again = FastScanLists(DIM, 32)
    again.restore(reference.state())
    again.add(np.arange(N), VECTORS, LIST_OF)
    same_results(reference, again, np.tile(np.arange(LISTS), (len(QUERIES), 1)))
    with pytest.raises(ValueError, match="centroid"):
        FastScanLists(32, 32).restore(reference.state())


def test_sub_quantizers_divide_the_dimension():
    assert subquantizers(64) == 64  # one 4-bit code per dimension by default
    assert subquantizers(64, 2) == 32
    assert subquantizers(15, 3) == 5
    assert FastScanLists(16, 8, code_dims=2).code_size == 4  # 8 codes of 4 bits
    for wrong in (3, 0, -2, 1.5, True):
        with pytest.raises(ValueError, match="divisor"):
            FastScanLists(16, 8, code_dims=wrong)
