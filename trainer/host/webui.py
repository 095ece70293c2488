"""The webui host: the only module that imports the webui's `modules` package.

Checkpoints and VAEs are the webui's own lists (`sd_models.checkpoint_tiles()`, `sd_vae.vae_dict`), the LoRA goes to
`shared.cmd_opts.lora_dir`, the device is `devices.device`, and a job holds the webui's queue lock (so txt2img does not
race the trainer for the GPU) and honours its Interrupt button through `shared.state`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from modules import devices, sd_models, shared  # noqa: the webui is present whenever this module is imported

from ..errors import UserError
from ..models.components import load_components

log = logging.getLogger(__name__)


def _vae_dict() -> dict:
    try:
        from modules import sd_vae
    except ImportError:
        return {}
    return dict(getattr(sd_vae, "vae_dict", {}) or {})


class WebuiHost:
    name = "webui"

    @property
    def lora_dir(self) -> Path:
        lora_dir = getattr(shared.cmd_opts, "lora_dir", None)
        if not lora_dir:
            from modules import paths_internal

            lora_dir = Path(paths_internal.models_path) / "Lora"
        return Path(lora_dir)

    @property
    def device(self):
        return devices.device

    # -- what the Model / VAE dropdowns offer ---------------------------------------------------------------------
    def models(self) -> list[str]:
        return list(sd_models.checkpoint_tiles())

    def refresh_models(self) -> list[str]:
        sd_models.list_models()
        return self.models()

    def vaes(self) -> list[str]:
        return ["None", *sorted(_vae_dict(), key=str.lower)]

    def refresh_vaes(self) -> list[str]:
        try:
            from modules import sd_vae

            sd_vae.refresh_vae_list()
        except (ImportError, AttributeError):
            pass
        return self.vaes()

    def default_model(self) -> str:
        current = shared.opts.data.get("sd_model_checkpoint")
        models = self.models()
        if current in models:
            return current
        return models[0] if models else ""

    def resolve(self, value: str, what: str = "model") -> str:
        """A dropdown title, a name or a path → a file path ("" → the webui's selected checkpoint / no VAE)."""
        value = str(value or "").strip()
        if what == "VAE":
            if value in ("", "None"):
                return ""
            path = _vae_dict().get(value, value)
            if not Path(path).is_file():
                raise UserError(f"VAE {value!r} not found; press 🔄 next to VAE and choose again")
            return str(path)
        if value and Path(value).is_file():
            return value
        title = value or shared.opts.data.get("sd_model_checkpoint") or ""
        info = sd_models.get_closet_checkpoint_match(title) if title else None
        if info is None:
            raise UserError(f"checkpoint {value or '(none selected)'!r} not found; press 🔄 next to Model and "
                            "choose one")
        return info.filename

    # -- running a job ----------------------------------------------------------------------------------------------
    def load_components(self, model: str, dtype, vae_dtype, v_prediction, vae: str = ""):
        return load_components(self.resolve(model), dtype=dtype, device=self.device, vae_dtype=vae_dtype,
                               v_prediction=v_prediction, vae_file=self.resolve(vae, "VAE") or None)

    @contextlib.contextmanager
    def job_context(self, job):
        """The whole job holds the webui's queue lock and appears as its current job (Interrupt stops it)."""
        from modules import call_queue

        with call_queue.queue_lock:
            shared.state.begin(job="TrainTrain")
            try:
                yield
            finally:
                shared.state.end()

    def interrupted(self) -> bool:
        return bool(shared.state.interrupted)

    def tool_button(self, value: str, elem_id: str):
        from modules.ui_components import ToolButton

        return ToolButton(value=value, elem_id=elem_id)
