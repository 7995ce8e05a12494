"""The `uri` index backend on a small hand-made model: an untrained decoder over codes from k-means.

The decoder's choices are arbitrary here, so what is checked is the mechanics: a beam as wide as the
tree gives exact search, results come best first, filters, exclusions, inserts coded by the decoder,
removal, and a saved index that answers exactly as the one in memory.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recindex.errors import InvalidRequest
from recindex.index.base import SearchResult, drop_excluded
from recindex.index.learned import rank
from recindex.pipelines.indexes import load_index, make_index
from recindex.quant.semantic_ids import build_semantic_ids
from recindex.uri.compressed_leaves import MAX_LEAF_LISTS
from recindex.uri.decoder import TokenDecoder
from recindex.uri.index import _partition_numbers
from recindex.uri.train import with_item_token

D, N, K = 8, 300, 4  # model dim, items, tokens per layer


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


rng = np.random.default_rng(0)
RANKER_ITEMS = unit(rng.standard_normal((N, D)))
ROUTER_ITEMS = unit(rng.standard_normal((N, D)))
ITEMS = np.concatenate([RANKER_ITEMS, np.zeros((N, D), np.float32), ROUTER_ITEMS], 1)
QUERIES = np.concatenate(
    [unit(rng.standard_normal((12, D))), unit(rng.standard_normal((12, D))), np.zeros((12, D), np.float32)], 1
)
CODES = build_semantic_ids(ROUTER_ITEMS, "kmeans_balanced", K, 2).codes


def decoder_state(sizes: list[int]) -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    return {name: value.numpy() for name, value in TokenDecoder(D, sizes, dim=D).state_dict().items()}


def build(codes=CODES, sizes=(K, K), leaf_layers=2, **params):
    index = make_index(
        "uri",
        3 * D,
        search_params=params or None,
        options={
            "decoder": decoder_state(list(sizes)),
            "token_sizes": list(sizes),
            "leaf_layers": leaf_layers,
            "codes": codes,
        },
    )
    index.add(np.arange(N), ITEMS, attributes={"colour": [["red", "blue"][i % 2] for i in range(N)]})
    return index


def exact_top(queries: np.ndarray, k: int, items: np.ndarray = ITEMS) -> np.ndarray:
    return np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :k]


def test_a_beam_over_every_leaf_is_exact_search_and_a_narrow_one_scores_fewer_items():
    wide = build(beam=K * K)
    result = wide.search(QUERIES, 10)
    np.testing.assert_array_equal(result.ids, exact_top(QUERIES, 10))
    assert (np.diff(result.scores, axis=1) <= 1e-6).all()
    np.testing.assert_allclose(result.scores[:, 0], (QUERIES @ ITEMS.T).max(1), rtol=1e-5)
    narrow = build(beam=2)
    narrow.count_candidates = True
    found = narrow.search(QUERIES, 5)
    assert (found.scored < N / 2).all() and (found.scored > 0).all()
    # every returned item lies in one of the two leaves its query's beam kept
    leaves = CODES[:, 0] * K + CODES[:, 1]
    for ids in found.ids:
        assert len(np.unique(leaves[ids[ids >= 0]])) <= 2


def test_the_score_is_the_ranker_block_alone():
    """Query = [ranker | router | 0], item = [ranker | 0 | router]: the inner product is the ranker's."""
    index = build(beam=K * K)
    ids, scores = index.search(QUERIES[:3], 5)
    np.testing.assert_allclose(
        scores, np.take_along_axis(QUERIES[:3, :D] @ RANKER_ITEMS.T, ids, 1), rtol=1e-5
    )


def test_filters_and_history_exclusion():
    index = build(beam=K * K)
    ids = index.search(QUERIES, 10, filter='colour == "red"').ids
    assert (ids % 2 == 0).all()
    history = [exact_top(QUERIES[i : i + 1], 3)[0] for i in range(len(QUERIES))]
    kept = index.search(QUERIES, 10, exclude=history).ids
    for row, seen in zip(kept, history, strict=True):
        assert not np.isin(row, seen).any() and (row >= 0).all()


def test_a_new_item_is_coded_into_an_existing_leaf_and_found():
    index = build(beam=K * K)
    leaves_before = set((CODES[:, 0] * K + CODES[:, 1]).tolist())
    target = QUERIES[0, :D]  # a ranker vector equal to the query's: the new item must come first
    vector = np.concatenate([target, np.zeros(D), ROUTER_ITEMS[7]])[None].astype(np.float32)
    index.add([N + 5], vector)
    ids, codes = index.codes_of_items()
    new_code = codes[ids == N + 5][0]
    assert int(new_code[0] * K + new_code[1]) in leaves_before
    assert index.search(QUERIES[:1], 1).ids[0, 0] == N + 5
    assert index.remove([N + 5, 10_000]) == 1
    assert N + 5 not in index.search(QUERIES[:1], 10).ids


def test_saved_and_loaded_it_answers_the_same(tmp_path):
    index = build(beam=3)
    index.add([N + 1], ITEMS[:1])
    index.remove([4])
    before = index.search(QUERIES, 10)
    index.save(tmp_path / "uri")
    loaded = load_index(tmp_path / "uri")
    after = loaded.search(QUERIES, 10)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_allclose(before.scores, after.scores)
    assert loaded.search_params == {"beam": 3, "rank": "ranker"} and len(loaded) == N


def test_the_decoder_ranks_items_itself_with_the_item_token():
    codes, width = with_item_token(CODES, K)
    index = build(codes=codes, sizes=(K, K, width), beam=10)
    result = index.search(QUERIES, 10, params={"rank": "decoder"})
    assert (result.ids >= 0).all() and (np.diff(result.scores, axis=1) <= 1e-6).all()
    assert all(len(np.unique(row)) == 10 for row in result.ids)
    assert (result.scores <= 0).all()  # sequence log-probabilities
    with pytest.raises(InvalidRequest, match="item token"):
        build(beam=4).search(QUERIES, 5, params={"rank": "decoder"})


def test_bad_requests_are_refused():
    with pytest.raises(InvalidRequest, match="URI bundle"):
        make_index("uri", 3 * D)
    with pytest.raises(InvalidRequest, match="3 blocks"):
        make_index("uri", 3 * D + 1, options={"decoder": decoder_state([K, K]), "token_sizes": [K, K]})
    with pytest.raises(InvalidRequest, match="do not fit"):
        make_index("uri", 3 * D, options={"decoder": decoder_state([K, K]), "token_sizes": [K, K + 1]})
    index = build()
    with pytest.raises(InvalidRequest, match="rank"):
        index.search(QUERIES, 5, params={"rank": "popularity"})
    with pytest.raises(InvalidRequest, match="beam"):
        index.search(QUERIES, 5, params={"beam": 0})
    with pytest.raises(InvalidRequest, match="at most"):
        index.search(QUERIES, 5, params={"beam": 10**6})
    with pytest.raises(InvalidRequest, match="unknown key 'k'; expected one of compress, code_dims"):
        make_index("uri:k=3", 3 * D)  # the model sets its shape; only how the leaves are held is an option


def test_codes_stay_with_their_items_when_removals_compact_the_storage():
    index = build(beam=K * K)
    extra = np.concatenate([RANKER_ITEMS, np.zeros((N, D), np.float32), ROUTER_ITEMS], 1)
    for block in range(5):  # 1,500 more items, coded by the decoder on arrival
        index.add(np.arange(N + block * N, N + (block + 1) * N), extra)
    ids_before, codes_before = index.codes_of_items()
    index.remove(np.arange(N, N + 1200))  # over 1,024 dead slots: the storage is compacted
    assert index.table.dead == 0 and len(index) == 6 * N - 1200
    ids, codes = index.codes_of_items()
    kept = np.isin(ids_before, ids)
    np.testing.assert_array_equal(ids_before[kept], ids)
    np.testing.assert_array_equal(codes_before[kept], codes)
    # every leaf searched: the same scores as exact search over what is left (the copies tie)
    expected = -np.sort(-(QUERIES @ index.vectors_of(ids).T), axis=1)[:, :5]
    np.testing.assert_allclose(index.search(QUERIES, 5).scores, expected, rtol=1e-5)


def test_a_new_item_joins_a_leaf_that_items_already_stored_have():
    """An item coded on arrival is restricted to the tokens that exist among the items already stored,
    not among them plus its own batch's unwritten (all-zero) codes."""
    codes = CODES.copy()
    codes[:, 0] = CODES[:, 0] % (K - 1) + 1  # no stored item starts with token 0
    weights = decoder_state([K, K])
    for layer in range(2):  # a decoder that prefers token 0 at every layer
        weights[f"heads.{layer}.bias"] = weights[f"heads.{layer}.bias"].copy()
        weights[f"heads.{layer}.bias"][0] = 100.0
    index = make_index(
        "uri",
        3 * D,
        options={"decoder": weights, "token_sizes": [K, K], "leaf_layers": 2, "codes": codes},
    )
    index.add(np.arange(N), ITEMS)
    index.add([N + 1, N + 2], ITEMS[:2])  # unknown ids: coded by the decoder
    ids, assigned = index.codes_of_items()
    existing = set((codes[:, 0] * K + codes[:, 1]).tolist())
    for item in (N + 1, N + 2):
        code = assigned[ids == item][0]
        assert code[0] != 0 and int(code[0] * K + code[1]) in existing


def test_a_filter_that_empties_the_beams_leaves_falls_back_to_every_matching_item():
    """As every backend: when k items match the filter, k come back (the contract's guarantee)."""
    index = build(beam=1)
    allowed = np.arange(0, N, 37)  # 9 items, mostly outside any one leaf
    found = index.search(QUERIES, 5, filter={"allow_ids": allowed.tolist()})
    expected = allowed[exact_top(QUERIES, 5, ITEMS[allowed])]
    np.testing.assert_array_equal(found.ids, expected)


def beam_only(index, queries: np.ndarray, k: int, history: list[np.ndarray]):
    """What the beam's leaves alone answer (URI before short rows were filled): the ranker's top
    k + longest history over the beam's leaves, the history then dropped; and the leaves' items."""
    leaves, _, tree, lists = index.leaves(queries[:, D : 2 * D], index.search_params["beam"], 2)
    probes = _partition_numbers(tree, leaves)
    fetch = k + max(len(row) for row in history)
    slots, scores, scored = rank(probes, lists, fetch, index.exact_scorer(queries))
    found = drop_excluded(SearchResult(index.store.ids_of(slots), scores), history, k)
    held = [index.store.ids_of(lists.expand(probes[i : i + 1])[0]) for i in range(len(queries))]
    return found, held, scored


def test_rows_a_narrow_beam_leaves_short_keep_its_answers_first_and_are_filled():
    index = build(beam=2)  # 2 of 16 leaves: about 38 of 300 items
    first = index.search(QUERIES, 40).ids
    history = [row[row >= 0][: 3 * i] for i, row in enumerate(first)]  # up to 33 of the beam's items
    before, held, beam_scored = beam_only(index, QUERIES, 10, history)
    short = (before.ids < 0).any(1)
    assert short.any() and not short.all()
    result = index.search(QUERIES, 10, exclude=history)
    # rows the beam filled: its answers, bit for bit, and nothing more scored
    np.testing.assert_array_equal(result.ids[~short], before.ids[~short])
    np.testing.assert_array_equal(result.scores[~short], before.scores[~short])
    np.testing.assert_array_equal(result.scored[~short], beam_scored[~short])
    for row in np.flatnonzero(short):
        ids, kept = result.ids[row], int((before.ids[row] >= 0).sum())
        assert (ids >= 0).all() and len(np.unique(ids)) == 10 and not np.isin(ids, history[row]).any()
        np.testing.assert_array_equal(ids[:kept], before.ids[row, :kept])  # the beam's answers first
        assert not np.isin(ids[kept:], held[row]).any()  # then items of further leaves
        np.testing.assert_allclose(result.scores[row], QUERIES[row, :D] @ RANKER_ITEMS[ids].T, rtol=1e-5)
        assert result.scored[row] > beam_scored[row]  # the fill's items count as candidates


def test_a_beam_short_of_k_itself_is_filled_from_the_leaves_a_wider_beam_adds():
    index = build(beam=1)  # one leaf: about 19 items
    result = index.search(QUERIES, 25)
    own, held, own_scored = beam_only(index, QUERIES, 25, [np.zeros(0, np.int64)] * len(QUERIES))
    leaves, _, tree, lists = index.leaves(QUERIES[:, D : 2 * D], 2, 2)  # the beam doubled
    wider = _partition_numbers(tree, leaves)
    for row in range(len(QUERIES)):
        kept = len(held[row])
        assert kept < 25 and (result.ids[row] >= 0).all()
        np.testing.assert_array_equal(result.ids[row, :kept], own.ids[row, :kept])
        added = index.store.ids_of(lists.expand(wider[row : row + 1])[0])
        added = added[~np.isin(added, held[row])]  # the leaf the doubled beam adds
        best = added[np.argsort(-(QUERIES[row, :D] @ RANKER_ITEMS[added].T), kind="stable")]
        np.testing.assert_array_equal(result.ids[row, kept:], best[: 25 - kept])
        assert result.scored[row] == own_scored[row] + len(added)


def test_a_short_row_scores_only_the_further_leaves_it_needs():
    index = build(beam=1)
    result = index.search(QUERIES, 100)  # a third of the catalogue from a beam of one leaf
    largest = int(np.bincount(CODES[:, 0] * K + CODES[:, 1]).max())
    assert (result.ids >= 0).all() and all(len(np.unique(row)) == 100 for row in result.ids)
    # the leaves are added best first until they hold the places left: the last one overshoots
    assert (result.scored >= 100).all() and (result.scored < 100 + largest).all()


def test_past_the_widest_beam_every_leaf_left_is_scored_at_once(monkeypatch):
    monkeypatch.setattr("recindex.uri.index.MAX_BEAM", 1)  # no wider beam is allowed: the last resort
    index = build(beam=1)
    result = index.search(QUERIES, 40)
    _, held, _ = beam_only(index, QUERIES, 40, [np.zeros(0, np.int64)] * len(QUERIES))
    assert (result.scored == N).all()
    for row in range(len(QUERIES)):
        kept = len(held[row])
        rest = np.setdiff1d(np.arange(N), held[row])
        best = rest[np.argsort(-(QUERIES[row, :D] @ RANKER_ITEMS[rest].T), kind="stable")]
        np.testing.assert_array_equal(result.ids[row, kept:], best[: 40 - kept])


# ---- compressed leaves (uri:compress=pq4): a refine deep enough to rescore every candidate answers as
# the uncompressed index does; a shallow one rescores only the codes' best

EVERY_CANDIDATE = N  # refine x k >= the catalogue: the shortlist holds every candidate the beam reaches


def build_coded(spec: str = "uri:compress=pq4", beam: int = 3, **params):
    index = make_index(
        spec,
        3 * D,
        search_params={"beam": beam, **params},
        options={"decoder": decoder_state([K, K]), "token_sizes": [K, K], "leaf_layers": 2, "codes": CODES},
    )
    index.add(np.arange(N), ITEMS, attributes={"colour": [["red", "blue"][i % 2] for i in range(N)]})
    return index


def assert_same(found, expected):
    np.testing.assert_array_equal(found.ids, expected.ids)
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-5)


@pytest.mark.parametrize("beam", [2, K * K])
def test_a_deep_refine_answers_as_the_uncompressed_index(beam):
    plain, coded = build_coded("uri", beam), build_coded(beam=beam, refine=EVERY_CANDIDATE)
    assert_same(coded.search(QUERIES, 10), plain.search(QUERIES, 10))
    history = [np.arange(row, 300, 7) for row in range(len(QUERIES))]
    assert_same(coded.search(QUERIES, 10, exclude=history), plain.search(QUERIES, 10, exclude=history))
    red = 'colour == "red"'
    assert_same(coded.search(QUERIES, 10, filter=red), plain.search(QUERIES, 10, filter=red))


def test_a_shallow_refine_rescores_the_codes_best_with_exact_scores():
    coded = build_coded(beam=2, refine=1)
    coded.count_candidates = True
    found = coded.search(QUERIES, 5)
    exact = np.einsum("qd,qkd->qk", QUERIES, ITEMS[found.ids])
    np.testing.assert_allclose(found.scores, exact, rtol=1e-5)  # rescored, not estimates
    assert (np.diff(found.scores, axis=1) <= 1e-6).all()
    plain = build_coded("uri", 2)
    plain.count_candidates = True
    # the scan reads the same leaves' codes as the uncompressed index scores vectors
    np.testing.assert_array_equal(found.scored, plain.search(QUERIES, 5).scored)


def test_inserts_removals_compaction_and_a_reload_keep_the_answers(tmp_path):
    plain, coded = build_coded("uri", K * K), build_coded(beam=K * K, refine=EVERY_CANDIDATE)
    target = QUERIES[0, :D]
    vector = np.concatenate([target, np.zeros(D), ROUTER_ITEMS[7]])[None].astype(np.float32)
    extra = np.concatenate([RANKER_ITEMS, np.zeros((N, D), np.float32), ROUTER_ITEMS], 1)
    replaced = np.concatenate([QUERIES[1, :D], np.zeros(D), ROUTER_ITEMS[3]])[None].astype(np.float32)
    for index in (plain, coded):
        index.add([10 * N], vector)  # coded by the decoder on arrival
        for block in range(4):
            index.add(np.arange(N + block * N, N + (block + 1) * N), extra)
        index.remove(np.arange(N, N + 1100))  # past 1,024 dead slots: the storage is compacted
        assert index.table.dead == 0
        index.add([3], replaced)  # a stored item with a new vector: it leaves its old codes
    assert coded.search(QUERIES[:1], 1).ids[0, 0] == 10 * N
    assert coded.search(QUERIES[1:2], 2).ids[0].tolist()[0] == 3  # once: its old code is gone
    assert_same(coded.search(QUERIES, 10), plain.search(QUERIES, 10))
    coded.remove([10 * N])
    plain.remove([10 * N])
    assert_same(coded.search(QUERIES, 10), plain.search(QUERIES, 10))
    coded.save(tmp_path / "uri")
    loaded = load_index(tmp_path / "uri")
    assert (tmp_path / "uri" / "pq4_centroids.npy").is_file()
    assert loaded.compress == "pq4" and loaded.search_params["refine"] == EVERY_CANDIDATE
    assert_same(loaded.search(QUERIES, 10), coded.search(QUERIES, 10))


def test_refine_belongs_to_compressed_leaves_and_too_many_leaves_are_refused():
    with pytest.raises(InvalidRequest, match="unknown search parameters"):
        build_coded("uri").search(QUERIES, 5, params={"refine": 2})
    with pytest.raises(InvalidRequest, match="'pq8' is not one of 'none', 'pq4'"):
        build_coded("uri:compress=pq8")
    wide = int(np.sqrt(MAX_LEAF_LISTS)) + 1  # two layers of this many tokens: more leaves than lists
    with pytest.raises(InvalidRequest, match="one list per possible leaf"):
        make_index(
            "uri:compress=pq4",
            3 * D,
            options={"decoder": decoder_state([wide, wide]), "token_sizes": [wide, wide], "codes": CODES},
        )
