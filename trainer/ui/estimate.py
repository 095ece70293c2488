"""The sentence the Message box adds at Start: engine/memory.py's estimate of the memory the run needs (from a
safetensors checkpoint's header only; no tensor is read)."""

from __future__ import annotations

import logging

from ..errors import UserError
from ..settings import Job

log = logging.getLogger(__name__)


def memory_note(job: Job, host) -> str:
    """" It needs about 6.6 GiB of GPU memory (estimate).", or "" when there is nothing to estimate from."""
    from ..engine.memory import estimate, parameter_counts

    try:
        with host.peek(job.model) as model:
            if model is None:
                return ""
            total = estimate(parameter_counts(model), job.settings, str(host.device),
                             host.holds(job.model))["total_gib"]
    except (UserError, OSError, ValueError, KeyError) as err:  # the job itself will report a bad file
        log.info("no memory estimate: %s", err)
        return ""
    where = "GPU memory" if device_type(host.device) == "cuda" else "memory"
    return f" It needs about {total:.1f} GiB of {where} (estimate)."


def device_type(device) -> str:
    return getattr(device, "type", str(device).split(":")[0])
