"""The Host seam: what the runner, the service and the tab need from where they run (standalone or the webui).

Nothing else knows whether the webui is there; only the webui hosts (host/webui.py, webui_generate.py, forge.py,
forge_classic.py, and detect.py, which tells them apart) import its `modules`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import torch


class Host(Protocol):
    name: str
    lora_dir: Path  # where LoRAs are written
    device: torch.device  # CUDA when present, else the CPU; never a hard-coded index
    can_generate: bool  # the iLECO Generate buttons are shown (the webui's txt2img)

    def models(self) -> list[str]:
        """The Model dropdown's choices."""

    def vaes(self) -> list[str]:
        """The VAE dropdown's choices, "None" first."""

    def refresh_models(self) -> list[str]:
        """The Model dropdown's choices after looking again (the 🔄 button)."""

    def refresh_vaes(self) -> list[str]:
        """The VAE dropdown's choices after looking again."""

    def default_model(self) -> str:
        """The Model dropdown's initial choice."""

    def resolve(self, value: str, what: str = "model") -> str:
        """A dropdown choice, a name or a path → a file path ("" for the host's default); UserError if unknown."""

    def holds(self, model: str) -> bool:
        """True when the checkpoint is in memory already and the job trains on it as it is (the webui's model)."""

    def freed_bytes(self, model: str) -> int:
        """Device memory the host frees before this checkpoint loads (the webui's other model), counted as available."""

    def peek(self, model: str) -> AbstractContextManager:
        """A context giving the checkpoint's keys, shapes and dtypes (a models.checkpoint.StateDict) for the checks
        before loading, or None where that would cost a full read."""

    def load_components(self, model: str, dtype, vae_dtype, v_prediction, vae: str = ""):
        """trainer.models.components.Components for the chosen checkpoint (and VAE file). Inside job_context."""

    def job_context(self, job) -> AbstractContextManager:
        """Held for the whole of one job (the webui's queue lock and job state)."""

    def interrupted(self) -> bool:
        """True when the host asks the running job to stop (the webui's Interrupt button)."""

    def skipped(self) -> bool:
        """True when the host asks the running job to stop and save (the webui's Skip button)."""

    def report(self, event: dict) -> None:
        """Every progress event of the running job (engine.control.Event), for the host's own displays."""

    def generate(self, prompts: list[str], negative: str, txt2img_json: str) -> tuple[list, str]:
        """(images, infotext) of a txt2img per prompt with the txt2img tab's settings (JSON by label, from the page)."""

    # Optional: `tool_button(value, elem_id)`, the webui's small emoji button; the tab draws its own without it.
    # Optional: `preview_renderer(job)`, an object whose `render(save, prompts, multipliers, **settings)` draws the
    # job's sample previews as the host's own generations (the webui's txt2img), or None: the trainer renders them.
    # Optional: `caches_lora_files = True` where the host applies a LoRA it applied before without reading the file
    # again (Forge): a run that would overwrite a file saves under a new name instead (runner.uncached_output).
