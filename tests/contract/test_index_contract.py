"""One contract, every backend: the exact index is the reference each one is checked against.

The backends are the factories of `index_backends.BACKENDS` (exact, FAISS, Milvus, sharded, and the
learned indexes MFLI, URI and CI), each with the recall floor its parameters promise. What a backend
declares in `capabilities` decides which form of a check applies: one that declares no removal is
checked to refuse removal clearly, and so on; no check is skipped by a backend's name.

A case that finds a defect in a backend is listed in KNOWN_DEFECTS, with the defect, and runs as a
strict xfail: it turns red when the defect is fixed, until the line goes.
"""

from __future__ import annotations

import numpy as np
import pytest
from index_backends import BACKENDS, Backend

from recindex.errors import InvalidRequest, RecIndexError
from recindex.index.base import BaseIndex, check_metric
from recindex.pipelines.indexes import load_index, make_index

N, DIM, K = 2000, 24, 10

# (check, backend) -> the defect the check finds.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM))
    x = centres[rng.integers(0, 20, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


ITEMS = clustered(N, 0)
QUERIES = clustered(40, 1)
TAGS = [f"t{k}" for k in range(5)]
ATTRS = {
    "category": [f"c{i % 7}" for i in range(N)],
    "price": [float(i % 100) for i in range(N)],
    "in_stock": [i % 3 != 0 for i in range(N)],
    # multi-valued: none, one or several tags per item
    "tags": [[t for k, t in enumerate(TAGS) if (i >> k) & 1] if i % 9 else None for i in range(N)],
}
MOVED = np.arange(5, 105, 5)  # items an upsert moves next to other items of the catalogue
MOVED_TO = ITEMS[MOVED + N // 2] + 0.05 * np.random.default_rng(2).standard_normal((len(MOVED), DIM))
MOVED_TO = (MOVED_TO / np.linalg.norm(MOVED_TO, axis=1, keepdims=True)).astype(np.float32)
WHERE = 'category in ["c1", "c2"] and 10 <= price < 60 and in_stock == true'
MATCHES = np.array(
    [
        ATTRS["category"][i] in ("c1", "c2") and 10 <= ATTRS["price"][i] < 60 and ATTRS["in_stock"][i]
        for i in range(N)
    ]
)


def contract(test):
    """Run `test` for every backend; a (check, backend) pair in KNOWN_DEFECTS runs as a strict xfail."""
    check = test.__name__.removeprefix("test_")
    cases = []
    for backend in BACKENDS:
        defect = KNOWN_DEFECTS.get((check, backend.name))
        marks = [pytest.mark.xfail(strict=True, reason=f"{backend.name}: {defect}")] if defect else []
        cases.append(pytest.param(backend.name, id=backend.name, marks=marks))
    return pytest.mark.parametrize("backend", cases, indirect=True, scope="module")(test)


def exact(remove=()) -> BaseIndex:
    index = make_index("exact", DIM)
    index.add(np.arange(N), ITEMS, attributes=ATTRS)
    index.remove(list(remove))
    return index


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    pairs = zip(a, b, strict=True)
    shares = [len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, (y >= 0).sum()) for x, y in pairs]
    return float(np.mean(shares))


def near_exact(backend: Backend, found: np.ndarray, expected: np.ndarray, what: str, floor=None) -> None:
    """Recall of `found` against exact search's `expected`, at the backend's floor (or `floor`)."""
    if backend.recall is None:  # routing learned elsewhere (see the factory); nothing to compare
        return
    floor = backend.recall if floor is None else min(floor, backend.recall)
    recall = overlap(found, expected)
    assert recall >= floor, (
        f"{backend}: {what}: recall@{found.shape[1]} {recall:.3f} against exact, below {floor}"
    )


def true_scores(backend: Backend, result, queries: np.ndarray, what: str, items=ITEMS) -> None:
    """Each returned score is the item's inner product with the query (within the backend's error)."""
    if backend.score_error is None:
        return
    found = result.ids >= 0
    if not found.any():
        return
    truth = np.einsum("qkd,qd->qk", items[np.where(found, result.ids, 0)], queries)
    error = float(np.abs(result.scores - truth)[found].max())
    assert error <= backend.score_error, f"{backend}: {what}: a score is off by {error:.2g}"


@contract
def test_recall_against_exact(backend, shared):
    ids, scores = result = shared.search(QUERIES, K)
    reference = exact().search(QUERIES, K)
    assert ids.shape == (len(QUERIES), K) and scores.shape == (len(QUERIES), K), f"{backend}: shapes"
    assert (np.diff(scores, axis=1) <= 1e-5).all(), f"{backend}: results must come best first"
    assert (ids >= 0).all(), f"{backend}: {N} items are eligible, so k must come back"
    near_exact(backend, ids, reference.ids, "plain search")
    true_scores(backend, result, QUERIES, "plain search")
    assert len(shared) == N, f"{backend}: len"


@contract
def test_upsert_replaces_vector_and_attributes(backend, subject):
    index = subject.filled()
    target = QUERIES[0]
    change = {"category": ["special"], "price": [1.0], "in_stock": [True]}
    attributes = change if index.capabilities.attributes else None
    if not index.capabilities.upsert:
        with pytest.raises(RecIndexError, match="upsert|already"):
            index.add([5], target[None, :], attributes=attributes)
        assert index.search(ITEMS[5:6], 1).ids[0, 0] == 5, f"{backend}: a refused upsert must change nothing"
        return
    index.add([5], target[None, :], attributes=attributes)
    assert len(index) == N, f"{backend}: an upsert of a known id must not add an item"
    found = index.search(target[None, :], 1)
    if backend.recall is not None:  # where routing follows these vectors (see the factory)
        assert found.ids[0, 0] == 5, f"{backend}: the item was not found by its new vector"
    items = ITEMS.copy()
    items[5] = target
    true_scores(backend, found, target[None, :], "after an upsert", items)  # the new vector's score
    if index.capabilities.attributes:
        filtered = index.search(target[None, :], 3, filter='category == "special"')
        assert filtered.ids[0, 0] == 5 and (filtered.ids[0, 1:] == -1).all(), f"{backend}: new attributes"
        assert 5 not in index.search(target[None, :], K, filter='category == "c5"').ids, (
            f"{backend}: old ones"
        )


@contract
def test_upserted_items_are_found_by_their_new_vectors(backend, subject):
    """Items moved next to other items of the catalogue: each must be found where it now is."""
    index = subject.filled()
    if not index.capabilities.upsert:
        return  # the refusal is checked above
    index.add(MOVED, MOVED_TO)
    found = index.search(MOVED_TO, K).ids
    share = np.mean([item in row for item, row in zip(MOVED, found, strict=True)])
    if backend.recall is not None:
        missed = MOVED[[item not in row for item, row in zip(MOVED, found, strict=True)]]
        assert share >= backend.recall, (
            f"{backend}: moved items {missed.tolist()} not found by their new vectors"
        )


@contract
def test_remove_removes(backend, subject):
    index = subject.filled()
    top = index.search(QUERIES[:5], K).ids
    gone = np.unique(top[:, :3])
    if not index.capabilities.remove:
        with pytest.raises(RecIndexError, match="remov"):
            index.remove(gone)
        assert len(index) == N, f"{backend}: a refused removal must change nothing"
        return
    assert index.remove(np.concatenate([gone, [N + 100]])) == len(gone), f"{backend}: removal count"
    assert len(index) == N - len(gone), f"{backend}: len after removal"
    after = index.search(QUERIES, K)
    assert not np.isin(after.ids, gone).any(), f"{backend}: a removed item came back"
    assert (after.ids >= 0).all(), f"{backend}: k results must still come back"
    near_exact(backend, after.ids, exact(remove=gone).search(QUERIES, K).ids, "after removal", 0.9)
    assert index.remove(gone) == 0, f"{backend}: removing again must count nothing"


@contract
def test_filter_filters_and_matches_exact(backend, shared):
    if not shared.capabilities.attributes:
        with pytest.raises(InvalidRequest):
            shared.search(QUERIES, K, filter=WHERE)
        return
    result = shared.search(QUERIES, K, filter=WHERE)
    assert MATCHES[result.ids[result.ids >= 0]].all(), f"{backend}: an item that fails the filter came back"
    assert (result.ids >= 0).all(), f"{backend}: more than k items match, so k must come back"
    near_exact(backend, result.ids, exact().search(QUERIES, K, filter=WHERE).ids, "filtered", 0.9)
    true_scores(backend, result, QUERIES, "filtered")


@contract
def test_filter_with_fewer_matches_than_k_returns_exactly_those(backend, shared):
    for allowed in (np.array([3, 700, 1500]), np.arange(50, 2000, 220)):  # 3 and k - 1 items
        result = shared.search(QUERIES[:4], K, filter={"allow_ids": allowed.tolist()})
        n = len(allowed)
        for row in result.ids:
            assert set(row[:n]) == set(allowed), f"{backend}: {row} holds not exactly the {n} allowed items"
        assert (result.ids[:, n:] == -1).all() and np.isneginf(result.scores[:, n:]).all(), (
            f"{backend}: padding"
        )
    denied_ids = {"deny_ids": list(range(0, N, 2))}
    if shared.capabilities.attributes:
        denied_ids["where"] = "price < 50"
    denied = shared.search(QUERIES[:4], K, filter=denied_ids)
    assert (denied.ids % 2 == 1).all(), f"{backend}: a denied id came back"
    if shared.capabilities.attributes:
        assert (np.asarray(ATTRS["price"])[denied.ids] < 50).all(), f"{backend}: the where clause"


def tags_of(i: int) -> set[str]:
    return set(ATTRS["tags"][i] or ())


MULTI_VALUED = [
    ('contains(tags, "t1") and price < 70', lambda i: "t1" in tags_of(i) and ATTRS["price"][i] < 70),
    ('tags in ["t0", "t4"]', lambda i: bool({"t0", "t4"} & tags_of(i))),
    ('tags != "t2"', lambda i: bool(tags_of(i)) and "t2" not in tags_of(i)),
    ('not contains(tags, "t3")', lambda i: "t3" not in tags_of(i)),
]


@contract
def test_multi_valued_filters_match_any_value(backend, shared):
    """A multi-valued attribute has the filter language's any-of semantics on every backend."""
    for where, keep in MULTI_VALUED:
        result = shared.search(QUERIES, K, filter=where)
        ok = np.array([keep(i) for i in range(N)])
        assert (result.ids >= 0).all(), f"{backend}: {where}: more than k items match, so k must come back"
        assert ok[result.ids].all(), f"{backend}: {where}: an item that does not match came back"
        expected = exact().search(QUERIES, K, filter=where)
        near_exact(backend, result.ids, expected.ids, f"filter {where}", floor=0.9)


@contract
def test_exclusion_masks_history_and_keeps_k(backend, shared):
    first = shared.search(QUERIES[:6], K).ids
    history = [row[: 2 + i] for i, row in enumerate(first)]
    result = shared.search(QUERIES[:6], K, exclude=history)
    for row, seen in zip(result.ids, history, strict=True):
        assert not np.isin(row, seen).any(), f"{backend}: an excluded item came back"
        assert (row >= 0).all(), f"{backend}: history masking shortened a list"


@contract
def test_save_load_round_trip(backend, subject, tmp_path):
    index = subject.filled()
    if not index.capabilities.persist:
        with pytest.raises(RecIndexError, match="save|persist"):
            index.save(tmp_path / "saved")
        return
    index.remove([1, 2, 3])
    where = "price >= 20" if index.capabilities.attributes else {"deny_ids": list(range(0, N, 5))}
    before = index.search(QUERIES, K, filter=where)
    index.save(tmp_path / "saved")
    subject.close()  # a Milvus Lite file is open in one process at a time
    loaded = subject.track(load_index(tmp_path / "saved"))
    after = loaded.search(QUERIES, K, filter=where)
    np.testing.assert_array_equal(after.ids, before.ids, err_msg=f"{backend}: ids after loading")
    np.testing.assert_allclose(
        after.scores, before.scores, rtol=1e-5, atol=1e-5, err_msg=f"{backend}: scores"
    )
    assert len(loaded) == N - 3, f"{backend}: len after loading"
    assert loaded.search_params == index.search_params, f"{backend}: search parameters after loading"
    assert type(loaded) is type(index), f"{backend}: loaded as {type(loaded).__name__}"


@contract
def test_empty_index_refuses_search(backend, subject):
    index = subject.make(DIM)
    with pytest.raises(InvalidRequest, match="empty"):
        index.search(QUERIES[:1], 1)


@contract
def test_capabilities_are_declared(backend, shared):
    caps = shared.capabilities
    for name in ("upsert", "remove", "persist", "attributes"):
        assert isinstance(getattr(caps, name), bool), f"{backend}: capabilities.{name} must be a bool"
    assert caps.filter in ("native", "post-filter"), f"{backend}: capabilities.filter {caps.filter!r}"


@contract
def test_l2_is_negated_squared_distance_or_refused(backend, subject):
    try:
        index = subject.make(DIM, "l2")
    except InvalidRequest as error:
        assert "l2" in str(error), f"{backend}: refusing l2 must say so: {error}"
        return
    index.add(np.arange(N), ITEMS)
    ids, scores = index.search(QUERIES[:3], 5)
    if backend.score_error is not None:
        expected = -((QUERIES[:3, None, :] - ITEMS[ids]) ** 2).sum(axis=2)
        np.testing.assert_allclose(
            scores, expected, rtol=1e-4, atol=4 * backend.score_error, err_msg=str(backend)
        )
    assert (np.diff(scores, axis=1) <= 1e-5).all() and (scores <= 1e-5).all(), f"{backend}: l2 scores"


@contract
def test_bad_input_gets_clear_errors(backend, shared):
    # Last of the checks on the shared index: a backend that breaks "changes nothing" spoils no other.
    index = shared
    before = index.search(QUERIES, K)
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
    assert len(index) == N, f"{backend}: failed calls must change nothing"
    after = index.search(QUERIES, K)
    np.testing.assert_array_equal(after.ids, before.ids, err_msg=f"{backend}: failed calls changed answers")


def test_every_known_defect_names_a_check_and_a_backend_of_this_suite():
    checks = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    backends = {backend.name for backend in BACKENDS}
    for check, backend in KNOWN_DEFECTS:
        assert check in checks and backend in backends, f"KNOWN_DEFECTS names no case: {check}, {backend}"


def test_metric_must_match_the_model():
    check_metric("ip", "ip", normalized=True)
    check_metric("cosine", "ip", normalized=True)
    with pytest.raises(InvalidRequest, match="rank them differently"):
        check_metric("l2", "ip", normalized=True)
    with pytest.raises(InvalidRequest):
        check_metric("cosine", "ip", normalized=False)
