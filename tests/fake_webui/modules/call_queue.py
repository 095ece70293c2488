"""webui modules/call_queue.py: the lock every GPU job takes, and the wrapper the webui puts around handlers."""

import functools
import threading

from modules import shared

queue_lock = threading.Lock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)

    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @functools.wraps(func)
    def f(*args, **kwargs):
        with queue_lock:
            shared.state.begin(job=func.__name__)
            try:
                res = func(*args, **kwargs)
            finally:
                shared.state.end()
        res = list(res)
        res[-1] = f"{res[-1]}<div class='performance'>Time taken: 0.0 sec.</div>"
        return tuple(res)

    return f
