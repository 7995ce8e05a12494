"""A Milvus standalone server stopped and started again on the same data folder still holds the
collection and its rows, and a saved index loads and answers as before (a server of the test's own:
the run's shared server keeps serving the other tests). Killed with SIGKILL instead, it still holds every
row whose insert it acknowledged, flushed or not."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install 'recindex[milvus]')")

from milvus_servers import MilvusProcess, ServerUnavailable, shared_binaries, unavailable  # noqa: E402
from recindex.index.exact_index import ExactIndex  # noqa: E402
from recindex.index.milvus_index import MilvusIndex  # noqa: E402
from recindex.pipelines.indexes import load_index  # noqa: E402

N, DIM, K = 400, 16, 10


def test_standalone_server_restart_keeps_the_collection_and_its_rows(tmp_path):
    rng = np.random.default_rng(5)
    items = rng.standard_normal((N, DIM)).astype(np.float32)
    queries = rng.standard_normal((6, DIM)).astype(np.float32)
    attributes = {"price": [None if i % 7 == 0 else float(i % 50) for i in range(N)]}
    server = MilvusProcess("standalone", tmp_path / "server", shared_binaries())
    try:
        uri = server.start()
    except ServerUnavailable as error:
        unavailable(str(error))
    try:
        index = MilvusIndex(DIM, "ip", "HNSW", uri=uri, collection="restart")
        index.add(np.arange(N), items, attributes=attributes)
        index.remove([3, 4])
        before = index.search(queries, K, filter="not (price < 20)")
        index.save(tmp_path / "saved")  # flushes: the rows are in sealed segments on disk
        index.close()
        server.stop()
        assert server.start() == uri, "the restarted server must be reachable at the same uri"
        loaded = load_index(tmp_path / "saved")
        after = loaded.search(queries, K, filter="not (price < 20)")
        assert len(loaded) == N - 2
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_allclose(after.scores, before.scores, rtol=1e-5, atol=1e-5)
        exact = ExactIndex(DIM)
        exact.add(np.arange(N), items, attributes=attributes)
        exact.remove([3, 4])
        np.testing.assert_array_equal(after.ids, exact.search(queries, K, filter="not (price < 20)").ids)
        loaded.close()
    finally:
        server.stop()


def test_standalone_server_killed_keeps_every_acknowledged_row(tmp_path):
    rng = np.random.default_rng(6)
    items = rng.standard_normal((N, DIM)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)  # each item its own best inner product
    server = MilvusProcess("standalone", tmp_path / "server", shared_binaries())
    try:
        uri = server.start()
    except ServerUnavailable as error:
        unavailable(str(error))
    try:
        index = MilvusIndex(DIM, "ip", "HNSW", uri=uri, collection="crash")
        index.add(np.arange(N // 2), items[: N // 2])
        index.save(tmp_path / "saved")
        index.add(np.arange(N // 2, N), items[N // 2 :])  # acknowledged, never flushed
        index.remove([0, N - 1])
        index.close()
        server.kill_9()
        assert server.start() == uri, "the restarted server must be reachable at the same uri"
        loaded = load_index(tmp_path / "saved")
        assert len(loaded) == N - 2
        found = loaded.search(items[[1, N // 2, N - 2]], 1)
        np.testing.assert_array_equal(found.ids[:, 0], [1, N // 2, N - 2])
        loaded.close()
    finally:
        server.stop()
