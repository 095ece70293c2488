"""The tab inside the webui: one TrainingService per webui process (it outlives "Reload UI", which builds the
tab again), the host of the webui detected (A1111, Forge Neo, Forge Classic: detect.py), and its ToolButton."""

from __future__ import annotations

import logging
import sys
import threading

_service = None
_lock = threading.Lock()


def console_logging() -> None:
    """The package's INFO and warnings on the webui's console, each line marked "TrainTrain:" (the webui leaves
    logging unconfigured unless --loglevel is given, and Python would print warnings only)."""
    package = logging.getLogger(__name__.split(".")[0])
    if not package.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("TrainTrain: %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)
        package.propagate = False


def service():
    """The process-wide service; created on first use, when it also resumes jobs left in json/queue.json."""
    global _service
    from ..jobs.service import TrainingService
    from .detect import detect, host_for

    with _lock:
        if _service is None:
            console_logging()
            webui = detect()
            host = host_for(webui)  # RuntimeError naming what is missing: the tab shows it
            logging.getLogger(__name__).info("running in %s", webui.kind)
            _service = TrainingService(host)
        return _service


def build():
    from ..ui.tab import build_tab

    current = service()
    return build_tab(current, current.host, tool_button=current.host.tool_button)
