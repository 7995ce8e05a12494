"""FAISS 4-bit PQ fast-scan (`PQ..x4fs`, `PQ..x4fsr`) through the FAISS backend: the parameter chain,
writes, filters and compaction on the structures FAISS handles differently from other indexes."""

import faiss
import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.factory import load_index, make_index
from recindex.index.specs import ivf_lists_for, recommended_faiss

N, DIM = 3000, 32


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, DIM))
    x = centres[rng.integers(0, 30, n)] + 0.4 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


ITEMS = clustered(N, 0)
QUERIES = clustered(50, 1)


def recall(found: np.ndarray, k: int) -> float:
    truth = np.argsort(-(QUERIES @ ITEMS.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))


def filled(spec: str, **params):
    index = make_index(spec, DIM, "ip", search_params=params or None)
    index.add(np.arange(N), ITEMS)
    return index


def test_residual_fast_scan_with_more_probes_than_lists_is_not_garbage():
    # FAISS's IVF fast-scan by residual under inner product returns scores of ~1e31 and no true
    # neighbour when nprobe exceeds nlist; the backend's default nprobe (32) does on 16 lists.
    index = filled("faiss:IVF16,PQ16x4fsr,RFlat")
    result = index.search(QUERIES, 10)
    assert recall(result.ids, 10) > 0.8
    assert np.abs(result.scores).max() <= 1.0 + 1e-5


def test_flat_fast_scan_under_refine_searches():
    # IndexPQFastScan refuses any parameter object, so the refine stage must pass it none.
    index = filled("faiss:PQ16x4fs,RFlat", k_factor=8)
    assert recall(index.search(QUERIES, 10).ids, 10) > 0.9


@pytest.mark.parametrize(
    "spec", ["faiss:IVF16,PQ16x4fs", "faiss:IVF16,PQ16x4fsr", "faiss:IVF16,PQ16x4fs,RFlat"]
)
def test_upserted_fast_scan_item_is_scored_by_its_new_vector(spec):
    # An add after FAISS's remove_ids on fast-scan lists stores a corrupt code (faiss 1.15.1): the
    # upserted item must score as the same vector added under a new id does.
    index = filled(spec, nprobe=16)
    target = QUERIES[0]
    index.add([5], target[None, :])
    index.add([N], target[None, :])
    result = index.search(target[None, :], 2)
    assert sorted(result.ids[0]) == [5, N]
    assert result.scores[0, 0] == result.scores[0, 1]
    assert len(index) == N + 1


def test_fast_scan_lists_remove_and_compact_keep_the_answers():
    index = filled("faiss:IVF16,PQ16x4fs", nprobe=16)
    gone = np.arange(0, N, 7)
    assert index.remove(gone) == len(gone)
    before = index.search(QUERIES, 20)
    assert not np.isin(before.ids, gone).any()
    assert index.tombstones == len(gone)
    index.compact()
    after = index.search(QUERIES, 20)
    assert index.tombstones == 0 and len(index) == N - len(gone)
    # Codes of the vectors themselves (not residuals) decode and re-encode to the same codes.
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_allclose(before.scores, after.scores, rtol=1e-5)


def test_fast_scan_lists_take_the_id_selector():
    index = filled("faiss:IVF16,PQ16x4fs,RFlat", nprobe=4)
    keep = np.arange(N) % 3 == 0
    index.add(np.arange(N), ITEMS, attributes={"keep": keep.tolist()})
    result = index.search(QUERIES, 10, filter="keep == true", params={"exact_below": 1})
    assert index.capabilities.filter == "native"
    assert (result.ids >= 0).all() and keep[result.ids].all()


def test_small_filters_on_code_only_lists_are_scored_by_their_codes():
    index = filled("faiss:IVF16,PQ16x4fsr", nprobe=2)
    allowed = np.arange(100, 400)
    result = index.search(QUERIES, 10, filter={"allow_ids": allowed.tolist()})
    assert np.isin(result.ids, allowed).all()
    # The same ranking as probing every list under the filter, not the 2 probed lists only.
    wide = index.search(
        QUERIES, 10, filter={"allow_ids": allowed.tolist()}, params={"nprobe": 16, "exact_below": 1}
    )
    np.testing.assert_array_equal(result.ids, wide.ids)


def test_fast_scan_candidates_are_counted():
    index = filled("faiss:IVF16,PQ16x4fs,RFlat", nprobe=2, k_factor=4)
    index.count_candidates = True
    scored = index.search(QUERIES, 10).scored
    assert (scored < N / 2).all() and (scored >= 16 + 40).all()


@pytest.mark.parametrize("spec", ["faiss:IVF16,PQ16x4fs,RFlat", "faiss:IVF16,PQ16x4fs"])
def test_fast_scan_round_trip_keeps_tombstones_and_answers(spec, tmp_path):
    index = filled(spec, nprobe=8)
    index.remove([1, 2, 3])
    index.add([4], QUERIES[:1])
    index.save(tmp_path / "ix")
    loaded = load_index(tmp_path / "ix")
    assert isinstance(faiss.downcast_index(loaded.index), faiss.IndexRefineFlat | faiss.IndexIVFPQFastScan)
    assert loaded.tombstones == index.tombstones == 4
    mine, theirs = index.search(QUERIES, 10), loaded.search(QUERIES, 10)
    np.testing.assert_array_equal(mine.ids, theirs.ids)
    assert loaded.search(QUERIES[:1], 1).ids[0, 0] == 4


def test_recommended_spec_follows_the_catalogue_and_builds():
    assert recommended_faiss(1_000_000, 64) == "faiss:IVF2048,PQ64x4fsr,RFlat"
    assert recommended_faiss(100_000, 64) == "faiss:IVF512,PQ64x4fsr,RFlat"
    assert recommended_faiss(10_000_000, 32) == "faiss:IVF4096,PQ32x4fsr,RFlat"  # ivf_lists_for's cap
    assert ivf_lists_for(N) == 64  # 39 training points per list cap it below 4 sqrt(n)
    index = filled(recommended_faiss(N, DIM), nprobe=16, k_factor=8)
    assert recall(index.search(QUERIES, 10).ids, 10) > 0.9
    with pytest.raises(InvalidRequest, match="at least 39"):
        ivf_lists_for(10)


def test_coarse_kmeans_runs_the_iterations_asked_for_and_saves_them(tmp_path):
    index = make_index("faiss:IVF32,Flat", DIM, "ip", options={"kmeans_iterations": 3})
    index.add(np.arange(N), ITEMS)
    assert faiss.extract_index_ivf(index.index).cp.niter == 3
    index.save(tmp_path / "ix")
    assert load_index(tmp_path / "ix").kmeans_iterations == 3
    assert faiss.extract_index_ivf(filled("faiss:IVF32,Flat").index).cp.niter == 10  # FAISS's: 25
    with pytest.raises(InvalidRequest, match="kmeans_iterations"):
        make_index("faiss:IVF32,Flat", DIM, "ip", options={"kmeans_iterations": 0}).add(np.arange(N), ITEMS)
