"""Fake of ``modules/fifo_lock.py`` (Forge dfdcbab6): a FIFO, non-reentrant lock."""

import collections
import threading


class FIFOLock:
    def __init__(self):
        self._lock = threading.Lock()
        self._inner = threading.Lock()
        self._waiters = collections.deque()

    def acquire(self, blocking=True):
        with self._inner:
            if self._lock.acquire(False):
                return True
            if not blocking:
                return False
            ticket = threading.Event()
            self._waiters.append(ticket)
        ticket.wait()  # the releaser hands the held lock over to the oldest waiter
        return True

    def release(self):
        with self._inner:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._lock.release()

    def __enter__(self):
        self.acquire()

    def __exit__(self, *exc):
        self.release()
