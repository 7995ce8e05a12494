"""Where a Milvus index's items live, and the client that reaches them.

A uri ending in `.db` is a Milvus Lite file (same API as a server), pinned to an absolute path so a
later chdir or a saved manifest cannot move it; anything else (`http://host:19530`) is a server. A
collection name keeps letters, digits and `_` (others become `_`). The token is never written to disk;
a loaded index reads it from RECINDEX_MILVUS_TOKEN.

The client is connected on first use and again after `close`. A Lite file can be open in one process at
a time, so `close()` disconnects and, once no connection in this process uses the file, stops its local
server (no finalizer is relied on). Milvus errors (MilvusException with grpc detail) reach the caller as
one `RecIndexError` line naming the action and the collection.

Index builds: Milvus searches unindexed rows by brute force and indexes them in the background after a
flush. `wait_for_index` flushes and waits: on a server until describe_index, asked about a timestamp
taken after the flush, reports the index state Finished (pymilvus's own wait_for_creating_index does
the same). Neither `pending_index_rows` nor the state without a timestamp says that: the state alone
covers only the segments older than the index (always Finished for an index made with its collection),
and the pending rows count every segment without an index of its own, including those compaction
writes later, so on a 2.3.5 server at 10M items they stayed above 9.5M with every segment's index
loaded (docs/scale.md). Segments too small to index count as finished. Built is not yet served: the
query node loads a built index some seconds later (get_query_segment_info shows it) and searches those
rows by brute force until then. Milvus Lite reports its index finished at once, so there it releases
and reloads the collection, which builds missing segment indexes synchronously.
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from recindex.errors import InvalidRequest, RecIndexError
from recindex.progress import RateProgress

TOKEN_ENV = "RECINDEX_MILVUS_TOKEN"
# pymilvus pings every 10 s; a gRPC server with the library's default policy (the Milvus Lite server is
# one) takes pings at most every 5 minutes while no data flows, and after three too soon answers
# GOAWAY too_many_pings, which pymilvus does not always recover from. Milvus's own servers accept either.
SERVER_GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000}
_lite_users: dict[str, int] = {}  # Lite file -> open connections in this process
_lite_lock = threading.Lock()


def load_pymilvus():
    # Imported on first use: pymilvus is optional and takes half a second to import.
    try:
        import pymilvus
    except ImportError:
        raise RecIndexError("the milvus backend needs pymilvus: pip install pymilvus milvus-lite") from None
    return pymilvus


def collection_name(name: str) -> str:
    """`name` as a Milvus collection name: other characters become `_`, a leading digit gets `_`."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequest(f"a Milvus collection name must be a non-empty string, got {name!r}")
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name.strip())
    if not re.match(r"[A-Za-z_]", clean):
        clean = "_" + clean
    if len(clean) > 255:
        raise InvalidRequest(
            f"Milvus collection names are at most 255 characters; {name[:40]!r}... is {len(clean)}"
        )
    return clean


def is_lite(uri: str) -> bool:
    return uri.endswith(".db")


class MilvusConnection:
    """A MilvusClient for one collection at one uri, connected on first use."""

    def __init__(self, uri: str | Path, token: str | None, collection: str):
        uri = str(uri)
        self.uri = os.path.abspath(uri) if is_lite(uri) else uri
        self.token = token
        self.collection = collection_name(collection)
        self.lite = is_lite(self.uri)
        self._client = None

    @property
    def client(self):
        """The MilvusClient, connected on first use (and again after `close`)."""
        if self._client is None:
            pymilvus = load_pymilvus()
            if self.lite:
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            hint = (
                " (a Milvus Lite file can be open in one process at a time: close it elsewhere)"
                if self.lite
                else ""
            )
            options = {} if self.lite else {"grpc_options": SERVER_GRPC_OPTIONS}
            with self.errors(f"connecting to {self.uri}", hint):
                self._client = pymilvus.MilvusClient(uri=self.uri, token=self.token or "", **options)
            if self.lite:
                with _lite_lock:
                    _lite_users[self.uri] = _lite_users.get(self.uri, 0) + 1
        return self._client

    def close(self) -> None:
        """Disconnect; for a Lite file, stop its local server once no connection here uses it."""
        client, self._client = self._client, None
        if client is None:
            return
        client.close()
        if self.lite:
            with _lite_lock:
                _lite_users[self.uri] -= 1
                last = _lite_users[self.uri] == 0
                if last:
                    del _lite_users[self.uri]
            if last:
                # milvus_lite is optional, and present wherever a Lite file was opened.
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)

    @contextmanager
    def errors(self, action: str, hint: str = ""):
        """Turn a MilvusException raised inside into one clear RecIndexError line."""
        try:
            yield
        except load_pymilvus().MilvusException as error:
            message = getattr(error, "message", None) or str(error)
            raise RecIndexError(
                f"Milvus {action} (collection {self.collection!r}) failed: {message}{hint}"
            ) from None

    def wait_for_index(
        self, vector_field: str, timeout_s: float, poll_s: float, *, progress: bool = False
    ) -> None:
        """Flush, then return once Milvus has built the index on `vector_field` over every row flushed
        (see the module notes); `progress`: a bar of the rows indexed, on a server."""
        if self.lite:
            # Lite's describe_index always says "finished"; its load builds missing segment indexes
            # synchronously. Released during the flush so its background worker skips the new segment
            # and exactly one build happens, the one whose file a restart reads back.
            with self.errors("index build"):
                self.client.release_collection(self.collection)
                try:
                    self.client.flush(self.collection)
                finally:
                    self.client.load_collection(self.collection)
            return
        deadline = time.monotonic() + timeout_s
        with self.errors("flush"):
            self.client.flush(self.collection)
        with self.errors("timestamp"):
            # MilvusClient has no call for it; its own waits for an index use its handler the same way.
            since = self.client._get_connection().alloc_timestamp()
        with RateProgress(0, f"indexing {self.collection}", "rows", enabled=progress) as bar:
            while True:
                with self.errors("describe index"):
                    described = self.client.describe_index(self.collection, vector_field, timestamp=since)
                state = described.get("state")
                indexed, total = described.get("indexed_rows", 0), described.get("total_rows", 0)
                bar.show(indexed, total)
                if state == "Finished":
                    return
                if state == "Failed":
                    reason = self._failure(vector_field, since)
                    raise RecIndexError(f"Milvus index build on {self.collection!r} failed: {reason}")
                if time.monotonic() > deadline:
                    raise RecIndexError(
                        f"Milvus index on {self.collection!r} not built after {timeout_s:g} s: "
                        f"{indexed:,} of {total:,} rows indexed (index state {state})"
                    )
                time.sleep(poll_s)

    def _failure(self, vector_field: str, since: int) -> str:
        """Why the index build failed, as the server words it."""
        with self.errors("index state"):
            _, reason = self.client._get_connection().get_index_state(
                self.collection, vector_field, timestamp=since
            )
        return reason or "no reason given"
