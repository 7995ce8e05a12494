"""The code size of the learned indexes' 4-bit lists (`code_dims`): a spec field, kept by save and
load, read as one code per two dimensions for indexes saved before it existed, and finer codes give
better estimates."""

import json

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.pipelines.indexes import load_index, make_index

DIM = 16
ITEMS = np.random.default_rng(3).standard_normal((3000, DIM)).astype(np.float32)
QUERIES = ITEMS[:60] + 0.3 * np.random.default_rng(4).standard_normal((60, DIM)).astype(np.float32)
SPECS = {
    "mfli": ("mfli:storage=pq4", {"leaves": 64, "refine": 1}),
    "ci": ("ci:compress=pq4,min_agreement=0", {"nprobe": 64, "refine": 1}),
}


def built(family: str, code_dims: int | None):
    spec, _ = SPECS[family]
    index = make_index(spec if code_dims is None else f"{spec},code_dims={code_dims}", DIM)
    index.add(np.arange(len(ITEMS)), ITEMS)
    return index


def recall_at_10(index, params) -> float:
    truth = np.argsort(-(QUERIES @ ITEMS.T), axis=1)[:, :10]
    found = index.search(QUERIES, 10, params=params).ids
    return float(np.mean([np.isin(t, f).mean() for t, f in zip(truth, found, strict=True)]))


@pytest.mark.parametrize("family", SPECS)
def test_one_code_per_dimension_is_the_default_and_estimates_better(family):
    _, shallow = SPECS[family]  # refine 1: the answer is the codes' own top k, rescored
    assert built(family, None).code_dims == 1
    fine, coarse = recall_at_10(built(family, 1), shallow), recall_at_10(built(family, 2), shallow)
    assert fine > coarse


@pytest.mark.parametrize("family", SPECS)
def test_code_dims_survive_a_reload_and_older_indexes_read_as_two(family, tmp_path):
    _, shallow = SPECS[family]
    for code_dims in (1, 2):
        index = built(family, code_dims)
        index.save(tmp_path / f"d{code_dims}")
        loaded = load_index(tmp_path / f"d{code_dims}")
        assert loaded.code_dims == code_dims
        expected = index.search(QUERIES, 10, params=shallow).ids
        np.testing.assert_array_equal(loaded.search(QUERIES, 10, params=shallow).ids, expected)
    # an index saved before the field existed held one code per two dimensions
    manifest_path = tmp_path / "d2" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["state"]["code_dims"]
    manifest_path.write_text(json.dumps(manifest))
    older = load_index(tmp_path / "d2")
    assert older.code_dims == 2
    np.testing.assert_array_equal(older.search(QUERIES, 10, params=shallow).ids, expected)


@pytest.mark.parametrize("family", SPECS)
def test_a_code_size_that_does_not_divide_the_dimension_is_refused(family):
    spec, _ = SPECS[family]
    with pytest.raises(InvalidRequest, match="code_dims must be a positive divisor of the dimension 16"):
        make_index(f"{spec},code_dims=3", DIM)


@pytest.mark.parametrize("family", SPECS)
def test_a_refine_deeper_than_the_catalogue_asks_for_nothing_more(family):
    """k x refine past every code held rescores every candidate, as the catalogue's size does, and
    allocates no more than the codes held (a refine of a billion would be terabytes otherwise)."""
    _, shallow = SPECS[family]
    index = built(family, None)
    whole = index.search(QUERIES, 10, params={**shallow, "refine": len(ITEMS)})
    huge = index.search(QUERIES, 10, params={**shallow, "refine": 10**9})
    np.testing.assert_array_equal(huge.ids, whole.ids)
    np.testing.assert_array_equal(huge.scores, whole.scores)
