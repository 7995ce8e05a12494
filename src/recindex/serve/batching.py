"""Coalescing concurrent recommend requests into one encoder pass and one index search per group.

    batcher = RequestBatcher(recommender.answer, window_s=0.001, max_batch=64, max_queue=1000,
                             timeout_s=1.0)
    version, answer = await batcher.submit(RecommendQuery(user_id="42", k=100))

The first request to arrive opens a window (`window_s`); every request that arrives before it closes
joins the batch, which is then answered in one call of `answer`: one read of the
active version for the whole batch (so a promotion never splits one), one query-tower pass, one index
search per group of queries that can share it (see `Recommender.answer_with`). A batch that reaches
`max_batch` is answered at once. Each request gets the answer it would get alone, or its own error.
The call runs on the event loop (in-process searches: CPU work, shorter than a hop to a thread), or,
where `in_thread()` says so (an index that waits on a server), in a worker thread, so that the loop
takes and batches other requests meanwhile and several batches can be in flight at once.

Bounds: at most `max_queue` requests wait at any time (another is refused with `Overloaded`, answered
503, rather than queued without limit); a request still waiting `timeout_s` after it arrived is
refused the same way rather than answered late. Work that has started is not interrupted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial


class Overloaded(Exception):
    """The batcher could not take or finish a request in time (answered 503)."""


@dataclass
class _Waiting:
    query: object
    future: asyncio.Future
    deadline: float


class RequestBatcher:
    def __init__(
        self,
        answer: Callable[[list], tuple[object, list]],
        *,
        window_s: float,
        max_batch: int,
        max_queue: int,
        timeout_s: float,
        observe_batch: Callable[[int], None] | None = None,
        observe_refusal: Callable[[str], None] | None = None,
        in_thread: Callable[[], bool] = lambda: False,
    ):
        """`answer(queries) -> (version, answers)`: one answer (or exception) per query, in order;
        `in_thread()`, asked at each batch: whether to call it in a worker thread."""
        if window_s <= 0 or max_batch < 1 or max_queue < max_batch or timeout_s <= 0:
            raise ValueError(
                "batching needs window_s > 0, max_batch >= 1, max_queue >= max_batch and timeout_s > 0, "
                f"got {window_s}, {max_batch}, {max_queue}, {timeout_s}"
            )
        self.answer = answer
        self.window_s, self.max_batch, self.max_queue, self.timeout_s = (
            window_s,
            max_batch,
            max_queue,
            timeout_s,
        )
        self.observe_batch = observe_batch or (lambda size: None)
        self.observe_refusal = observe_refusal or (lambda reason: None)
        self.in_thread = in_thread
        self._late = (
            f"the service is overloaded: the request waited over {timeout_s * 1000:g} ms for its batch "
            "(batch_timeout_ms)"
        )
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def submit(self, query) -> tuple[object, object]:
        """(version, answer) for one query; raises its own error, or `Overloaded`."""
        if len(self._waiting) >= self.max_queue:
            self.observe_refusal("queue full")
            raise Overloaded(
                f"the service is overloaded: {self.max_queue} recommend requests are already waiting "
                "(batch_queue_limit); retry shortly"
            )
        loop = asyncio.get_running_loop()
        waiting = _Waiting(query, loop.create_future(), loop.time() + self.timeout_s)
        self._waiting.append(waiting)
        if len(self._waiting) >= self.max_batch:
            self._schedule(loop, 0.0)  # a full batch goes without waiting for the window
        elif self._timer is None:
            self._schedule(loop, self.window_s)
        version, answer = await waiting.future
        if isinstance(answer, BaseException):
            raise answer
        return version, answer

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._flush) if delay > 0 else loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Answer up to `max_batch` waiting requests (oldest first); more waiting: again, at once."""
        self._timer = None
        batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        if self._waiting:  # a backlog: the next batch runs on the next turn of the loop
            self._schedule(asyncio.get_running_loop(), 0.0)
        now = asyncio.get_running_loop().time()
        live = []
        for waiting in batch:
            if waiting.future.done():  # the client went away (its task was cancelled)
                continue
            if now > waiting.deadline:
                self.observe_refusal("timeout")
                waiting.future.set_result((None, Overloaded(self._late)))
                continue
            live.append(waiting)
        if not live:
            return
        self.observe_batch(len(live))
        queries = [w.query for w in live]
        if self.in_thread():
            work = asyncio.get_running_loop().run_in_executor(None, self._answered, queries)
            work.add_done_callback(partial(self._deliver, live))
            return
        self._deliver_result(live, self._answered(queries))

    def _answered(self, queries: list) -> tuple[object, list]:
        try:
            return self.answer(queries)
        except Exception as error:  # not one query's fault (answer() keeps those apart): all fail alike
            return None, [error] * len(queries)

    def _deliver(self, live: list[_Waiting], work: asyncio.Future) -> None:
        self._deliver_result(live, work.result())  # _answered returns errors, it does not raise them

    @staticmethod
    def _deliver_result(live: list[_Waiting], result: tuple[object, list]) -> None:
        version, answers = result
        for waiting, answer in zip(live, answers, strict=True):
            if not waiting.future.done():
                waiting.future.set_result((version, answer))
