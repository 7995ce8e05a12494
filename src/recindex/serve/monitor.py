"""Online index recall, measured off the request path.

A sampled share of live unfiltered answers is checked against exact search over the same version's
item vectors. Exact search costs a full scan (tens of milliseconds at a million items), so the check
runs in a background thread fed by a small queue; when the queue is full a sample is dropped rather
than making a request wait.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from recindex.serve.recommender import Recommendation, ServingVersion, online_recall

QUEUE_SIZE = 64


class RecallMonitor:
    def __init__(self, observe: Callable[[float], None]):
        self.observe = observe
        self.pending: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, version: ServingVersion, answer: Recommendation) -> None:
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
