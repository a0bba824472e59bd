"""Scoring a trial's prompt sets on a thread of its own while its next prompt set generates.

The runner hands each prompt set's images here as soon as they are generated and goes on
generating the next set; the scores come back in prompt-set order. A scorer's exception is raised
in the runner's thread when its set's scores are taken, so a failing scorer fails the trial as
before. A trial that ends early (a failure, a stop) abandons the sets still being scored: their
scorers see ``should_stop`` (the manual scorer stops waiting for ratings) and the runner waits for
the one running before it goes on, so no scorer outlives its trial.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class ScoringQueue:
    """One scoring thread for a run; ``submit`` a set, take the results with ``ready``/``drain``."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sd-optim-score")
        self._pending: deque[tuple[Any, Future]] = deque()
        self._abandoned = threading.Event()
        self.waited = 0.0  # seconds the trial waited for scores (``drain``)

    def begin(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        """A trial starts: the ``should_stop`` its scorers get (the run's, or the trial abandoned)."""
        self._abandoned.clear()
        self.waited = 0.0
        return lambda: self._abandoned.is_set() or should_stop()

    def submit(self, key: Any, score: Callable[[], Any]) -> None:
        self._pending.append((key, self._pool.submit(score)))

    def ready(self) -> Iterator[tuple[Any, Any]]:
        """The sets scored by now, in order (stops at the first still running)."""
        while self._pending and self._pending[0][1].done():
            yield self._take()

    def drain(self) -> Iterator[tuple[Any, Any]]:
        """Every set submitted, in order, waiting for each."""
        while self._pending:
            yield self._take()

    def _take(self) -> tuple[Any, Any]:
        key, future = self._pending.popleft()
        t0 = time.perf_counter()
        try:
            return key, future.result()  # a scorer's exception is raised here
        finally:
            self.waited += time.perf_counter() - t0

    def abandon(self) -> None:
        """The trial ended early: cancel the sets not started, wait for the running one."""
        self._abandoned.set()
        pending, self._pending = self._pending, deque()
        for _, future in pending:
            future.cancel()
        for _, future in pending:
            if not future.cancelled():
                future.exception()  # waits; what it raised no longer matters

    def close(self) -> None:
        self.abandon()
        self._pool.shutdown(wait=True)
