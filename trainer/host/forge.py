"""The Forge Neo host: the only module that imports Forge's `backend` and `modules_forge` (forge-api.md; detect.py
only looks for them). What Neo shares with A1111 — its `shared.state`, queue lock, Interrupt, `cmd_opts.lora_dir`,
`ui_components.ToolButton`, txt2img through `processing` — comes from WebuiHost; the model does not.

The model. Neo loads lazily: `shared.sd_model` is a placeholder until a generation, and choosing a checkpoint only
records it (F4.2). When the tab's Model is the checkpoint Forge holds or has selected, the job takes it through
Forge's own `forge_model_reload()` (a no-op when it is loaded) and trains on its weights: nothing is read from the
file. Neo holds every weight as an inference tensor, which autograd cannot save for backward (F4.3), so each is
copied once into the dtype and device it trains in (forge_model.py), after Forge's memory manager has moved its own
copy off the GPU (`unload_all_models`, F5): the GPU holds one copy of the model. On a CPU-only Forge the UNet and
VAE copies replace Forge's own tensors (Forge computes with them as well), so RAM holds one copy too; only what is
cast (the text encoders, which Forge stores in fp16) exists twice while the job runs. A `<lora:…>` the last
generation merged is taken out first through Forge's original patchers (F4.4) and is merged again by its next
generation. Another checkpoint: Forge's models leave the GPU and the file is loaded as standalone.

Files. Forge keeps applying a LoRA it has applied before under the same file name (F6), so a run that would
overwrite one saves under a new name instead (runner.py, `caches_lora_files`); each save writes the `<lora>.json`
sidecar whose `"sd version"` Neo's Lora tab filters by, and refreshes Forge's Lora list.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
from modules import sd_models, shared  # noqa: Forge is present whenever this module is imported

from ..engine.control import Event
from ..errors import UserError
from ..models import ldm_config
from ..models.checkpoint import TensorDictStateDict, open_state_dict
from ..models.components import build_components, load_components, load_vae_file
from ..models.devices import compute_dtype
from ..models.family import detect_family
from ..networks.sidecar import write_sd_version
from . import forge_model, held_model
from .webui import WebuiHost, _dtype_name, _gib, _pooled_width, _same_file

log = logging.getLogger(__name__)

def _memory_management():
    from backend import memory_management

    return memory_management


def _lora_networks():
    """Forge's built-in Lora module (`networks`, a bare name, F1), or None when it is disabled."""
    try:
        import networks
    except ImportError:
        return None
    return networks if hasattr(networks, "list_available_networks") else None


class ForgeNeoHost(WebuiHost):
    name = "forge-neo"
    caches_lora_files = True  # F6: a file applied before is not read again under the same name
    previews_through_txt2img = False  # Forge applies a LoRA through its own patcher: the trainer renders previews

    def __init__(self):
        super().__init__()
        self._clip_on_device = False  # Forge moved its text encoder to the device for our prompts

    # -- the Model dropdown: Forge's names, in an order that does not change from run to run ------------------------
    def models(self) -> list[str]:
        return sorted(sd_models.checkpoint_tiles(), key=str.lower)  # Neo builds the list from a set (F5)

    def held(self):
        """The model Forge holds now, or None (the placeholder before the first generation, None mid-reload)."""
        model = sd_models.model_data.sd_model
        return model if forge_model.is_forge_model(model) else None

    def _selected(self):
        """The checkpoint Forge's own dropdown names (what its next generation loads), else the one it holds."""
        params = getattr(sd_models.model_data, "forge_loading_parameters", None) or {}
        info = params.get("checkpoint_info")
        if info is None:
            info = getattr(self.held(), "sd_checkpoint_info", None)
        if info is None:
            current = shared.opts.data.get("sd_model_checkpoint")
            info = sd_models.get_closet_checkpoint_match(current) if current else None
        return info

    def default_model(self) -> str:
        models = self.models()
        info = self._selected()
        for attr in ("name", "title", "short_title", "model_name"):  # checkpoint_tiles() gives `name` (F5)
            label = getattr(info, attr, None)
            if label in models:
                return label
        return models[0] if models else ""

    def _forge_has(self, path: str) -> bool:
        """Is `path` the checkpoint Forge holds, or the one it has selected (and loads on request)?"""
        held = self.held()
        if held is not None and _same_file(path, held.sd_checkpoint_info.filename):
            return True
        selected = self._selected()
        return selected is not None and _same_file(path, selected.filename)

    def _held_is(self, path: str) -> bool:
        held = self.held()
        return held is not None and _same_file(path, held.sd_checkpoint_info.filename)

    def holds(self, model: str) -> bool:
        """True where the job trains on Forge's tensors without a second copy: its loaded model, on the CPU
        (forge_model.training_tensors adopts them). On a GPU the trainer's copy is new memory (Forge's own is
        moved off the device first, freed_bytes)."""
        try:
            path = self.resolve(model)
        except UserError:
            return False
        return self._held_is(path) and torch.device(self.device).type == "cpu"

    def freed_bytes(self, model: str) -> int:
        """Forge's models on the device: its memory manager moves them to the CPU before any job trains."""
        held = self.held()
        device = torch.device(self.device)
        if held is None or device.type == "cpu":
            return 0
        return held_model.storage_bytes(t for e in forge_model.ldm_entries(held) for t in e.parts
                                        if t.device.type == device.type)

    @contextlib.contextmanager
    def peek(self, model: str):
        path = self.resolve(model)
        held = self.held()
        if held is not None and self._held_is(path):
            yield TensorDictStateDict(forge_model.shapes(held), path)
            return
        if not path.endswith(".safetensors"):
            yield None
            return
        with open_state_dict(path) as sd:
            _refuse_sd2(sd, path)
            yield sd

    # -- running a job ----------------------------------------------------------------------------------------------
    def load_components(self, model: str, dtype, vae_dtype, v_prediction, vae: str = ""):
        vae_file = self.resolve(vae, "VAE") or None
        path = self.resolve(model)
        sd_model = self._forge_model(path) if self._forge_has(path) else None
        if sd_model is not None:
            components = self._from_forge(sd_model, dtype, vae_dtype, v_prediction, vae_file)
        else:
            if path.endswith(".safetensors"):  # its header only (a pickle would be read in full twice)
                with open_state_dict(path) as sd:
                    _refuse_sd2(sd, path)
            notes = self._free_device("while training")
            components = load_components(path, dtype=dtype, device=self.device, vae_dtype=vae_dtype,
                                         v_prediction=v_prediction, vae_file=vae_file)
            components.notes.extend(notes)
        self._loaded.append(components)
        return components

    def _forge_model(self, path: str):
        """Forge's model of `path`, loaded through its own reload call when it is only selected (F4.2)."""
        if self._held_is(path):
            return self.held()
        if not getattr(sd_models.model_data, "forge_loading_parameters", None):
            from modules_forge import main_entry

            main_entry.refresh_model_loading_parameters()
        try:
            sd_model, _ = sd_models.forge_model_reload()
        except Exception as err:  # Forge's own message, on one line ("Failed to recognize model type!")
            raise UserError(f"Forge could not load {Path(path).name}: {str(err).strip() or type(err).__name__}") \
                from None
        if not forge_model.is_forge_model(sd_model) or not _same_file(path, sd_model.sd_checkpoint_info.filename):
            return None
        return sd_model

    def _from_forge(self, sd_model, dtype, vae_dtype, v_prediction, vae_file):
        info = sd_model.sd_checkpoint_info
        notes = []
        merged = forge_model.merged_loras(sd_model)
        if merged:
            forge_model.restore_base_weights(sd_model)
            notes.append("Forge had the last generation's <lora:…> merged into its weights: trained on the base "
                         "weights (restored; its next generation merges them again).")
        # Forge's patchers with the LoRA patches would merge them back whenever Forge loads one (its text encoder
        # for our prompts): the job sees the unpatched ones, and Forge gets its own back at the end
        self._stack().enter_context(forge_model.unpatched(sd_model))
        notes += self._free_device("while training")
        device = torch.device(self.device)
        held = held_model.dtypes_by_part(forge_model.shapes(sd_model))
        unet_dtype = compute_dtype(device, dtype or held.get("unet", torch.float32))
        vae_cast = compute_dtype(device, vae_dtype or held.get("vae", torch.float32))
        parts = ("unet", "text") if vae_file is not None else ("unet", "text", "vae")
        copied = forge_model.training_tensors(sd_model, device,
                                              {"unet": unet_dtype, "text": unet_dtype, "vae": vae_cast}, parts)
        sd = TensorDictStateDict(copied.tensors, info.filename)
        if v_prediction is None:
            kind = forge_model.prediction_type(sd_model)
            v_prediction, why = kind == "v_prediction", f"Forge's model ({kind})"
        else:
            why = "the model_v_pred setting"
        components = build_components(sd, Path(info.filename), None, None, v_prediction,
                                      with_vae=vae_file is None, v_prediction_source=why)
        if vae_file is not None:
            config = ldm_config.load_ldm_config(components.family, info.filename)[0]
            components.vae = load_vae_file(vae_file, config, components.family, vae_cast)
        components.prompt_encoder = self._forge_conditioning(sd_model, components)
        shared_part = (f", {_gib(copied.adopted_bytes)} of it now shared with Forge instead of its own"
                       if copied.adopted_bytes else "")
        components.notes = [
            f"Training on Forge's loaded model {info.name}, not read from its file: its weights (inference tensors, "
            f"which cannot train) were copied once into {_dtype_name(unet_dtype)} on {device} "
            f"({_gib(copied.copied_bytes)}{shared_part}).", *notes]
        return components

    def _free_device(self, why: str) -> list[str]:
        """Forge's models off the GPU through its memory manager (F5); its next generation loads them back."""
        memory = _memory_management()
        memory.unload_all_models()
        memory.soft_empty_cache()
        self._clip_on_device = False
        if torch.device(self.device).type == "cpu":
            return []
        return [f"Forge's models were moved to the CPU {why}; its next generation loads them back."]

    def _forge_conditioning(self, sd_model, components):
        """texts → (hidden, pooled) through Forge's `get_learned_conditioning` (F7): its emphasis, long prompts,
        CLIP skip and embeddings, as in its txt2img. Its results are inference tensors: cloned."""
        pooled_width = _pooled_width(components)
        device = torch.device(self.device)

        def encode(texts: list[str]):
            clip_skip = getattr(shared.opts, "CLIP_stop_at_last_layers", None)
            if clip_skip is None:
                clip_skip = shared.opts.data.get("CLIP_stop_at_last_layers", 2)
            sd_model.set_clip_skip(int(clip_skip))  # processing does this itself; the engine keeps the last value
            cond = sd_model.get_learned_conditioning(list(texts))
            self._clip_on_device = True  # Forge loaded its text encoder onto the device for this
            with torch.inference_mode(False):
                if isinstance(cond, dict):
                    hidden = cond["crossattn"].to(device, copy=True)
                    pooled = cond["vector"][:, :pooled_width].to(device, copy=True)
                else:
                    hidden, pooled = cond.to(device, copy=True), None
            return hidden, pooled

        return encode

    def report(self, event: dict) -> None:
        if event["kind"] == Event.STEP and self._clip_on_device:
            self._free_device("")  # the prompts are encoded: Forge's text encoder leaves the device for the steps
        super().report(event)

    def interrupted(self) -> bool:
        state = shared.state
        return bool(state.interrupted or getattr(state, "stopping_generation", False))

    def saved(self, path) -> None:
        """The `<lora>.json` sidecar for Neo's Lora tab, then its list scanned again (F6)."""
        write_sd_version(Path(path))
        networks = _lora_networks()
        if networks is not None:
            networks.list_available_networks()


def _refuse_sd2(sd, path: str) -> None:
    if detect_family(sd.keys(), sd.shape, path).is_sd2:
        raise UserError(f"{Path(path).name} is an SD2 checkpoint, which Forge Neo cannot load, so a LoRA for it "
                        "could not be used here; train SD2 LoRAs in AUTOMATIC1111 or the standalone app")
