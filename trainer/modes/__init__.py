"""Training modes: each says what to cache (`prepare`) and what one step computes (`step`); one registry line each."""

from __future__ import annotations

from ..errors import UserError
from ..settings import MODES


def mode_class(name: str):
    from .lora import LoRAMode

    registry = {"LoRA": LoRAMode}
    if name in registry:
        return registry[name]
    if name in MODES:
        raise UserError(f"mode {name} is not available yet")
    raise UserError(f"unknown mode {name!r}; known: {', '.join(MODES)}")
