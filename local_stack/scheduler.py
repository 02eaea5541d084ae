"""Run callables on a thread pool, now or after a delay, without ever blocking the caller."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, *, max_workers: int = 8, name: str = "scheduler") -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._timer = threading.Thread(target=self._run_timer, name=f"{name}-timer", daemon=True)
        self._timer.start()

    def submit(self, fn: Callable[[], None], delay: float = 0.0) -> None:
        with self._cond:
            if self._closed:
                return
            if delay <= 0:
                self._pool.submit(self._safely, fn)
                return
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._counter), fn))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def close(self) -> None:
        """Drop what is scheduled for later, finish what is running."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        self._timer.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run_timer(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, fn = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._pool.submit(self._safely, fn)

    @staticmethod
    def _safely(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("scheduled task failed")
