"""Partitions by an item attribute: items live in the partition of their value, upserts move them,
pinned filters search only their partitions, and the result is exact filtered search's."""

import numpy as np
import pytest

from recindex.errors import InvalidRequest
from recindex.index.filters import parse_expression
from recindex.index.partition_filters import pinned_keys
from recindex.index.partitioned import MAX_PARTITIONS, PartitionedIndex
from recindex.index.specs import ShardedSpec, parse_spec
from recindex.pipelines.indexes import SPECS, load_index, make_index

N, DIM = 400, 8
REGIONS = ["eu", "us", "asia", None]  # every fourth item has no region: the default partition


def catalogue():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    attributes = {"region": [REGIONS[i % 4] for i in range(N)], "price": [float(i % 50) for i in range(N)]}
    return vectors, attributes


def filled(spec="sharded:by=region:exact"):
    vectors, attributes = catalogue()
    index = make_index(spec, DIM)
    index.add(np.arange(N), vectors, attributes=attributes)
    index.count_candidates = True
    return index, vectors, attributes


def exact_index(vectors, attributes):
    index = make_index("exact", DIM)
    index.add(np.arange(N), vectors, attributes=attributes)
    return index


def test_the_spec_names_the_attribute_and_the_inner_spec():
    spec = parse_spec("sharded:by=region:faiss:IVF16,Flat", SPECS)
    assert spec == ShardedSpec(by="region", inner="faiss:IVF16,Flat")
    assert parse_spec(spec.text(), SPECS) == spec
    table = parse_spec("sharded", SPECS, {"sharded": {"by": "region", "inner": "exact"}})
    assert table == ShardedSpec(by="region", inner="exact")  # the run config's [index.sharded] table


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sharded:by=re-gion:exact", "names one attribute"),
        ("sharded:by=region:milvus:HNSW", "partition_key=ATTRIBUTE"),
        ("sharded:by=region:sharded:2:exact", "in-process index"),
    ],
)
def test_a_partitioned_spec_that_cannot_be_built_is_refused(text, message):
    with pytest.raises(InvalidRequest, match=message):
        make_index(text, DIM)


@pytest.mark.parametrize(
    ("where", "pinned"),
    [
        ('region == "eu"', {("str", "eu")}),
        ('contains(region, "eu")', {("str", "eu")}),
        ('region in ["eu", "us"] and price < 10', {("str", "eu"), ("str", "us")}),
        ('region in ["eu", "us"] and region == "us"', {("str", "us")}),
        ('region == "eu" or region == "us"', {("str", "eu"), ("str", "us")}),
        ("region == 3", {("num", 3.0)}),
        ("region == true", {("bool", True)}),
        ('region == "eu" or price < 10', None),
        ('region != "eu"', None),
        ('not (region == "eu")', None),
        ('region not in ["eu"]', None),
        ("price < 10", None),
    ],
)
def test_which_filters_pin_the_partition_attribute(where, pinned):
    assert pinned_keys(parse_expression(where), "region") == pinned


def test_items_go_to_their_values_partition_and_the_rest_to_the_default():
    index, _, _ = filled()
    assert index.partition_sizes() == {"": 100, "eu": 100, "us": 100, "asia": 100}
    assert len(index) == N


@pytest.mark.parametrize("spec", ["sharded:by=region:exact", "sharded:by=region:faiss:Flat"])
@pytest.mark.parametrize(
    ("where", "scored"),
    [
        ('region == "eu"', 100),
        ('region in ["eu", "us"]', 200),
        ('region in ["eu", "us"] and price < 10', None),  # FAISS scores the few matches exactly
        ("price < 10", None),
        (None, N),
    ],
)
def test_a_pinned_filter_scores_only_its_partitions_and_finds_what_exact_search_finds(spec, where, scored):
    index, vectors, attributes = filled(spec)
    queries = vectors[:5] + 0.1
    found = index.search(queries, 10, filter=where)
    truth = exact_index(vectors, attributes).search(queries, 10, filter=where)
    np.testing.assert_array_equal(found.ids, truth.ids)
    if spec.endswith("exact"):  # exact scores the items the filter keeps, in the partitions it searches
        assert found.scored.tolist() == truth.scored.tolist()
    elif scored is not None:  # FAISS Flat scores every item of each partition it searches
        assert found.scored.tolist() == [scored] * 5


def test_an_upsert_that_changes_the_value_moves_the_item():
    index, vectors, _ = filled()
    index.add([0, 1], vectors[:2], attributes={"region": ["us", None]})  # eu -> us, us -> default
    assert index.partition_sizes() == {"": 101, "eu": 99, "us": 100, "asia": 100}
    in_us = index.search(vectors[:1], 100, filter='region == "us"').ids
    in_eu = index.search(vectors[:1], 99, filter='region == "eu"').ids
    assert 0 in in_us and 0 not in in_eu and 1 not in in_us
    index.add([2], vectors[2:3])  # an upsert without attributes has no region
    assert index.partition_sizes()[""] == 102
    assert index.remove([0, 1, 2, 10**9]) == 3
    assert len(index) == N - 3
    assert index.partition_sizes() == {"": 100, "eu": 99, "us": 99, "asia": 99}


def test_history_masking_and_a_value_no_item_has():
    index, vectors, _ = filled()
    first = index.search(vectors[:1], 3, filter='region == "eu"').ids[0]
    masked = index.search(vectors[:1], 3, filter='region == "eu"', exclude=[first[:2]])
    assert masked.ids[0, 0] == first[2] and not np.isin(first[:2], masked.ids).any()
    nothing = index.search(vectors[:2], 3, filter='region == "mars"')
    assert (nothing.ids == -1).all() and nothing.scored.tolist() == [0, 0]


def test_save_and_load_keep_the_partitions_and_the_item_map(tmp_path):
    index, vectors, _ = filled("sharded:by=region:faiss:HNSW16")
    index.save(tmp_path / "index")
    loaded = load_index(tmp_path / "index")
    assert isinstance(loaded, PartitionedIndex) and loaded.partition_sizes() == index.partition_sizes()
    np.testing.assert_array_equal(
        loaded.search(vectors[:3], 5, filter='region == "us"').ids,
        index.search(vectors[:3], 5, filter='region == "us"').ids,
    )
    loaded.add([0, N], vectors[:2], attributes={"region": ["africa", "africa"]})  # a move, a new value
    assert loaded.partition_sizes()["africa"] == 2 and loaded.partition_sizes()["eu"] == 99
    assert sorted(loaded.search(vectors[:1], 2, filter='region == "africa"').ids[0]) == [0, N]


def test_numbers_are_partitions_by_value_and_one_kind_holds_for_the_whole_index():
    index = make_index("sharded:by=tier:exact", DIM)
    vectors, _ = catalogue()
    index.add(np.arange(3), vectors[:3], attributes={"tier": [1, 1.0, 2]})
    assert index.partition_sizes() == {"": 0, "1.0": 2, "2.0": 1}
    assert sorted(index.search(vectors[:1], 2, filter="tier == 1").ids[0]) == [0, 1]
    with pytest.raises(InvalidRequest, match="'tier' holds num values, got bool values"):
        index.add([5], vectors[5:6], attributes={"tier": [True]})  # one index would refuse it too


def test_filters_on_attributes_some_partitions_never_held_mean_what_they_mean_in_one_index():
    vectors, attributes = catalogue()
    index = make_index("sharded:by=region:exact", DIM)
    brands = [("acme" if i % 8 == 0 else None) for i in range(N)]  # only eu items (i % 4 == 0) have one
    index.add(np.arange(N), vectors, attributes={**attributes, "brand": brands})
    one = exact_index(vectors, {**attributes, "brand": brands})
    for where in ['brand == "acme"', 'not (brand == "acme")', 'brand != "acme" or price < 3', "price < 3"]:
        np.testing.assert_array_equal(
            index.search(vectors[:4], 20, filter=where).ids, one.search(vectors[:4], 20, filter=where).ids
        )
    with pytest.raises(InvalidRequest, match="unknown attribute 'colour'"):
        index.search(vectors[:1], 5, filter='colour == "red"')


def test_bad_partition_values_are_refused_clearly():
    index = make_index("sharded:by=region:exact", DIM)
    vectors, _ = catalogue()
    with pytest.raises(InvalidRequest, match="partition attribute 'region': each item needs one"):
        index.add([0], vectors[:1], attributes={"region": [["eu", "us"]]})
    with pytest.raises(InvalidRequest, match=f"at most {MAX_PARTITIONS - 1}"):
        index.add(np.arange(N), vectors, attributes={"region": [f"r{i}" for i in range(N)]})
    assert len(index) == 0 and len(index.shards) == 1  # nothing was made of the refused adds
