"""Training modes: each says what to cache (`prepare`) and what one step computes (`step`); one registry line each."""

from __future__ import annotations

from ..errors import UserError
from ..settings import MODES


def mode_class(name: str):
    from .addift import ADDifTMode
    from .difference import DifferenceMode
    from .ileco import ILECOMode
    from .lora import LoRAMode
    from .multi_addift import MultiADDifTMode

    registry = {"LoRA": LoRAMode, "iLECO": ILECOMode, "Difference": DifferenceMode, "ADDifT": ADDifTMode,
                "Multi-ADDifT": MultiADDifTMode}
    if name in registry:
        return registry[name]
    if name in MODES:
        raise UserError(f"mode {name} is not available yet")
    raise UserError(f"unknown mode {name!r}; known: {', '.join(MODES)}")
