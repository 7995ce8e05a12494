"""Online index recall, measured off the request path.

A sampled share of live unfiltered answers is checked against exact search over the same version's
item vectors. Exact search costs a full scan (tens of milliseconds at a million items), so the check
runs in a background thread fed by a small queue, and at most `max_per_second` checks are made
whatever the traffic (at 1,000 requests/s a 1% sample would otherwise spend a third of a core on it).
Samples beyond that, or arriving when the queue is full, are dropped rather than making a request wait.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from recindex.serve.recommender import Recommendation, ServingVersion, online_recall

QUEUE_SIZE = 64


class RecallMonitor:
    def __init__(self, observe: Callable[[float], None], max_per_second: float = 2.0):
        self.observe = observe
        self.min_interval = 1.0 / max_per_second if max_per_second > 0 else float("inf")
        self._last = float("-inf")
        self.pending: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, version: ServingVersion, answer: Recommendation) -> None:
        now = time.monotonic()
        if now - self._last < self.min_interval:
            self.dropped += 1
            return
        self._last = now
        self._ensure_running()
        try:
            self.pending.put_nowait((version, answer))
        except queue.Full:
            self.dropped += 1

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every submitted sample is measured (for tests and orderly shutdown)."""
        with self.pending.all_tasks_done:
            self.pending.all_tasks_done.wait_for(lambda: not self.pending.unfinished_tasks, timeout)

    def _ensure_running(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="recindex-recall", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            version, answer = self.pending.get()
            try:
                recall = online_recall(version, answer)
                if recall is not None:
                    self.observe(recall)
            except Exception:  # a failed check must not stop the monitor; the sample is lost
                pass
            finally:
                self.pending.task_done()
