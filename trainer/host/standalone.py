"""The standalone host: checkpoints are files (under --models-dir, or any path), the LoRA goes to an output folder,
CUDA when present. The bundled demo model is always offered."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from ..models.checkpoint import open_state_dict
from ..models.components import load_components
from ..models.devices import default_device
from ..paths import ROOT

log = logging.getLogger(__name__)

DEMO_MODEL = "demo (bundled tiny SD1 model, random weights)"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
VAE_FOLDERS = ("vae",)  # sub-folders of --models-dir listed as VAEs, not checkpoints
SKIPPED_FOLDERS = ("lora", "lycoris", "embeddings", "hypernetworks", "controlnet", "textencoders", "text_encoder")


@dataclass
class StandaloneHost:
    lora_dir: Path = ROOT / "output"
    device: torch.device = field(default_factory=default_device)
    models_dir: Path | None = None
    name: str = "standalone"
    can_generate = False  # no txt2img here: the iLECO Generate buttons are the webui's

    def on_device(self, device) -> "StandaloneHost":
        """The same host training on `device` (a queue worker per device: `ui --devices`)."""
        return dataclasses.replace(self, device=torch.device(device))

    def generate(self, prompts: list[str], negative: str, txt2img_json: str) -> tuple[list, str]:
        raise UserError("Generate runs the webui's txt2img; it is there in the webui's TrainTrain tab")

    # -- what the Model / VAE dropdowns offer ---------------------------------------------------------------------
    def _files(self):
        if self.models_dir is None or not Path(self.models_dir).is_dir():
            return []
        root = Path(self.models_dir)
        return sorted((p for p in root.rglob("*") if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.is_file()),
                      key=lambda p: str(p).lower())

    def _folder(self, path: Path) -> str:
        rel = path.relative_to(self.models_dir)
        return rel.parts[0].lower() if len(rel.parts) > 1 else ""

    def models(self) -> list[str]:
        """Checkpoint files under models_dir (relative paths), after the demo model."""
        found = [str(p.relative_to(self.models_dir)) for p in self._files()
                 if self._folder(p) not in VAE_FOLDERS + SKIPPED_FOLDERS]
        return [DEMO_MODEL, *found]

    def vaes(self) -> list[str]:
        return ["None", *(str(p.relative_to(self.models_dir)) for p in self._files() if self._folder(p) in VAE_FOLDERS)]

    def refresh_models(self) -> list[str]:
        return self.models()  # the folder is listed afresh every time

    def refresh_vaes(self) -> list[str]:
        return self.vaes()

    def default_model(self) -> str:
        return DEMO_MODEL

    def resolve(self, value: str, what: str = "model") -> str:
        """A dropdown value or a path → a checkpoint file path; "" / the demo entry → "" (the demo model)."""
        value = str(value or "").strip()
        if value in ("", DEMO_MODEL, "None"):
            return ""
        for candidate in (Path(value), Path(self.models_dir or ".") / value):
            if candidate.is_file():
                return str(candidate)
        where = f" or under {self.models_dir}" if self.models_dir else ""
        raise UserError(f"{what} {value!r} not found (give a file path{where})")

    def holds(self, model: str) -> bool:
        return False  # every job reads its checkpoint file

    def freed_bytes(self, model: str) -> int:
        return 0

    @contextlib.contextmanager
    def peek(self, model: str):
        path = self.resolve(model)
        if not path:
            from ..demo_assets import ensure_demo_model

            path = str(ensure_demo_model())
        if not path.endswith(".safetensors"):  # a pickle would be read whole
            yield None
            return
        with open_state_dict(path) as sd:
            yield sd

    # -- running a job ----------------------------------------------------------------------------------------------
    def load_components(self, model: str, dtype, vae_dtype, v_prediction, vae: str = ""):
        path = self.resolve(model)
        vae_path = self.resolve(vae, "VAE")
        if not path:
            from ..demo_assets import ensure_demo_model

            path = str(ensure_demo_model())
            log.info("no model given: using the bundled demo model %s (random weights)", path)
        return load_components(path, dtype=dtype, device=self.device, vae_dtype=vae_dtype,
                               v_prediction=v_prediction, vae_file=vae_path or None)

    def job_context(self, job):
        """Held for the whole of a job (the webui host takes its queue lock here)."""
        return contextlib.nullcontext()

    def interrupted(self) -> bool:
        return False

    def skipped(self) -> bool:
        return False

    def report(self, event: dict) -> None:
        pass
