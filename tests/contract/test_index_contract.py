"""One contract, every backend: the exact index is the reference each one is checked against.

Recall thresholds (recall@10 against exact search on seeded clustered data, default search
parameters) are stated per backend in BACKENDS; lossy codecs without a refine stage get lower bars.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.base import check_metric
from recindex.pipelines.indexes import load_index, make_index

N, DIM, K = 2000, 16, 10
MILVUS = (
    importlib.util.find_spec("pymilvus") is not None and importlib.util.find_spec("milvus_lite") is not None
)
NO_MILVUS = "pymilvus / milvus-lite are not installed (pip install 'recindex[milvus]')"

# spec -> minimum recall@10 vs exact; exact storage bars allow for rounding ties only.
BACKENDS = {
    "exact": 1.0,
    "exact:float16": 0.98,
    "exact:int8": 0.95,
    "faiss:Flat": 1.0,
    "faiss:HNSW16": 0.95,
    "faiss:IVF16,Flat": 0.95,
    "faiss:IVF16,PQ8x4,RFlat": 0.9,
    "faiss:OPQ8,IVF16,PQ8x4,RFlat": 0.9,
    "faiss:PQ8x4": 0.3,  # 8 bytes per vector and no refine: coarse by design; here for post-filtering
    "sharded:3:exact": 1.0,
    "sharded:2:faiss:HNSW16": 0.95,
    "milvus:FLAT": 1.0,
    "milvus:HNSW": 0.9,
    "mfli": 0.9,
    "mfli:facets=2,codewords=8": 0.9,
    "mfli:levels=3,codewords=8": 0.9,
    "mfli:storage=fp16": 0.9,
}


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM))
    x = centres[rng.integers(0, 20, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


ITEMS = clustered(N, 0)
QUERIES = clustered(40, 1)
TAGS = ["t0", "t1", "t2", "t3", "t4"]
ATTRS = {
    "category": [f"c{i % 7}" for i in range(N)],
    "price": [float(i % 100) for i in range(N)],
    "in_stock": [i % 3 != 0 for i in range(N)],
    # multi-valued: none, one or several tags per item
    "tags": [[t for k, t in enumerate(TAGS) if (i >> k) & 1] if i % 9 else None for i in range(N)],
}


def build(spec: str, tmp_path, name: str = "idx"):
    options = {}
    if spec.startswith(("milvus", "sharded:2:milvus")):
        if not MILVUS:
            pytest.skip(NO_MILVUS)
        options = {"uri": str(tmp_path / f"{name}.db"), "collection": name}
    index = make_index(spec, DIM, "ip", options=options)
    index.add(np.arange(N), ITEMS, attributes=ATTRS)
    return index


def exact_reference():
    index = make_index("exact", DIM)
    index.add(np.arange(N), ITEMS, attributes=ATTRS)
    return index


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    pairs = zip(a, b, strict=True)
    shares = [len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, (y >= 0).sum()) for x, y in pairs]
    return float(np.mean(shares))


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def spec(request):
    return request.param


def test_recall_against_exact(spec, tmp_path):
    index = build(spec, tmp_path)
    ids, scores = index.search(QUERIES, K)
    reference = exact_reference().search(QUERIES, K)
    assert ids.shape == (len(QUERIES), K) and scores.shape == (len(QUERIES), K)
    assert (np.diff(scores, axis=1) <= 1e-5).all(), "results must come best first"
    assert overlap(ids, reference.ids) >= BACKENDS[spec]
    assert len(index) == N


def test_upsert_replaces_vector_and_attributes(spec, tmp_path):
    index = build(spec, tmp_path)
    target = QUERIES[0]
    index.add([5], target[None, :], attributes={"category": ["special"], "price": [1.0], "in_stock": [True]})
    assert len(index) == N
    ids, scores = index.search(target[None, :], 1)
    assert ids[0, 0] == 5
    filtered = index.search(target[None, :], 3, filter='category == "special"')
    assert filtered.ids[0, 0] == 5 and (filtered.ids[0, 1:] == -1).all()
    assert 5 not in index.search(target[None, :], K, filter='category == "c5"').ids


def test_remove_removes(spec, tmp_path):
    index = build(spec, tmp_path)
    top = index.search(QUERIES[:5], K).ids
    gone = np.unique(top[:, :3])
    assert index.remove(np.concatenate([gone, [N + 100]])) == len(gone)
    assert len(index) == N - len(gone)
    after = index.search(QUERIES[:5], K)
    assert not np.isin(after.ids, gone).any()
    assert (after.ids >= 0).all(), "k results must still come back"
    assert index.remove(gone) == 0


def test_filter_filters_and_matches_exact(spec, tmp_path):
    index = build(spec, tmp_path)
    reference = exact_reference()
    where = 'category in ["c1", "c2"] and 10 <= price < 60 and in_stock == true'
    result = index.search(QUERIES, K, filter=where)
    expected = reference.search(QUERIES, K, filter=where)
    ok = np.array(
        [
            (ATTRS["category"][i] in ("c1", "c2")) and 10 <= ATTRS["price"][i] < 60 and ATTRS["in_stock"][i]
            for i in range(N)
        ]
    )
    assert ok[result.ids].all()
    assert (result.ids >= 0).all(), "more than k items match, so k must come back"
    assert overlap(result.ids, expected.ids) >= min(BACKENDS[spec], 0.9)


def test_filter_with_fewer_matches_than_k_returns_exactly_those(spec, tmp_path):
    index = build(spec, tmp_path)
    allowed = np.array([3, 700, 1500])
    result = index.search(QUERIES[:4], K, filter={"allow_ids": allowed.tolist()})
    assert all(set(row[:3]) == set(allowed) for row in result.ids)
    assert (result.ids[:, 3:] == -1).all() and np.isneginf(result.scores[:, 3:]).all()
    denied = index.search(QUERIES[:4], K, filter={"where": "price < 50", "deny_ids": list(range(0, N, 2))})
    assert (denied.ids % 2 == 1).all() and (np.asarray(ATTRS["price"])[denied.ids] < 50).all()


def test_exclusion_masks_history_and_keeps_k(spec, tmp_path):
    index = build(spec, tmp_path)
    first = index.search(QUERIES[:6], K).ids
    history = [row[: 2 + i] for i, row in enumerate(first)]
    result = index.search(QUERIES[:6], K, exclude=history)
    for row, seen in zip(result.ids, history, strict=True):
        assert not np.isin(row, seen).any()
        assert (row >= 0).all()


def test_save_load_round_trip(spec, tmp_path):
    index = build(spec, tmp_path)
    index.remove([1, 2, 3])
    before = index.search(QUERIES, K, filter="price >= 20")
    index.save(tmp_path / "saved")
    if hasattr(index, "close"):
        index.close()
    loaded = load_index(tmp_path / "saved")
    after = loaded.search(QUERIES, K, filter="price >= 20")
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5, atol=1e-5)
    assert len(loaded) == N - 3
    assert loaded.search_params == index.search_params


def test_bad_input_gets_clear_errors(spec, tmp_path):
    index = build(spec, tmp_path)
    with pytest.raises(InvalidRequest, match="dimension 8"):
        index.search(np.ones((1, 8)), K)
    with pytest.raises(InvalidRequest, match="NaN"):
        index.search(np.full((1, DIM), np.nan), K)
    with pytest.raises(InvalidRequest, match="empty"):
        index.search(np.empty((0, DIM)), K)
    with pytest.raises(InvalidRequest, match="larger than the index"):
        index.search(QUERIES[:1], N + 1)
    with pytest.raises(InvalidRequest, match="positive integer"):
        index.search(QUERIES[:1], 0)
    with pytest.raises(InvalidRequest, match="NaN"):
        index.add([N + 1], np.full((1, DIM), np.nan))
    with pytest.raises(InvalidRequest, match="dimension"):
        index.add([N + 1], np.ones((1, DIM + 1)))
    with pytest.raises(InvalidRequest, match="non-negative"):
        index.add([-4], ITEMS[:1])
    with pytest.raises(InvalidRequest, match="not a valid expression"):
        index.search(QUERIES[:1], K, filter="price >")
    with pytest.raises(InvalidRequest, match="unknown search parameters"):
        index.search(QUERIES[:1], K, params={"bogus": 3})
    assert len(index) == N, "failed calls must change nothing"


def test_empty_index_refuses_search(spec, tmp_path):
    options = {}
    if spec.startswith("milvus"):
        if not MILVUS:
            pytest.skip(NO_MILVUS)
        options = {"uri": str(tmp_path / "empty.db"), "collection": "empty"}
    index = make_index(spec, DIM, options=options)
    with pytest.raises(InvalidRequest, match="empty"):
        index.search(QUERIES[:1], 1)


def test_capabilities_are_declared(spec, tmp_path):
    caps = build(spec, tmp_path).capabilities
    assert caps.upsert and caps.remove and caps.persist
    assert caps.filter in ("native", "post-filter")


def test_metric_must_match_the_model():
    check_metric("ip", "ip", normalized=True)
    check_metric("cosine", "ip", normalized=True)
    with pytest.raises(InvalidRequest, match="rank them differently"):
        check_metric("l2", "ip", normalized=True)
    with pytest.raises(InvalidRequest):
        check_metric("cosine", "ip", normalized=False)


@pytest.mark.parametrize("spec", ["exact", "faiss:HNSW16", "faiss:IVF16,Flat"])
def test_l2_metric_scores_are_negated_squared_distances(spec):
    index = make_index(spec, DIM, "l2")
    index.add(np.arange(N), ITEMS)
    ids, scores = index.search(QUERIES[:3], 5)
    expected = -((QUERIES[:3, None, :] - ITEMS[ids]) ** 2).sum(axis=2)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def tags_of(i: int) -> set[str]:
    return set(ATTRS["tags"][i] or ())


@pytest.mark.parametrize(
    ("where", "keep"),
    [
        ('contains(tags, "t1") and price < 70', lambda i: "t1" in tags_of(i) and ATTRS["price"][i] < 70),
        ('tags in ["t0", "t4"]', lambda i: bool({"t0", "t4"} & tags_of(i))),
        ('tags != "t2"', lambda i: bool(tags_of(i)) and "t2" not in tags_of(i)),
        ('not contains(tags, "t3")', lambda i: "t3" not in tags_of(i)),
    ],
    ids=["contains", "in", "not-equal", "not-contains"],
)
def test_multi_valued_filters_match_any_value(spec, tmp_path, where, keep):
    """Every backend gives a multi-valued attribute the filter language's any-of semantics."""
    index = build(spec, tmp_path)
    result = index.search(QUERIES, K, filter=where)
    ok = np.array([keep(i) for i in range(N)])
    assert ok[result.ids].all()
    assert (result.ids >= 0).all(), "more than k items match, so k must come back"
    expected = exact_reference().search(QUERIES, K, filter=where)
    assert overlap(result.ids, expected.ids) >= min(BACKENDS[spec], 0.9)
