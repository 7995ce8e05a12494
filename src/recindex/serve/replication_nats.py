"""A NATS JetStream stream as the item log of replicas on several machines (see serve.replication).

    log = "nats://host1:4222,host2:4222,host3:4222/items?replicas=3"

Any replica may accept a write: it publishes the record to the stream and returns once JetStream has
acknowledged it, that is once a quorum of the stream's servers hold it (R3: 2 of 3). JetStream's
sequence number is the record's `seq`, so every replica applies the records in one order. Each
replica reads the stream from its own snapshot's sequence on, with an ordered consumer (NATS's way
of reading a stream in order: it notices a gap or a lost server and starts again where it was), and
compacts into its own state folder; the stream keeps the records (trim it with the stream's own
limits, `max_age`, after every replica has a snapshot past them).

A publish is retried until `PUBLISH_DEADLINE_SECONDS` (a leader election takes a few seconds) with
one message id, so JetStream stores a retried record once (`Nats-Msg-Id`, in its duplicate window).

nats-py is imported when a stream is used (the optional `replicas` extra): a service on a local log
needs neither the package nor a NATS server.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections import deque
from contextlib import nullcontext, suppress
from dataclasses import dataclass

from recindex.errors import RecIndexError

SUBJECT_PREFIX = "recindex.items."
PUBLISH_DEADLINE_SECONDS = 20.0
PUBLISH_TRY_SECONDS = 2.0
CONNECT_SECONDS = 20.0
HEARTBEAT_SECONDS = 1.0  # the ordered consumer's idle heartbeat: how soon a lost consumer is noticed
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class LogUnavailable(RecIndexError):
    """The stream did not acknowledge a record in time (no quorum, no server reachable)."""


def is_stream_url(text: str) -> bool:
    return text.startswith("nats://")


@dataclass(frozen=True)
class StreamAddress:
    servers: list[str]
    stream: str
    replicas: int

    @property
    def subject(self) -> str:
        return SUBJECT_PREFIX + self.stream


def parse_stream_url(url: str) -> StreamAddress:
    """`nats://host:port[,host:port...]/STREAM[?replicas=N]` -> its parts, or a one-line error."""
    form = "nats://host:port[,host:port...]/STREAM[?replicas=N]"
    if not is_stream_url(url):
        raise RecIndexError(f"log {url!r}: expected {form}")
    hosts, _, tail = url.removeprefix("nats://").partition("/")
    stream, _, query = tail.partition("?")
    if not hosts or not STREAM_NAME.fullmatch(stream):
        raise RecIndexError(f"log {url!r}: expected {form} (a stream name of letters, digits, _ or -)")
    replicas = 1
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key != "replicas" or not value.isdigit() or not 1 <= int(value) <= 5:
            raise RecIndexError(f"log {url!r}: the one option is replicas=N, N from 1 to 5")
        replicas = int(value)
    return StreamAddress([f"nats://{host}" for host in hosts.split(",")], stream, replicas)


class JetStreamLog:
    """The `ItemLog` of a JetStream stream; the NATS client runs on its own event-loop thread."""

    name = None  # not a file of the state folder

    def __init__(self, url: str):
        self.address = parse_stream_url(url)
        self._records: deque[dict] = deque()
        self._arrived = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="recindex-jetstream", daemon=True)
        self._thread.start()
        self._client = self._js = self._subscription = None
        try:
            self._call(self._connect(), CONNECT_SECONDS + 10)
        except BaseException:
            self.close()
            raise

    # ---- ItemLog ----------------------------------------------------------------------------------

    def open(self) -> JetStreamLog:
        return self

    def start(self, after: int) -> None:
        """Read the stream from record `after + 1` on; refuse when the stream no longer holds it."""
        state = self._call(self._js.stream_info(self.address.stream), PUBLISH_TRY_SECONDS * 5).state
        if state.messages and state.first_seq > after + 1:
            raise RecIndexError(
                f"stream {self.address.stream!r} starts at record {state.first_seq}, but this replica's "
                f"state covers records up to {after} only: start it from a recent snapshot of another "
                f"replica (copy its state folder), or keep the stream's records longer"
            )
        self._call(self._subscribe(after + 1), PUBLISH_TRY_SECONDS * 5)

    def append(self, op: str, **fields) -> int:
        payload = json.dumps({"op": op, **fields}, separators=(",", ":")).encode("utf-8")
        limit = self._client.max_payload
        if len(payload) > limit:
            raise RecIndexError(
                f"a log record of {len(payload):,} bytes is over the NATS servers' max_payload of "
                f"{limit:,}: send fewer items per request, or raise max_payload on the servers"
            )
        return self._call(self._publish(payload), PUBLISH_DEADLINE_SECONDS + 5)

    def read_new(self) -> list[dict]:
        with self._arrived:
            records = list(self._records)
            self._records.clear()
        return records

    def wait(self, seconds: float) -> None:
        with self._arrived:
            if not self._records:
                self._arrived.wait(seconds)

    def head(self) -> int:
        return self._call(self._js.stream_info(self.address.stream), PUBLISH_TRY_SECONDS * 5).state.last_seq

    def exclusive(self):
        return nullcontext()  # each replica compacts into its own state folder; the stream is not cut

    def loading(self):
        return nullcontext()

    def truncate_through(self, seq: int, **fields) -> int:
        return 0  # the stream's records serve every replica: its own limits trim it

    def close(self) -> None:
        if self._loop.is_running():
            if self._client is not None:
                with suppress(Exception):  # closing anyway
                    self._call(self._client.close(), 10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    # ---- on the event loop ------------------------------------------------------------------------

    def _call(self, coroutine, timeout: float):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _connect(self) -> None:
        import nats  # optional (the `replicas` extra): only a service on a JetStream log needs it
        from nats.js.api import StorageType
        from nats.js.errors import APIError, NotFoundError

        self._client = await nats.connect(
            servers=self.address.servers,
            connect_timeout=5,
            max_reconnect_attempts=-1,  # a replica outlives any one server
            reconnect_time_wait=0.5,
        )
        self._js = self._client.jetstream()
        deadline = time.monotonic() + CONNECT_SECONDS
        while True:  # a cluster just started elects its JetStream leader first
            try:
                await self._js.stream_info(self.address.stream)
                return
            except NotFoundError:
                try:
                    await self._js.add_stream(
                        name=self.address.stream,
                        subjects=[self.address.subject],
                        num_replicas=self.address.replicas,
                        storage=StorageType.FILE,
                    )
                    return
                except APIError as error:  # another replica created it first, or not ready yet
                    problem = error
            except (APIError, TimeoutError) as error:
                problem = error
            if time.monotonic() > deadline:
                raise RecIndexError(f"JetStream at {self.address.servers}: no stream ({problem})")
            await asyncio.sleep(0.25)

    async def _subscribe(self, first: int) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first)
        self._subscription = await self._js.subscribe(
            self.address.subject,
            config=config,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT_SECONDS,
            cb=self._received,
        )

    async def _received(self, message) -> None:
        record = json.loads(message.data)
        record["seq"] = message.metadata.sequence.stream
        with self._arrived:
            self._records.append(record)
            self._arrived.notify_all()

    async def _publish(self, payload: bytes) -> int:
        from nats.errors import Error as NatsError

        headers = {"Nats-Msg-Id": uuid.uuid4().hex}  # the same on every try: stored once
        deadline = time.monotonic() + PUBLISH_DEADLINE_SECONDS
        while True:
            try:
                ack = await self._js.publish(
                    self.address.subject, payload, timeout=PUBLISH_TRY_SECONDS, headers=headers
                )
                return ack.seq
            except (NatsError, TimeoutError) as error:
                if time.monotonic() > deadline:
                    raise LogUnavailable(
                        f"stream {self.address.stream!r} did not acknowledge the write in "
                        f"{PUBLISH_DEADLINE_SECONDS:.0f} s ({type(error).__name__}: {error}); it may be "
                        "stored or not: send it again"
                    ) from None
                await asyncio.sleep(0.2)
