"""A fleet's shared tables (versions, items) are created by whichever replica gets there first; the
others load them once their creator has indexed them, instead of failing their start."""

from __future__ import annotations

import pytest

pymilvus = pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus")

from recindex.errors import RecIndexError  # noqa: E402
from recindex.index.milvus.aliases import create_table  # noqa: E402
from recindex.index.milvus.connection import MilvusConnection  # noqa: E402


class CreatedElsewhere:
    """A server on which another replica created the table and indexes it after `index_after` of our
    load attempts (Milvus refuses to load a collection that has no index yet)."""

    def __init__(self, index_after: int):
        self.index_after, self.loads, self.loaded = index_after, 0, False

    def has_collection(self, name):
        return True

    def list_indexes(self, name):
        return ["_placeholder"] if self.loads > self.index_after else []

    def load_collection(self, name):
        self.loads += 1
        if self.loads <= self.index_after:
            raise pymilvus.MilvusException(code=700, message=f"index not found[collection={name}]")
        self.loaded = True


def connection_to(client) -> MilvusConnection:
    connection = MilvusConnection("http://127.0.0.1:1", None, "shop__versions")
    connection._client = client
    return connection


def test_a_replica_loads_a_table_another_replica_is_still_indexing():
    server = CreatedElsewhere(index_after=3)
    create_table(connection_to(server), "collection", {"bundle_id": "text"})
    assert server.loaded and server.loads == 4


def test_a_load_that_fails_on_an_indexed_table_is_reported():
    class Broken(CreatedElsewhere):
        def list_indexes(self, name):
            return ["_placeholder"]

    with pytest.raises(RecIndexError, match="index not found"):
        create_table(connection_to(Broken(index_after=1)), "collection", {"bundle_id": "text"})
