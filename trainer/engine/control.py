"""Per-job state the UI or CLI shares with a running job: stop requests and progress events."""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Callable


class Event(str, enum.Enum):
    """What a running job reports through `JobControl.emit`; the value is the event dict's "kind"."""

    PHASE = "phase"  # text: what the job is doing before training (loading, caching)
    STEP = "step"  # step, total, loss, loss_ema, lrs, elapsed, eta
    SAVED = "saved"  # path, step: a periodic save
    DONE = "done"  # status, path, message, report


class Status(str, enum.Enum):
    """How a training pass (and so a job) ended."""

    FINISHED = "finished"
    STOPPED = "stopped"
    STOPPED_SAVED = "stopped_saved"


@dataclass
class JobControl:
    """Stop / Stop-and-Save, answered after the step that is running. One object per job (no globals)."""

    _stop: threading.Event = field(default_factory=threading.Event)
    _save: bool = False
    on_event: Callable[[dict], None] | None = None
    external_interrupt: Callable[[], bool] | None = None  # e.g. the webui's Interrupt button: stop
    external_skip: Callable[[], bool] | None = None  # e.g. the webui's Skip button: stop and save

    def request_stop(self, save: bool = False) -> None:
        self._save = save
        self._stop.set()

    def _skipped(self) -> bool:
        return bool(self.external_skip and self.external_skip())

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set() or bool(self.external_interrupt and self.external_interrupt()) or self._skipped()

    @property
    def save_on_stop(self) -> bool:
        return (self._save and self._stop.is_set()) or self._skipped()

    def emit(self, kind: Event, **data) -> None:
        if self.on_event is not None:
            self.on_event({"kind": Event(kind), **data})
