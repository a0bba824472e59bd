"""Fake of ``modules/call_queue.py`` (A1111 v1.10.1, 82a973c0): ``queue_lock``, ``wrap_queued_call``."""

from modules import fifo_lock

queue_lock = fifo_lock.FIFOLock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)

    return f
