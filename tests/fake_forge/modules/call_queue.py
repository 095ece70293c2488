"""Neo modules/call_queue.py (A1111's): `queue_lock` (a FIFOLock: waiters get it in arrival order), `wrap_queued_call`,
`wrap_gradio_gpu_call(fn, extra_outputs)` (the lock + `state.begin/end`; the last output must be HTML, the stats are
appended to it), `wrap_gradio_call`, `wrap_gradio_call_no_job` (an exception becomes `extra_outputs + [error HTML]`,
preferring `main_thread.last_exception`)."""

import collections
import functools
import html
import threading
import time

from modules import shared


class FIFOLock:
    def __init__(self):
        self._lock = threading.Lock()
        self._inner_lock = threading.Lock()
        self._pending_threads = collections.deque()

    def acquire(self, blocking=True):
        with self._inner_lock:
            lock_acquired = self._lock.acquire(False)
            if lock_acquired:
                return True
            if not blocking:
                return False
            release_event = threading.Event()
            self._pending_threads.append(release_event)
        release_event.wait()
        return self._lock.acquire()

    def release(self):
        with self._inner_lock:
            if self._pending_threads:
                self._pending_threads.popleft().set()
            self._lock.release()

    def locked(self):
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, t, v, tb):
        self.release()


queue_lock = FIFOLock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)

    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    name = func.__name__

    @functools.wraps(func)
    def f(*args, **kwargs):
        with queue_lock:
            shared.state.begin(job=name)
            try:
                return func(*args, **kwargs)
            finally:
                shared.state.end()

    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    @functools.wraps(func)
    def f(*args, **kwargs):
        try:
            return wrap_gradio_call_no_job(func, extra_outputs, add_stats)(*args, **kwargs)
        finally:
            shared.state.skipped = False
            shared.state.interrupted = False
            shared.state.stopping_generation = False
            shared.state.job_count = 0

    return f


def wrap_gradio_call_no_job(func, extra_outputs=None, add_stats=False):
    @functools.wraps(func)
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        t = time.perf_counter()
        try:
            res = list(func(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 — shown on the page, as Neo does
            from modules_forge import main_thread

            e = main_thread.last_exception or e
            print(f"Error completing request: {type(e).__name__}: {e}")
            if extra_outputs_array is None:
                extra_outputs_array = [None, ""]
            res = list(extra_outputs_array) + [f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"]
        if add_stats:
            res[-1] = f"{res[-1]}<div class='performance'>Time taken: {time.perf_counter() - t:.1f} sec.</div>"
        return tuple(res)

    return f
