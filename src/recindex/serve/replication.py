"""The ordered log of item changes that every replica applies to its own index, and the thread that
follows it.

A replica (a process serving an in-process index: exact, FAISS or a learned one) accepts a write by
appending it to the log, and applies every record of the log, its own and the others', in the log's
order (`ItemWriter.sync`), so all replicas go through the same states. Two logs implement `ItemLog`:

- `WriteAheadLog` (serve.wal), the state folder's log file: one machine, `serve --workers N`. Appends
  are serialised between the processes by an flock; each process reads the file as a tail.
- `JetStreamLog` (serve.replication_nats), a NATS JetStream stream (`log = "nats://host:port/stream"`):
  replicas on several machines. JetStream numbers and replicates the records and acknowledges a write
  once a quorum of its servers holds it; each replica reads the stream from its snapshot's sequence.

The service code does not branch on which: it appends, syncs, waits and compacts through `ItemLog`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from fastapi import FastAPI

from recindex.serve.items import ItemWriter, LogGap
from recindex.serve.replication_nats import JetStreamLog, is_stream_url
from recindex.serve.settings import ServiceSettings
from recindex.serve.state import ServiceState
from recindex.serve.wal import SHARED_LOGS, WriteAheadLog

IDLE_WAIT_SECONDS = 0.05  # a follower's longest wait for new records (a local log is polled faster)
ERROR_BACKOFF_SECONDS = 1.0
logger = logging.getLogger("recindex.replication")


class ItemLog(Protocol):
    """An ordered, durable log of item-change records (dicts with `seq` and `op`)."""

    name: str | None  # the file the state record names; None for a log outside the state folder

    def open(self) -> ItemLog: ...  # ready to append

    def start(self, after: int) -> None: ...  # `read_new` returns records from `after + 1` on (at least)

    def append(self, op: str, **fields) -> int: ...  # durable when it returns; its sequence number

    def read_new(self) -> list[dict]: ...  # records not returned before, in log order

    def wait(self, seconds: float) -> None: ...  # until new records may be there, at most `seconds`

    def head(self) -> int: ...  # the last sequence number the log holds now

    def exclusive(self) -> AbstractContextManager: ...  # no appends and no loads while held (compaction)

    def loading(self) -> AbstractContextManager: ...  # no compaction while held (loading a snapshot)

    def truncate_through(self, seq: int, **fields) -> int: ...  # drop what a snapshot covers

    def records(self, after: int = 0) -> Iterator[dict]: ...

    def close(self) -> None: ...


def open_log(settings: ServiceSettings, state: ServiceState) -> ItemLog:
    """The log `settings` name: a JetStream stream (`log = "nats://..."`), else the state folder's
    write-ahead log, shared between processes where the OS can lock it (so read-only followers and
    `--workers N` can read it beside a writer)."""
    if settings.log is not None and is_stream_url(settings.log):
        return JetStreamLog(settings.log)
    return WriteAheadLog(state.log_path(state.read()), shared=SHARED_LOGS)


class LogFollower:
    """Applies what other processes append to the log, from a background thread, as soon as it sees
    it. `reload` loads the state folder's current snapshot, for when compaction has folded records
    this process had not applied yet into it (`LogGap`)."""

    def __init__(self, writer: ItemWriter, reload: Callable[[], None]):
        self.writer = writer
        self.reload = reload
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recindex-log-follower", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                applied = self.writer.sync()
                self.error = None
            except LogGap as gap:
                before = self.writer.applied
                try:
                    self.reload()
                except Exception as error:  # e.g. the snapshot was replaced again while loading it
                    self._failed(f"{gap}; loading the snapshot failed: {type(error).__name__}: {error}")
                    continue
                if self.writer.applied <= before:  # the log cannot be followed from any snapshot here
                    self._failed(str(gap))
                continue
            except Exception as error:  # keep serving what was applied; the log keeps the rest
                self._failed(f"{type(error).__name__}: {error}")
                continue
            if not applied:
                self.writer.log.wait(IDLE_WAIT_SECONDS)

    def _failed(self, message: str) -> None:
        if message != self.error:
            logger.error("cannot apply the item log: %s", message)
        self.error = message
        self._stop.wait(ERROR_BACKOFF_SECONDS)


def add_replication_route(app: FastAPI, writer: ItemWriter, follower: LogFollower | None) -> None:
    """`GET /v1/replication`: which process answered, the last log record it applied and the follower's
    error if it is stuck; open like /readyz (no items, no keys), for probes and lag dashboards."""

    @app.get("/v1/replication", include_in_schema=False)
    async def replication() -> dict:
        return {
            "process": os.getpid(),
            "applied": writer.applied,
            "log": "jetstream" if writer.log is not None and writer.log.name is None else "local",
            "following": follower is not None,
            "error": follower.error if follower is not None else None,
        }
