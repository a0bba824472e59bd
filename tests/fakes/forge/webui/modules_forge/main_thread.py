"""Fake of ``modules_forge/main_thread.py`` (Forge dfdcbab6, ``:58-75``): ``run_and_wait_result`` runs
the task (here on the calling thread, not a queue polled by the main thread) and **swallows**
its exception: prints it, stores it in ``last_exception`` and returns ``None``."""

import traceback

last_exception = None


def run_and_wait_result(func, *args, **kwargs):
    global last_exception
    try:
        return func(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - swallowed, as Forge does
        traceback.print_exc()
        last_exception = e
        return None
