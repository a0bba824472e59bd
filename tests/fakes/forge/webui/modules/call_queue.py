"""Fake of ``modules/call_queue.py`` (Forge dfdcbab6, ``:10``): ``queue_lock = FIFOLock()``."""

from modules import fifo_lock

queue_lock = fifo_lock.FIFOLock()
