"""The standalone host: checkpoints are files, the LoRA goes to an output folder, CUDA when present."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.components import load_components
from ..models.devices import default_device
from ..paths import ROOT

log = logging.getLogger(__name__)


@dataclass
class StandaloneHost:
    lora_dir: Path = ROOT / "output"
    device: torch.device = field(default_factory=default_device)
    name: str = "standalone"

    def load_components(self, model: str, dtype, vae_dtype, v_prediction, vae: str = ""):
        if not model:
            from ..demo_assets import ensure_demo_model

            model = str(ensure_demo_model())
            log.info("no model given: using the bundled demo model %s (random weights)", model)
        return load_components(model, dtype=dtype, device=self.device, vae_dtype=vae_dtype,
                               v_prediction=v_prediction, vae_file=vae or None)
