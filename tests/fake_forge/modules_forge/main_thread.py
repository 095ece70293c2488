"""Neo modules_forge/main_thread.py, reduced: `run_and_wait_result(func, *args, **kwargs)` runs `func` — in the fake,
in the caller's thread (Neo hands it to the main thread's loop and waits) — and returns its result; an exception is
printed, kept in `last_exception` and gives None (as Neo). `async_run` does the same without a result."""

import traceback

last_exception = None


def run_and_wait_result(func, *args, **kwargs):
    global last_exception
    try:
        return func(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 — as Neo's task loop
        traceback.print_exc()
        last_exception = e
        return None


def async_run(func, *args, **kwargs):
    run_and_wait_result(func, *args, **kwargs)
