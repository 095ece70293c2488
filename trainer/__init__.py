"""TrainTrain: LoRA / iLECO / Difference / ADDifT trainer for Stable Diffusion (webui tab, CLI, standalone UI)."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes logs a warning on every CPU import about an optional 4-bit kernel package we never use.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
