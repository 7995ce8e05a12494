"""MilvusConnection.wait_for_index against a fake Milvus server that reports index builds as a 2.3.5
standalone server does (its data coordinator's describe_index, reduced to segments):

- total_rows / indexed_rows / pending_index_rows count every flushed segment; a segment without a
  finished index of its own is pending, however recent (compaction keeps writing such segments, so at
  10M items the pending count never reached 0);
- the state counts only the segments sealed at or before the timestamp asked about, or, without one,
  before the index was created: Finished at once for an index made with its collection.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from recindex.errors import RecIndexError
from recindex.index.milvus.connection import MilvusConnection

ROWS = 30_000


@dataclass
class Segment:
    rows: int
    sealed_at: int  # the timestamp its last row expires at
    builds_left: int  # describe_index calls before its index is finished; -1: never
    failed: str = ""

    @property
    def indexed(self) -> bool:
        return self.builds_left == 0


class FakeServer:
    """One collection whose index was created with it (at timestamp 1), `unflushed` rows in a growing
    segment, and a segment written later by compaction that the server never indexes."""

    def __init__(self, builds: int = 3, fail: str = ""):
        self.clock = 1
        self.index_created_at = 1
        self.unflushed = ROWS
        self.builds, self.fail = builds, fail
        self.segments: list[Segment] = []
        self.described = 0

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    # MilvusClient
    def flush(self, collection):
        self.segments.append(Segment(self.unflushed, self.tick(), self.builds))
        self.unflushed = 0
        # compaction's output, sealed after anything the client asks about and never indexed here
        self.segments.append(Segment(2_000, 10**9, -1))

    def describe_index(self, collection, index_name, timeout=None, timestamp=None, **kwargs):
        self.described += 1
        for segment in self.segments:
            if segment.builds_left > 0:
                segment.builds_left -= 1
                if segment.builds_left == 0 and self.fail:
                    segment.builds_left, segment.failed = -1, self.fail
        asked = self.index_created_at if timestamp is None else timestamp
        covered = [s for s in self.segments if s.sealed_at <= asked]
        if any(s.failed for s in covered):
            state = "Failed"
        elif all(s.indexed for s in covered):
            state = "Finished"
        else:
            state = "InProgress"
        total = sum(s.rows for s in self.segments)
        indexed = sum(s.rows for s in self.segments if s.indexed)
        return {
            "field_name": "vector",
            "index_name": index_name,
            "index_type": "HNSW",
            "total_rows": total,
            "indexed_rows": indexed,
            "pending_index_rows": total - indexed,
            "state": state,
        }

    def _get_connection(self):
        return self  # the handler: alloc_timestamp, get_index_state

    # the handler behind it
    def alloc_timestamp(self, timeout=None, **kwargs) -> int:
        return self.tick()

    def get_index_state(self, collection, index_name, timeout=None, timestamp=None, **kwargs):
        reasons = "; ".join(s.failed for s in self.segments if s.failed and s.sealed_at <= timestamp)
        return (4 if reasons else 3), reasons


def connection_to(server: FakeServer) -> MilvusConnection:
    connection = MilvusConnection("http://127.0.0.1:19530", None, "items")
    connection._client = server
    return connection


@pytest.mark.parametrize("progress", [False, True])
def test_returns_once_milvus_reports_the_flushed_rows_indexed(progress):
    # pending_index_rows stays at 2,000 (compaction's segment) however long the wait: the build is
    # done when the state at a timestamp taken after the flush says so.
    server = FakeServer(builds=3)
    connection_to(server).wait_for_index("vector", timeout_s=5.0, poll_s=0.0, progress=progress)
    flushed = server.segments[0]
    assert flushed.indexed, "returned before the flushed rows were indexed"
    assert server.described == 3
    assert server.describe_index("items", "vector")["pending_index_rows"] == 2_000


def test_timeout_names_the_collection_and_the_rows_indexed():
    server = FakeServer(builds=10**9)
    with pytest.raises(RecIndexError) as caught:
        connection_to(server).wait_for_index("vector", timeout_s=0.05, poll_s=0.01)
    message = str(caught.value)
    assert "'items'" in message and "0.05 s" in message
    assert f"0 of {ROWS + 2_000:,} rows indexed" in message and "InProgress" in message


def test_a_failed_build_says_why():
    server = FakeServer(builds=2, fail="out of memory building segment 7")
    with pytest.raises(RecIndexError, match="'items' failed: out of memory building segment 7"):
        connection_to(server).wait_for_index("vector", timeout_s=5.0, poll_s=0.0)
