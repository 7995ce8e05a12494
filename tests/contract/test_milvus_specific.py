"""Milvus-only behaviour of MilvusIndex (the shared contract: test_index_contract), on every place its
items can live: a Milvus Lite file, the same file with the presence-field layout that servers without
nullable fields get (features.Layout), a Milvus Lite server and a Milvus 2.3 standalone server
(tests/milvus_servers.py; a case skips, saying why, where its server cannot start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install pymilvus)")
pytest.importorskip("milvus_lite", reason="Milvus Lite is not installed (pip install milvus-lite)")

import recindex.index.milvus_index as milvus_index  # noqa: E402
from recindex.errors import BundleError, InvalidRequest, RecIndexError  # noqa: E402
from recindex.index.exact_index import ExactIndex  # noqa: E402
from recindex.index.milvus.connection import collection_name  # noqa: E402
from recindex.index.milvus_index import MilvusIndex  # noqa: E402
from recindex.pipelines.indexes import load_index  # noqa: E402

N, DIM, K = 500, 16, 10
SRC = Path(__file__).resolve().parents[2] / "src"


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((N, DIM)).astype(np.float32)
    attributes = {
        "category": [None if i % 11 == 0 else f"c{i % 5}" for i in range(N)],
        "price": [None if i % 13 == 0 else float(rng.uniform(0, 100)) for i in range(N)],
        "in_stock": [None if i % 17 == 0 else bool(i % 3) for i in range(N)],
    }
    return items, attributes, rng.standard_normal((8, DIM)).astype(np.float32)


PLACES = ["lite-file", "lite-file-presence", "lite-server", "standalone"]


@pytest.fixture(scope="module", params=PLACES)
def place(request):
    """(kind, the server's uri or None for a Lite file) of where this module's cases put collections;
    module-scoped, so that a server's cases share the read-only index of `filled`."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "lite-file-presence":  # as on a server without nullable fields
            patch.setattr(milvus_index, "server_has_nullable", lambda version: False)
        if request.param.startswith("lite-file"):
            yield request.param, None
        else:
            yield request.param, request.getfixturevalue("milvus_server")(request.param)


@pytest.fixture
def uri(place, tmp_path) -> str:
    return place[1] or str(tmp_path / "milvus.db")


def opener(uri: str):
    """make(metric, index_type, name, **options) -> a MilvusIndex at `uri`, and the indexes made."""
    made = []
    prefix = "" if uri.endswith(".db") else f"t{uuid.uuid4().hex[:10]}_"  # a server is shared by tests

    def make(metric="ip", index_type="FLAT", name="items", **options):
        index = MilvusIndex(DIM, metric, index_type, uri=uri, collection=prefix + name, **options)
        made.append(index)
        return index

    return make, made


@pytest.fixture
def open_index(uri):
    make, made = opener(uri)
    yield make
    for index in made:
        index.close()


@pytest.fixture(scope="module")
def filled(place, tmp_path_factory):
    """(milvus, exact, queries) filled alike once per place, for the cases that only read."""
    make, made = opener(place[1] or str(tmp_path_factory.mktemp("filled") / "milvus.db"))
    yield both(make)
    for index in made:
        index.close()


def both(open_index, metric="ip"):
    items, attributes, queries = data()
    milvus, exact = open_index(metric), ExactIndex(DIM, metric)
    for index in (milvus, exact):
        index.add(np.arange(N), items, attributes=attributes)
    return milvus, exact, queries


def test_upsert_replaces_vector_and_attributes(open_index):
    index, _, queries = both(open_index)
    index.add([7], queries[:1], attributes={"category": ["new"], "price": [None]})
    assert len(index) == N
    top = index.search(queries[:1], 1)
    assert top.ids[0, 0] == 7 and top.scores[0, 0] == pytest.approx(float(queries[0] @ queries[0]), rel=1e-5)
    assert index.search(queries[:1], 5, filter='category == "new"').ids[0, 0] == 7
    assert 7 not in index.search(queries[:1], K, filter="price >= 0").ids
    assert 7 not in index.search(queries[:1], K, filter="in_stock == true or in_stock == false").ids


def test_remove_counts_and_forgets(open_index):
    index, _, queries = both(open_index)
    first = index.search(queries[:1], 3).ids[0]
    assert index.remove([int(first[0]), int(first[1]), N + 5]) == 2
    assert len(index) == N - 2
    assert index.remove([int(first[0])]) == 0
    assert not np.isin(first[:2], index.search(queries[:1], K).ids).any()
    index.add([int(first[0])], np.ones((1, DIM)))
    assert len(index) == N - 1


@pytest.mark.parametrize(
    "where",
    [
        'category == "c1"',
        'category in ["c1", "c3"]',
        'category not in ["c1"]',
        'category != "c2"',
        "20 <= price < 60",
        'price > 50 and (category == "c0" or in_stock == true)',
        "not (price > 30)",
        'not (in_stock == true) or category == "c4"',
        {"where": "price < 70", "allow_ids": list(range(0, N, 3)), "deny_ids": [0, 3, 6]},
    ],
)
def test_filters_match_the_exact_backend(filled, where):
    milvus, exact, queries = filled
    got, expected = milvus.search(queries, K, filter=where), exact.search(queries, K, filter=where)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5, atol=1e-5)


def test_l2_scores_are_negated_squared_distances(open_index):
    milvus, exact, queries = both(open_index, "l2")
    got, expected = milvus.search(queries, K), exact.search(queries, K)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-4, atol=1e-4)
    assert (np.diff(got.scores, axis=1) <= 0).all()


def test_short_filtered_rows_are_filled(open_index):
    # A sparse graph and a tiny ef leave filtered HNSW rows short (some empty): the wider searches and
    # the exact pass over the 21 matching items must fill every row.
    rng = np.random.default_rng(3)
    items = rng.standard_normal((2000, DIM)).astype(np.float32)
    rare = {"rare": [i % 97 == 0 for i in range(2000)]}
    index = open_index(index_type="HNSW", index_params={"M": 4, "efConstruction": 8})
    exact = ExactIndex(DIM)
    for each in (index, exact):
        each.add(np.arange(2000), items, attributes=rare)
    queries = rng.standard_normal((20, DIM)).astype(np.float32)
    got = index.search(queries, 15, filter="rare == true", params={"ef": 1})
    expected = exact.search(queries, 15, filter="rare == true").ids
    assert (got.ids >= 0).all() and (got.ids % 97 == 0).all()
    assert np.mean([len(set(a) & set(b)) / 15 for a, b in zip(got.ids, expected, strict=True)]) >= 0.8


def test_wait_for_index_returns_once_the_rows_are_indexed(open_index, place):
    # On the standalone server the wait asks describe_index about a timestamp taken after the flush
    # (milvus.connection); 3,000 rows are above the 1,024 below which Milvus indexes no segment.
    index = open_index(index_type="HNSW", index_params={"M": 8, "efConstruction": 32})
    n = 3_000
    index.add(np.arange(n), np.random.default_rng(5).standard_normal((n, DIM)).astype(np.float32))
    index.wait_for_index(timeout_s=240.0, poll_s=0.5)
    if place[0] == "standalone":
        described = index.client.describe_index(index.collection, "vector")
        assert described["indexed_rows"] == described["total_rows"] == n


def served_from_its_index(index: MilvusIndex, timeout_s: float = 180.0) -> None:
    """Wait until the query node serves every row of `index` from a built index: a built index is
    loaded by the query node some seconds later (about 20 s on the 2.3.5 server), and until then its
    rows are searched by brute force."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        segments = index.client._get_connection().get_query_segment_info(index.collection)
        indexed = sum(s.num_rows for s in segments if s.index_name)
        if segments and indexed == sum(s.num_rows for s in segments) >= len(index):
            return
        time.sleep(1.0)
    raise AssertionError(f"the query node did not load the index of {index.collection!r} in {timeout_s:g} s")


def test_scann_is_searched_with_the_users_nprobe(milvus_server):
    # SCANN (a server's index type; Milvus Lite has none) takes nprobe as the IVF types do: probing
    # more of its 64 lists must find more of the exact top 10.
    make, made = opener(milvus_server("standalone"))
    try:
        rng = np.random.default_rng(11)
        items = rng.standard_normal((3_000, DIM)).astype(np.float32)
        index, exact = make("l2", "SCANN", "scann", index_params={"nlist": 64}), ExactIndex(DIM, "l2")
        for each in (index, exact):
            each.add(np.arange(len(items)), items)
        index.wait_for_index(timeout_s=240.0, poll_s=0.5)
        served_from_its_index(index)
        queries = rng.standard_normal((30, DIM)).astype(np.float32)
        truth = exact.search(queries, 10).ids

        def recall(nprobe: int) -> float:
            found = index.search(queries, 10, params={"nprobe": nprobe}).ids
            return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))

        assert recall(1) < recall(64)
    finally:
        for each in made:
            each.close()


def test_data_survives_a_new_process(open_index, uri, tmp_path):
    index, _, queries = both(open_index)
    index.remove([1, 2])
    before = index.search(queries, K, filter="price < 80")
    index.save(tmp_path / "saved")
    state = json.loads((tmp_path / "saved" / "manifest.json").read_text())["state"]
    # A Lite file sits beside the saved folder, so it is recorded relative to it (movable together).
    assert state["uri"] == ("./milvus.db" if uri.endswith(".db") else uri)
    assert "token" not in json.dumps(state)
    index.close()  # a Lite file is open in one process at a time
    # The core backends' loader (Milvus is one of them): the new process needs no torch, the costly part
    # of starting it when it imports the composition root (pipelines) whose loader adds the learned ones.
    script = (
        "import json, sys, numpy as np\n"
        "from recindex.index.factory import load_index\n"
        "index = load_index(sys.argv[1])\n"
        "result = index.search(np.array(json.loads(sys.argv[2]), np.float32), 10, filter='price < 80')\n"
        "print(json.dumps({'n': len(index), 'ids': result.ids.tolist(), 'scores': result.scores.tolist()}))\n"
        "index.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    arguments = [str(tmp_path / "saved"), json.dumps(queries.tolist())]
    run = subprocess.run(
        [sys.executable, "-c", script, *arguments], capture_output=True, text=True, timeout=240, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    after = json.loads(run.stdout.strip().splitlines()[-1])
    assert after["n"] == N - 2
    np.testing.assert_array_equal(after["ids"], before.ids)
    np.testing.assert_allclose(after["scores"], before.scores, rtol=1e-6)


def test_schema_and_naming_errors(open_index, tmp_path):
    assert collection_name("beauty-2024.06") == "beauty_2024_06"
    assert collection_name("7days") == "_7days"
    with pytest.raises(InvalidRequest, match="255"):
        collection_name("x" * 300)
    index, _, queries = both(open_index)
    with pytest.raises(InvalidRequest, match="'colour'"):
        index.add([1], queries[:1], attributes={"colour": ["red"]})
    with pytest.raises(InvalidRequest, match="unknown attribute 'colour'"):
        index.search(queries[:1], K, filter='colour == "red"')
    with pytest.raises(InvalidRequest, match="holds numbers"):
        index.search(queries[:1], K, filter='price == "cheap"')
    with pytest.raises(InvalidRequest, match="reserved"):
        open_index(name="other").add([1], queries[:1], attributes={"id": [3]})
    with pytest.raises(RecIndexError, match="already exists"):
        open_index(name="items").add([1], queries[:1])


def test_load_of_a_dropped_collection_is_a_bundle_error(open_index, tmp_path):
    index, _, _ = both(open_index)
    index.save(tmp_path / "saved")
    index.client.drop_collection(index.collection)
    with pytest.raises(BundleError, match="not at"):
        load_index(tmp_path / "saved")


def test_layout_follows_what_the_server_supports(open_index, place):
    index, _, _ = both(open_index)
    fields = {field["name"] for field in index.client.describe_collection(index.collection)["fields"]}
    nullable = place[0] in ("lite-file", "lite-server")  # the 2.3 standalone server has no nullable fields
    assert index.layout.nullable is nullable
    assert ("price__present" in fields) is not nullable and "category" in fields
    with pytest.raises(InvalidRequest, match="reserved"):
        open_index(name="other").add([1], np.ones((1, DIM)), attributes={"price__present": [True]})
