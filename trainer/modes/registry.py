"""The modes, one line each: the name users pick (the JSON "mode"), the panel of the tab that shows its
settings, and the class that trains it (imported when the mode is used). settings.MODES is derived from here."""

from __future__ import annotations

import enum
import importlib
from dataclasses import dataclass

from ..errors import UserError


class Panel(enum.Flag):
    """Where a setting's widget is shown: the panel of a mode, or the Difference 2nd-pass column."""

    LORA = enum.auto()
    ILECO = enum.auto()
    DIFFERENCE = enum.auto()
    SECOND_PASS = enum.auto()
    ADDIFT = enum.auto()
    MULTI_ADDIFT = enum.auto()


@dataclass(frozen=True)
class ModeEntry:
    name: str
    panel: Panel
    implementation: str  # "module:Class" inside trainer.modes


ENTRIES = (
    ModeEntry("LoRA", Panel.LORA, "lora:LoRAMode"),
    ModeEntry("iLECO", Panel.ILECO, "ileco:ILECOMode"),
    ModeEntry("Difference", Panel.DIFFERENCE, "difference:DifferenceMode"),
    ModeEntry("ADDifT", Panel.ADDIFT, "addift:ADDifTMode"),
    ModeEntry("Multi-ADDifT", Panel.MULTI_ADDIFT, "multi_addift:MultiADDifTMode"),
)
MODES = {entry.name: entry for entry in ENTRIES}


def mode_entry(name: str) -> ModeEntry:
    if name not in MODES:
        raise UserError(f"unknown mode {name!r}; known: {', '.join(MODES)}")
    return MODES[name]


def mode_class(name: str):
    module, _, cls = mode_entry(name).implementation.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)
