"""The Forge Classic host (forge-api.md F4.5, F5, F6): Classic keeps A1111's model object (`shared.sd_model` is the
LDM model, wired to Forge's UNet, VAE and CLIP), its `sd_models.load_model` and `prompt_parser`, so WebuiHost does
the work, with what Forge changes:

- Forge merges a `<lora:…>` into the weights while the model is loaded and takes it out when it is unloaded
  (`unpatch_model`), so the job first unloads through Forge's memory manager (`sd_models.unload_model_weights()`):
  that leaves the base weights, on the CPU, where Forge keeps them between generations; its next generation loads
  them back.
- Copies Forge made on the GPU during a generation can be inference tensors (F4.3), which cannot train: those are
  copied; every other tensor is shared, as on A1111.
- `send_model_to_trash` does nothing on Classic, so another checkpoint does not drop Forge's model: it leaves the
  GPU the same way, and nothing needs loading again afterwards.
- Forge caches LoRA files by name (F6: `lru_cache` on the loader): a run that would overwrite one saves under a
  new name (runner.py, `caches_lora_files`); Forge's own `networks.list_available_networks()` is refreshed.
"""

from __future__ import annotations

import torch
from modules import devices, sd_models  # noqa: Forge Classic is present whenever this module is imported

from . import held_model
from .forge import _lora_networks
from .webui import WebuiHost, _gib


class ForgeClassicHost(WebuiHost):
    name = "forge-classic"
    caches_lora_files = True
    previews_through_txt2img = False  # as on Neo: the trainer renders the previews

    def holds(self, model: str) -> bool:
        """Forge's weights are shared where they are: on the CPU. On a GPU the job moves a copy there."""
        return self._is_held(model) and torch.device(self.device).type == "cpu"

    def _is_held(self, model: str) -> bool:
        return super().holds(model)

    def freed_bytes(self, model: str) -> int:
        held = self.held()
        device = torch.device(self.device)
        if held is None or device.type == "cpu":
            return 0
        return held_model.storage_bytes(t for t in held.state_dict().values() if t.device.type == device.type)

    def load_components(self, model: str, dtype, vae_dtype, v_prediction, vae: str = ""):
        vae_file = self.resolve(vae, "VAE") or None
        if self._is_held(model):
            self._unload()
            components = self._from_held(dtype, vae_dtype, v_prediction, vae_file)
            self._loaded.append(components)
            return components
        return super().load_components(model, dtype, vae_dtype, v_prediction, vae)

    def _unload(self) -> None:
        sd_models.unload_model_weights()  # = Forge's unload_all_models: to the CPU, LoRA merges taken out
        devices.torch_gc()

    def _held_tensors(self, sd_model) -> dict[str, torch.Tensor]:
        tensors = super()._held_tensors(sd_model)
        copied = [k for k, t in tensors.items() if t.is_inference()]
        if copied:
            with torch.inference_mode(False):
                for key in copied:
                    tensors[key] = tensors[key].clone()
            size = held_model.storage_bytes(tensors[k] for k in copied)
            self._notes.append(f"{len(copied)} of Forge's tensors were inference tensors, which cannot train: "
                               f"copied ({_gib(size)}).")
        return tensors

    def _from_held(self, dtype, vae_dtype, v_prediction, vae_file):
        self._notes = []
        components = super()._from_held(dtype, vae_dtype, v_prediction, vae_file)
        components.notes = [components.notes[0].replace("the webui's", "Forge's"), *self._notes,
                            *components.notes[1:]]
        return components

    def _release_held(self) -> list[str]:
        held = self.held()
        if held is None or all(p.is_meta for p in held.parameters()):
            return []
        self._unload()
        if torch.device(self.device).type == "cpu":
            return []
        return [f"Moved Forge's model {held.sd_checkpoint_info.title} to the CPU while training; its next "
                "generation loads it back."]

    def saved(self, path) -> None:
        networks = _lora_networks()
        if networks is not None:
            networks.list_available_networks()
