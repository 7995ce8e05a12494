"""A Milvus collection whose partition key is an item attribute (index/milvus/partition_key.py), on
every place a collection can live: a Milvus Lite file, the same file with the presence-field layout of
servers without nullable fields and a Milvus Lite server (tests/milvus_servers.py). Filters on the key,
with and without other conditions, answer as exact search does; upserts that change the key move the
item. The Milvus 2.3.5 standalone server answers filters on a partition key wrongly
(index/milvus/partition_key.py), and is refused with that reason."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install pymilvus)")
pytest.importorskip("milvus_lite", reason="Milvus Lite is not installed (pip install milvus-lite)")

import recindex.index.milvus.partition_key as partition_key  # noqa: E402
import recindex.index.milvus_index as milvus_index  # noqa: E402
from recindex.errors import InvalidRequest  # noqa: E402
from recindex.index.exact_index import ExactIndex  # noqa: E402
from recindex.pipelines.indexes import load_index, make_index  # noqa: E402

N, DIM, K = 400, 16, 10
REGIONS = ["eu", "us", "asia", "none"]  # "none": items without a region name one (no null key)
PLACES = ["lite-file", "lite-file-presence", "lite-server"]
WHERES = ['region == "eu"', 'region in ["eu", "us"] and price < 50', 'region != "eu" and price >= 20', None]


@pytest.fixture(scope="module", params=PLACES)
def place(request):
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "lite-file-presence":  # as on a server without nullable fields
            patch.setattr(milvus_index, "server_has_nullable", lambda version: False)
        if request.param.startswith("lite-file"):
            yield None
        else:
            yield request.getfixturevalue("milvus_server")(request.param)


@pytest.fixture
def make(place, tmp_path):
    made = []

    def make_one(**options):
        where = {"uri": str(tmp_path / "milvus.db")} if place is None else {"uri": place}
        collection = f"pk_{uuid.uuid4().hex[:10]}"
        options = {**where, "collection": collection, "partition_key": "region", **options}
        index = make_index("milvus:FLAT", DIM, options=options)
        made.append(index)
        return index

    yield make_one
    for index in made:
        index.close()


def data():
    rng = np.random.default_rng(0)
    items = rng.standard_normal((N, DIM)).astype(np.float32)
    attributes = {"region": [REGIONS[i % 4] for i in range(N)], "price": [float(i % 100) for i in range(N)]}
    return items, attributes, rng.standard_normal((6, DIM)).astype(np.float32)


def test_the_attribute_is_the_partition_key_and_filters_answer_as_exact_search(make, tmp_path):
    items, attributes, queries = data()
    index, exact = make(), ExactIndex(DIM)
    for each in (index, exact):
        each.add(np.arange(N), items, attributes=attributes)
    fields = {f["name"]: f for f in index.client.describe_collection(index.collection)["fields"]}
    assert fields["region"].get("is_partition_key") is True
    assert not any(f.get("is_partition_key") for name, f in fields.items() if name != "region")
    for where in WHERES:
        np.testing.assert_array_equal(
            index.search(queries, K, filter=where).ids, exact.search(queries, K, filter=where).ids, where
        )
    index.add([0], items[:1], attributes={"region": ["us"], "price": [1.0]})  # an eu item moves to us
    assert 0 in index.search(items[:1], 1, filter='region == "us"').ids
    assert 0 not in index.search(items[:1], K, filter='region == "eu"').ids
    index.save(tmp_path / "saved")
    loaded = load_index(tmp_path / "saved")
    try:
        assert loaded.partition_key == "region"
        np.testing.assert_array_equal(
            loaded.search(queries, K, filter='region == "asia"').ids,
            exact.search(queries, K, filter='region == "asia"').ids,
        )
    finally:
        loaded.close()


def test_items_without_a_string_key_are_refused_before_anything_is_written(make):
    items, attributes, _ = data()
    index = make()
    with pytest.raises(InvalidRequest, match="1 of 2 items have no value"):
        index.add([0, 1], items[:2], attributes={"region": ["eu", None]})
    with pytest.raises(InvalidRequest, match="every add must give each item a region value"):
        index.add([0, 1], items[:2], attributes={"price": [1.0, 2.0]})
    with pytest.raises(InvalidRequest, match="holds strings in Milvus, got num"):
        index.add([0, 1], items[:2], attributes={"region": [1, 2]})
    assert not index.client.has_collection(index.collection)  # nothing was created


def test_a_server_without_partition_keys_is_refused_with_the_reason(make, monkeypatch):
    monkeypatch.setattr(partition_key, "server_has_partition_key", lambda version: False)
    items, attributes, _ = data()
    index = make()
    with pytest.raises(InvalidRequest, match="partition keys .* need Milvus 2.4 or newer"):
        index.add(np.arange(N), items, attributes=attributes)
    assert not index.client.has_collection(index.collection)


@pytest.mark.parametrize(
    ("version", "has"),
    [("milvus_lite-3.2.2", True), ("v2.4.0", True), ("v2.5.4", True), ("v2.3.5-lite", False), ("dev", False)],
)
def test_which_servers_have_partition_keys(version, has):
    assert partition_key.server_has_partition_key(version) is has


def test_the_2_3_standalone_server_is_refused_with_the_reason(milvus_server):
    uri = milvus_server("standalone")
    items, attributes, _ = data()
    options = {"uri": uri, "collection": f"pk_{uuid.uuid4().hex[:10]}", "partition_key": "region"}
    index = make_index("milvus:FLAT", DIM, options=options)
    try:
        with pytest.raises(InvalidRequest, match="reports version 'v2.3.5.*need Milvus 2.4 or newer"):
            index.add(np.arange(N), items, attributes=attributes)
        assert not index.client.has_collection(index.collection)
        index.partition_key = ""  # the same server and data without a partition key are served
        index.add(np.arange(N), items, attributes=attributes)
        exact = ExactIndex(DIM)
        exact.add(np.arange(N), items, attributes=attributes)
        found = index.search(items[:3], K, filter='region == "eu"').ids
        np.testing.assert_array_equal(found, exact.search(items[:3], K, filter='region == "eu"').ids)
    finally:
        index.close()
