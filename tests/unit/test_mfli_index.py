"""MFLI's index on its own: residual codes, real-time inserts, rebalancing, identity, the trigger path."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.mfli.index import MFLIIndex
from recindex.pipelines.indexes import load_index, make_index
from recindex.quant.codebook import assign_codes, facet_view, fit_codebook, reconstruct


def clustered(n: int, dim: int, seed: int, centres: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    middle = np.random.default_rng(99).standard_normal((centres, dim))
    label = rng.integers(0, centres, n)
    x = middle[label] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), label


ITEMS, LABELS = clustered(3000, 16, 0)


def test_each_level_of_the_residual_codebook_reduces_the_error():
    facets = facet_view(ITEMS, 2)
    codebook = fit_codebook(facets, levels=3, codewords=8)
    assert codebook.shape == (3, 2, 8, 8)
    codes = assign_codes(codebook, facets)
    errors = [
        ((facets - reconstruct(codebook, codes[:, :, :level])) ** 2).sum(-1).mean() for level in (1, 2, 3)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_an_item_inserted_after_the_build_is_found_by_the_next_query():
    index = MFLIIndex(16, codewords=8)
    index.add(np.arange(2000), ITEMS[:2000])
    fresh, _ = clustered(200, 16, 7)
    for offset, vector in enumerate(fresh):  # one by one, no rebuild in between
        index.add([10_000 + offset], vector[None, :])
        assert index.search(vector[None, :], 1).ids[0, 0] == 10_000 + offset
    assert len(index) == 2200
    assert index.remove([10_005]) == 1
    assert 10_005 not in index.search(fresh[5][None, :], 10).ids


def test_rebuild_keeps_leaves_within_bounds_and_ids_stable():
    index = MFLIIndex(16, codewords=4, levels=1)  # few leaves: large ones to split
    index.add(np.arange(3000), ITEMS)
    before = index.search(ITEMS[:20], 10).ids
    report = index.rebuild(min_leaf=20, max_leaf=120)
    sizes = index.leaf_sizes()[0]
    sizes = sizes[sizes > 0]
    assert report["facets"][0]["splits"] > 0
    assert sizes.max() <= 120 and sizes.min() >= 20
    after = index.search(ITEMS[:20], 10, params={"leaves": 64})
    assert (after.ids[:, 0] == np.arange(20)).all()  # each item is still found under its own id
    assert len(set(before.ravel()) & set(after.ids.ravel())) > 0.5 * before.size


def test_inserts_after_a_split_land_in_the_nearest_part():
    index = MFLIIndex(16, codewords=4, levels=1)
    index.add(np.arange(2500), ITEMS[:2500])
    index.rebuild(min_leaf=20, max_leaf=120)
    for offset, vector in enumerate(ITEMS[2500:2600]):
        index.add([5000 + offset], vector[None, :])
        assert index.search(vector[None, :], 1).ids[0, 0] == 5000 + offset


def test_more_leaves_means_more_candidates_and_higher_recall():
    index = MFLIIndex(16, codewords=16)
    index.add(np.arange(3000), ITEMS)
    exact = make_index("exact", 16)
    exact.add(np.arange(3000), ITEMS)
    queries, _ = clustered(50, 16, 3)
    truth = exact.search(queries, 50).ids
    index.count_candidates = True
    recalls, scored = [], []
    for leaves in (2, 8, 32):
        found = index.search(queries, 50, params={"leaves": leaves, "beam": 8})
        shares = [len(np.intersect1d(f, t)) / 50 for f, t in zip(found.ids, truth, strict=True)]
        recalls.append(np.mean(shares))
        scored.append(found.scored.mean())
    assert scored[0] < scored[1] < scored[2]
    assert recalls[0] <= recalls[1] <= recalls[2] and recalls[2] >= 0.9


def test_trigger_items_lead_to_items_of_their_cluster():
    index = MFLIIndex(16, codewords=16)
    index.add(np.arange(3000), ITEMS)
    cluster = np.flatnonzero(LABELS[0] == LABELS)[:5]
    result = index.search_triggers(cluster, 20, params={"leaves": 8})
    found = result.ids[0][result.ids[0] >= 0]
    assert not np.isin(found, cluster).any()
    assert np.mean(LABELS[found] == LABELS[0]) > 0.8


def test_facets_get_codes_of_their_own():
    rng = np.random.default_rng(0)
    first, _ = clustered(2000, 8, 1)
    second = first[rng.permutation(2000)]  # the same vectors, paired with other items
    index = MFLIIndex(16, facets=2, codewords=8)
    index.add(np.arange(2000), np.hstack([first, second]))
    leaf_of = index._leaf_of[:2000]
    agreement = np.mean(leaf_of[:, 0] == leaf_of[:, 1])
    assert agreement < 0.2


def test_a_trained_codebook_can_be_handed_in_and_survives_a_round_trip(tmp_path):
    codebook = fit_codebook(facet_view(ITEMS, 1), levels=2, codewords=8)
    index = make_index("mfli:levels=2", 16, options={"codebook": codebook})
    index.add(np.arange(1000), ITEMS[:1000])
    index.add([7777], ITEMS[1500][None, :])  # a delta insert, folded into the lists on load
    before = index.search(ITEMS[:10], 10)
    index.save(tmp_path / "mfli")
    loaded = load_index(tmp_path / "mfli")
    np.testing.assert_array_equal(loaded.codebook, codebook)
    np.testing.assert_array_equal(loaded.search(ITEMS[:10], 10).ids, before.ids)
    assert loaded.search(ITEMS[1500][None, :], 1).ids[0, 0] == 7777


def test_bad_shapes_are_refused():
    with pytest.raises(InvalidRequest, match="facets"):
        MFLIIndex(16, facets=3)
    with pytest.raises(InvalidRequest, match="codebook shape"):
        MFLIIndex(16, levels=2, codebook=np.zeros((3, 1, 4, 16), np.float32))
    with pytest.raises(InvalidRequest, match="l2"):
        MFLIIndex(16, "l2")
    with pytest.raises(InvalidRequest, match="expected"):
        make_index("mfli:depth=3", 16)


def test_items_with_codes_no_build_item_had_get_leaves_of_their_own_and_are_found():
    index = MFLIIndex(16, codewords=8, levels=2)
    index.add(np.arange(1000), ITEMS[:1000])
    tree = index._trees[0]
    before = tree.n_leaves
    rng = np.random.default_rng(5)
    odd = rng.standard_normal((300, 16)).astype(np.float32)  # far from the clusters: new codes
    odd /= np.linalg.norm(odd, axis=1, keepdims=True)
    for offset, vector in enumerate(odd):
        index.add([20_000 + offset], vector[None, :])
    assert tree.n_leaves > before
    # the prefix index stays consistent with the leaves' prefixes as leaves are added one by one
    np.testing.assert_array_equal(tree.prefix_keys[tree.prefix_of_leaf], tree.prefixes)
    found = index.search(odd, 1, params={"leaves": 32, "beam": 64}).ids[:, 0]
    assert (found == 20_000 + np.arange(300)).mean() >= 0.95
    assert sum(s.sum() for s in index.leaf_sizes()) == 1300


def test_moved_and_removed_items_leave_their_old_leaves():
    index = MFLIIndex(16, codewords=8)
    index.add(np.arange(1000), ITEMS[:1000])
    index.add([3], ITEMS[2000][None, :])  # item 3 gets another vector: it moves
    index.remove([4])
    assert index.search(ITEMS[2000][None, :], 1).ids[0, 0] == 3
    assert 3 not in index.search(ITEMS[3][None, :], 1).ids[0]
    assert 4 not in index.search(ITEMS[4][None, :], 20, params={"leaves": 64}).ids
    assert sum(s.sum() for s in index.leaf_sizes()) == 999


def test_float16_lists_return_exact_scores_best_first():
    exact = make_index("exact", 16)
    exact.add(np.arange(3000), ITEMS)
    index = make_index("mfli:storage=fp16", 16)
    index.add(np.arange(3000), ITEMS)
    found = index.search(ITEMS[:50], 10, params={"leaves": 64})
    truth = exact.search(ITEMS[:50], 10)
    np.testing.assert_allclose(found.scores, np.einsum("nkd,nd->nk", ITEMS[found.ids], ITEMS[:50]), atol=1e-6)
    assert (np.diff(found.scores, axis=1) <= 0).all()
    assert (
        np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found.ids, truth.ids, strict=True)]) >= 0.95
    )
    with pytest.raises(InvalidRequest, match="storage"):
        make_index("mfli:storage=int3", 16)


def test_the_candidates_parameter_caps_the_items_scored():
    index = MFLIIndex(16, codewords=8)
    index.add(np.arange(3000), ITEMS)
    wide = index.search(ITEMS[:20], 10, params={"leaves": 64, "candidates": 10**6})
    capped = index.search(ITEMS[:20], 10, params={"leaves": 64, "candidates": 200})
    assert capped.scored.max() < wide.scored.min()
    # the scan stops after the leaf that reaches the cap, so a query may pass it by one leaf at most
    assert capped.scored.max() <= 200 + max(s.max() for s in index.leaf_sizes())


def test_one_query_at_a_time_walks_to_the_same_leaves_as_a_batch():
    index = MFLIIndex(16, codewords=8, levels=3)
    index.add(np.arange(3000), ITEMS)
    for vector in np.random.default_rng(3).standard_normal((10, 16)).astype(np.float32):
        index.add([9000 + int(abs(vector[0]) * 1000)], vector[None, :] / np.linalg.norm(vector))
    batch = index.search(ITEMS[:40], 10, params={"leaves": 8, "beam": 16})
    for row in range(40):
        alone = index.search(ITEMS[row : row + 1], 10, params={"leaves": 8, "beam": 16})
        np.testing.assert_array_equal(alone.ids[0], batch.ids[row])
        assert alone.scored[0] == batch.scored[row]


def test_searches_and_inserts_from_several_threads_take_turns():
    import threading

    index = MFLIIndex(16, codewords=8)
    index.add(np.arange(2000), ITEMS[:2000])
    fresh, _ = clustered(600, 16, 11)
    errors: list[BaseException] = []

    def write():
        try:
            for offset, vector in enumerate(fresh):
                index.add([50_000 + offset], vector[None, :])
                if offset % 7 == 0:
                    index.remove([50_000 + offset])
        except BaseException as error:  # noqa: BLE001 (reported by the test below)
            errors.append(error)

    def read():
        try:
            for _ in range(60):
                result = index.search(ITEMS[:32], 10, params={"leaves": 32})
                assert (result.ids >= 0).all() and np.isfinite(result.scores).all()
                index.search_triggers([1, 2], 5)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(index) == 2000 + 600 - len(range(0, 600, 7))
    kept = [50_000 + o for o in range(600) if o % 7]
    assert (index.search(fresh[[o for o in range(600) if o % 7]], 1).ids[:, 0] == kept).mean() >= 0.95


def test_pq4_lists_refine_their_estimates_exactly():
    exact = make_index("exact", 16)
    exact.add(np.arange(3000), ITEMS)
    index = make_index("mfli:storage=pq4", 16)
    index.add(np.arange(3000), ITEMS)
    truth = exact.search(ITEMS[:50], 10)

    def recall(found):
        return np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(found.ids, truth.ids, strict=True)])

    shallow = index.search(ITEMS[:50], 10, params={"leaves": 64, "refine": 1})
    deep = index.search(ITEMS[:50], 10, params={"leaves": 64, "refine": 16})
    np.testing.assert_allclose(deep.scores, np.einsum("nkd,nd->nk", ITEMS[deep.ids], ITEMS[:50]), atol=1e-6)
    assert (np.diff(deep.scores, axis=1) <= 0).all()
    assert recall(deep) >= 0.95
    assert recall(deep) >= recall(shallow)


def test_pq4_codes_survive_inserts_removal_and_a_reload(tmp_path):
    index = make_index("mfli:storage=pq4", 16)
    index.add(np.arange(2000), ITEMS[:2000])
    index.add(np.arange(2000, 3000), ITEMS[2000:])  # real-time inserts, coded by the trained quantizer
    index.remove([7])
    index.save(tmp_path / "pq4")
    loaded = load_index(tmp_path / "pq4")
    for params in ({"leaves": 64}, {"leaves": 4, "refine": 1}):
        a, b = index.search(ITEMS[:40], 10, params=params), loaded.search(ITEMS[:40], 10, params=params)
        np.testing.assert_array_equal(a.ids, b.ids)
    assert 7 not in loaded.search(ITEMS[7][None, :], 20, params={"leaves": 64}).ids
    assert loaded.search(ITEMS[2500][None, :], 10, params={"leaves": 64}).ids[0, 0] == 2500
