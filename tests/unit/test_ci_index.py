"""The `ci` index: lists formed and routed in the query view, items scored in the item view."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.exact_index import ExactIndex
from recindex.pipelines.indexes import load_index, make_index
from recindex.sci.index import CIIndex, default_nlist


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def views():
    rng = np.random.default_rng(0)
    items = unit(rng.normal(size=(600, 16)))
    # A query view that is a fixed rotation of the item view: the two spaces disagree, as two towers
    # that were never aligned would.
    rotation = np.linalg.qr(rng.normal(size=(16, 16)))[0].astype(np.float32)
    return items, unit(items @ rotation), unit(rng.normal(size=(50, 16)))


def build(items, query_views, **options):
    index = CIIndex(
        16, "ip", query_views=query_views, **{"nlist": 16, "levels": 2, "codewords": 32, **options}
    )
    index.add(np.arange(len(items)), items)
    return index


def test_lists_are_formed_and_assigned_in_the_query_view(views):
    items, query_views, _ = views
    index = build(items, query_views)
    lists = index.semantic_ids(np.arange(len(items)))[:, 0]
    assert np.array_equal(lists, np.argmax(query_views @ index.centroids.T, axis=1))
    # ... and not by the item vectors, which here point elsewhere
    assert (lists != np.argmax(items @ index.centroids.T, axis=1)).mean() > 0.5


def test_place_item_keeps_query_view_centroids_and_places_items_by_their_item_vector(views, tmp_path):
    items, query_views, _ = views
    by_query = build(items, query_views)
    by_item = build(items, query_views, place="item")
    assert np.allclose(by_item.centroids, by_query.centroids)  # the same k-means on the query views
    lists = by_item.semantic_ids(np.arange(len(items)))[:, 0]
    assert np.array_equal(lists, np.argmax(items @ by_item.centroids.T, axis=1))
    by_item.add_with_views([1000], items[:1], query_views[:1])  # a given query view does not place it
    assert by_item.semantic_ids([1000])[0, 0] == lists[0]
    by_item.save(tmp_path / "ci")
    assert load_index(tmp_path / "ci").place == "item"
    assert make_index("ci:nlist=4,place=item", 8).place == "item"


def test_probing_every_list_is_exact_search(views):
    items, query_views, queries = views
    index = build(items, query_views)
    exact = ExactIndex(16)
    exact.add(np.arange(len(items)), items)
    found = index.search(queries, 10, params={"nprobe": 16})
    reference = exact.search(queries, 10)
    assert np.array_equal(found.ids, reference.ids)
    np.testing.assert_allclose(found.scores, reference.scores, rtol=1e-5, atol=1e-6)
    assert (found.scored == len(items)).all()


def test_queries_are_routed_to_their_nearest_centroids(views):
    items, query_views, queries = views
    index = build(items, query_views)
    found = index.search(queries, 5, params={"nprobe": 2})
    nearest = np.argsort(-(queries @ index.centroids.T), axis=1)[:, :2]
    lists = index.semantic_ids(np.arange(len(items)))[:, 0]
    for row in range(len(queries)):
        assert np.isin(lists[found.ids[row]], nearest[row]).all()
        held = np.isin(lists, nearest[row]).sum()
        assert found.scored[row] == held


def test_rq_scores_are_the_decoded_vectors_scores(views):
    items, query_views, queries = views
    index = build(items, query_views)
    found = index.search(queries, 10, params={"nprobe": 16, "fine": "rq"})
    codes = index.semantic_ids(np.arange(len(items)))
    decoded = index.centroids[codes[:, 0]] + sum(
        index.codebook[level, 0][codes[:, 1 + level]] for level in range(2)
    )
    expected = np.sort(queries @ decoded.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(found.scores, expected, rtol=1e-4, atol=1e-5)
    # The compressed scores still find the exact top-10 far above chance (10 x 10 / 600 = 0.17 shared)
    flat = index.search(queries, 10, params={"nprobe": 16})
    assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(found.ids, flat.ids, strict=True)]) > 2


def test_a_short_row_probes_further_lists_until_it_has_k(views):
    items, query_views, queries = views
    index = build(items, query_views)
    found = index.search(queries, 200, params={"nprobe": 1})
    assert (found.ids >= 0).all()
    assert len(np.unique(found.ids[0])) == 200


def test_filters_removal_and_inserts(views):
    items, query_views, queries = views
    index = build(items, query_views)
    allowed = np.arange(0, 600, 7)
    found = index.search(queries, 5, filter={"allow_ids": allowed.tolist()}, params={"nprobe": 1})
    assert np.isin(found.ids, allowed).all() and (found.ids >= 0).all()
    assert index.remove(np.arange(0, 300)) == 300
    found = index.search(queries, 10, params={"nprobe": 16})
    assert (found.ids >= 300).all()
    # an item added after the build is routed by its item vector and can be found
    new = unit(np.random.default_rng(5).normal(size=(1, 16)))
    index.add([10_000], new)
    assert index.search(new, 1, params={"nprobe": 1}).ids[0, 0] == 10_000
    assert index.semantic_ids([10_000])[0, 0] == np.argmax(new @ index.centroids.T)


def test_an_item_added_with_its_query_view_is_routed_by_it(views):
    items, query_views, _ = views
    index = build(items, query_views)
    rng = np.random.default_rng(9)
    item, view = unit(rng.normal(size=(1, 16))), unit(rng.normal(size=(1, 16)))
    index.add_with_views([20_000], item, view)
    assert index.semantic_ids([20_000])[0, 0] == np.argmax(view @ index.centroids.T)
    index.add([20_001], item)  # without a view: routed by its item vector
    assert index.semantic_ids([20_001])[0, 0] == np.argmax(item @ index.centroids.T)
    with pytest.raises(InvalidRequest, match="query views"):
        index.add_with_views([1, 2], items[:2], view)


def test_save_and_load_round_trip(views, tmp_path):
    items, query_views, queries = views
    index = build(items, query_views, assign=2)
    index.remove([3, 4, 5])
    index.save(tmp_path / "ci")
    loaded = load_index(tmp_path / "ci")
    assert isinstance(loaded, CIIndex) and loaded.assign == 2 and len(loaded) == 597
    for params in ({"nprobe": 3}, {"nprobe": 3, "fine": "rq"}):
        a, b = index.search(queries, 10, params=params), loaded.search(queries, 10, params=params)
        assert np.array_equal(a.ids, b.ids)


def test_multi_assignment_puts_an_item_in_its_two_nearest_lists(views):
    items, query_views, queries = views
    index = build(items, query_views, assign=2)
    assert index.lists().offsets[-1] == 2 * len(items)
    found = index.search(queries, 10, params={"nprobe": 1})
    assert all(len(np.unique(row)) == 10 for row in found.ids)


def test_spec_and_bad_input():
    index = make_index("ci:nlist=4,levels=1,codewords=8,coarse=items", 8)
    assert (index.nlist, index.levels, index.codewords, index.coarse) == (4, 1, 8, "items")
    assert default_nlist(12_101) == 128 and default_nlist(1) == 1
    with pytest.raises(InvalidRequest, match="coarse"):
        make_index("ci:coarse=users", 8)
    with pytest.raises(InvalidRequest, match="place"):
        make_index("ci:place=users", 8)
    with pytest.raises(InvalidRequest, match="inner product"):
        CIIndex(8, "l2")
    with pytest.raises(InvalidRequest, match="query_views"):
        CIIndex(8, query_views=np.zeros((3, 4)))
    flat = CIIndex(8, nlist=2, levels=0)
    flat.add(np.arange(10), unit(np.random.default_rng(1).normal(size=(10, 8))))
    with pytest.raises(InvalidRequest, match="fine=flat"):
        flat.search(np.ones((1, 8), np.float32), 2, params={"fine": "rq"})
    with pytest.raises(InvalidRequest, match="fine must be"):
        flat.search(np.ones((1, 8), np.float32), 2, params={"fine": "pq"})
    with pytest.raises(InvalidRequest, match="nlist=32"):
        CIIndex(8, nlist=32).add(np.arange(10), np.ones((10, 8)))


def test_compaction_keeps_each_items_list_and_codes():
    rng = np.random.default_rng(2)
    items = unit(rng.normal(size=(2500, 16)))
    index = CIIndex(16, nlist=8, levels=1, codewords=16)
    index.add(np.arange(2500), items)
    before = index.semantic_ids(np.arange(2000, 2500))
    index.remove(np.arange(0, 2000))
    assert index.table.dead == 0  # the removal compacted the slots
    assert np.array_equal(index.semantic_ids(np.arange(2000, 2500)), before)
    queries = unit(rng.normal(size=(5, 16)))
    exact = ExactIndex(16)
    exact.add(np.arange(2000, 2500), items[2000:])
    assert np.array_equal(index.search(queries, 5, params={"nprobe": 8}).ids, exact.search(queries, 5).ids)
