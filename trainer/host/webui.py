"""The webui host: with webui_generate.py the only modules that import the webui's `modules` package (and its
built-in Lora extension).

Checkpoints and VAEs are the webui's own lists (`sd_models.checkpoint_tiles()`, `sd_vae.vae_dict`), the LoRA goes to
`shared.cmd_opts.lora_dir`, the device is `devices.device`. A job holds the webui's queue lock (txt2img waits for it),
shows in `shared.state` (the webui's progress bar and console), and stops on Interrupt (Skip: stop and save).

When the Model dropdown names the checkpoint the webui holds, the job trains on the webui's own tensors (held_model.py:
no read of the file, no second copy), in the dtype the webui holds them in, with the base weights restored from any
merged `<lora:…>` first and left bit-identical; prompts go through the webui's own conditioning. Another checkpoint:
the webui's model is moved off the device (or, on a CPU-only webui, dropped) before ours loads, and put back after
the job, whatever way it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch
from modules import devices, sd_models, shared  # noqa: the webui is present whenever this module is imported

from ..engine.control import Event
from ..errors import UserError
from ..models import ldm_config
from ..models.checkpoint import TensorDictStateDict, open_state_dict
from ..models.components import build_components, load_components, load_vae_file
from ..models.devices import compute_dtype
from . import held_model

log = logging.getLogger(__name__)
TRAINABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _vae_dict() -> dict:
    try:
        from modules import sd_vae
    except ImportError:
        return {}
    return dict(getattr(sd_vae, "vae_dict", {}) or {})


def _lora_extension():
    """The built-in Lora extension's `networks` module (webui-api.md A1, A9), or None when it is disabled."""
    try:
        import networks
    except ImportError:
        return None
    return networks if hasattr(networks, "network_restore_weights_from_backup") else None


def _lowvram():
    try:
        from modules import lowvram
    except ImportError:
        return None
    return lowvram


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


class WebuiHost:
    name = "webui"
    can_generate = True  # the iLECO Generate buttons: a txt2img of a prompt (webui_generate.py)
    previews_through_txt2img = True  # sample previews as the webui's own generations (A1111's Lora extension)

    def __init__(self):
        self._job: contextlib.ExitStack | None = None  # undone when the job ends
        self._loaded = []  # the modules handed to the job, dropped when it ends
        self._progress_every = 1

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

    def held(self):
        """The model the webui holds now, without loading one (`shared.sd_model` would load it on first access)."""
        return sd_models.model_data.sd_model

    def default_model(self) -> str:
        """The checkpoint the webui holds (or is about to load), as the Model dropdown spells it."""
        models = self.models()
        held = self.held()
        info = getattr(held, "sd_checkpoint_info", None)
        if info is not None and info.title in models:
            return info.title
        current = shared.opts.data.get("sd_model_checkpoint")
        match = sd_models.get_closet_checkpoint_match(current) if current else None
        if match is not None and match.title in models:
            return match.title
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

    def holds(self, model: str) -> bool:
        """Does the webui hold (on some device, with weights) the checkpoint `model` names?"""
        held = self.held()
        info = getattr(held, "sd_checkpoint_info", None)
        if info is None:
            return False
        try:
            path = self.resolve(model)
        except UserError:
            return False
        return _same_file(path, info.filename) and not any(p.is_meta for p in held.parameters())

    def freed_bytes(self, model: str) -> int:
        """The webui's model, when another checkpoint is chosen: it leaves the device before ours loads."""
        held = self.held()
        if held is None or self.holds(model):
            return 0
        device = torch.device(self.device)
        return held_model.storage_bytes(t for t in held.state_dict().values() if t.device.type == device.type)

    @contextlib.contextmanager
    def peek(self, model: str):
        """Keys, shapes and dtypes of the checkpoint, for the checks before loading; None where that would cost a
        full read. The held model is described from memory: its file is not opened."""
        if self.holds(model):
            held = self.held()
            yield TensorDictStateDict(held_model.ldm_tensors(held), held.sd_checkpoint_info.filename)
            return
        path = self.resolve(model)
        if not path.endswith(".safetensors"):
            yield None
            return
        with open_state_dict(path) as sd:
            yield sd

    # -- running a job ----------------------------------------------------------------------------------------------
    def load_components(self, model: str, dtype, vae_dtype, v_prediction, vae: str = ""):
        vae_file = self.resolve(vae, "VAE") or None
        if self.holds(model):
            components = self._from_held(dtype, vae_dtype, v_prediction, vae_file)
        else:
            path = self.resolve(model)
            notes = self._release_held()
            components = load_components(path, dtype=dtype, device=self.device, vae_dtype=vae_dtype,
                                         v_prediction=v_prediction, vae_file=vae_file)
            components.notes.extend(notes)
        self._loaded.append(components)
        return components

    def _from_held(self, dtype, vae_dtype, v_prediction, vae_file):
        sd_model = self.held()
        info = sd_model.sd_checkpoint_info
        notes = []
        restored = held_model.restore_base_weights(sd_model, _lora_extension())
        if restored:
            merged = ", ".join(f"<lora:{n}>" for n in restored)
            notes.append(f"The webui had {merged} merged into its weights: trained on the base weights (restored; "
                         "its next generation merges them again).")
        self._stack().enter_context(held_model.frozen(sd_model))
        notes += self._off_lowvram(sd_model)
        tensors = self._held_tensors(sd_model)
        held = held_model.dtypes_by_part(tensors)
        unet_cast, note = self._cast_for("UNet and text encoder", held.get("unet"), dtype, tensors, "model.")
        notes += note
        vae_cast, note = self._cast_for("VAE", held.get("vae"), vae_dtype, tensors, "first_stage_model.")
        notes += note
        sd = TensorDictStateDict(tensors, info.filename)
        if v_prediction is None:
            v_prediction, why = sd_model.parameterization == "v", f"the webui's model ({sd_model.parameterization})"
        else:
            why = "the model_v_pred setting"
        components = build_components(sd, Path(info.filename), unet_cast, vae_cast, v_prediction,
                                      with_vae=vae_file is None, v_prediction_source=why)
        if vae_file is not None:
            config = ldm_config.load_ldm_config(components.family, info.filename)[0]
            components.vae = load_vae_file(vae_file, config, components.family,
                                           compute_dtype(self.device, vae_cast or held.get("vae", torch.float32)))
        components.prompt_encoder = self._webui_conditioning(sd_model, components)
        components.notes = [f"Training on the webui's loaded model {info.title} (shared, not loaded again).", *notes]
        return components

    def _held_tensors(self, sd_model) -> dict[str, torch.Tensor]:
        return held_model.ldm_tensors(sd_model)

    def _cast_for(self, what: str, held: torch.dtype | None, asked: torch.dtype | None, tensors, prefix: str):
        """(dtype to cast to, or None to train as held; notes). As held when the held dtype can train: casting
        would put a second copy of the part in memory."""
        if held is None:
            return None, []
        if held in TRAINABLE_DTYPES and compute_dtype(self.device, held) == held:
            if asked is not None and compute_dtype(self.device, asked) != held:
                size = held_model.storage_bytes(t for k, t in tensors.items() if k.startswith(prefix))
                return None, [f"The webui holds the {what} in {_dtype_name(held)}: trained in {_dtype_name(held)}, "
                              f"not {_dtype_name(asked)} (that would need a second copy, about "
                              f"{_gib(size * asked.itemsize // held.itemsize)}; start the webui with another "
                              "precision to change it)."]
            return None, []
        target = compute_dtype(self.device, asked or torch.float32)
        size = held_model.storage_bytes(t for k, t in tensors.items() if k.startswith(prefix))
        return target, [f"The webui holds the {what} in {held}, which cannot train: cast to {_dtype_name(target)} "
                        f"(a second copy, about {_gib(size * target.itemsize // held.itemsize)})."]

    def _off_lowvram(self, sd_model) -> list[str]:
        """--medvram / --lowvram: the webui keeps the model on the CPU and moves parts per forward (A9). Nothing of it
        stays on the device; the trainer copies what it trains to the device itself."""
        if not getattr(sd_model, "lowvram", False):
            return []
        lowvram = _lowvram()
        if lowvram is not None:
            lowvram.send_everything_to_cpu()
        if torch.device(self.device).type == "cpu":
            return ["The webui runs in --medvram/--lowvram mode; on the CPU nothing is moved."]
        return [f"The webui keeps this model on the CPU (--medvram/--lowvram): its UNet and text encoder(s) are "
                f"copied to {self.device} for training and dropped afterwards; the webui's copy stays on the CPU."]

    def _release_held(self) -> list[str]:
        """Another checkpoint will load: take the webui's model off the device first, and put it back after the
        job (registered on the job's exit stack, so an error, Stop or Interrupt puts it back too)."""
        held = self.held()
        if held is None or all(p.is_meta for p in held.parameters()):
            return []
        info = held.sd_checkpoint_info
        if torch.device(self.device).type == "cpu":
            sd_models.send_model_to_trash(held)  # on a CPU-only webui the device is the RAM: free it
            self._stack().callback(self._reload, info)
            devices.torch_gc()
            return [f"Freed the webui's model {info.title} while training; it is loaded again afterwards."]
        sd_models.unload_model_weights(held)
        devices.torch_gc()
        self._stack().callback(self._back_to_device, held)
        return [f"Moved the webui's model {info.title} to the CPU while training; it goes back afterwards."]

    def _reload(self, info) -> None:
        self._drop_loaded()
        sd_models.load_model(info)

    def _back_to_device(self, held) -> None:
        self._drop_loaded()
        if not getattr(held, "lowvram", False):
            held.to(devices.device)

    def _drop_loaded(self) -> None:
        """Release the trainer's modules before the webui's model comes back, even while an exception (whose
        traceback keeps the job's frames alive) is on its way: never two models on the device."""
        for components in self._loaded:
            for module in (components.unet, components.vae, *components.text_encoders):
                if module is not None:
                    module.to("meta")
        self._loaded.clear()
        devices.torch_gc()

    def _stack(self) -> contextlib.ExitStack:
        if self._job is None:
            raise RuntimeError("load_components called outside job_context")
        return self._job

    def _webui_conditioning(self, sd_model, components):
        """texts → (hidden, pooled) through `prompt_parser.get_learned_conditioning` (webui-api.md A5;
        traintrain-behaviour.md §3.0.2): the webui's emphasis syntax, chunks beyond 75 tokens, CLIP skip and
        textual-inversion embeddings apply, as in its txt2img."""
        from modules import prompt_parser

        size = components.resolution
        pooled_width = _pooled_width(components)

        def encode(texts: list[str]):
            batch = prompt_parser.SdConditioning(list(texts), width=size, height=size)
            with torch.no_grad(), devices.autocast():
                conds = prompt_parser.get_learned_conditioning(sd_model, batch, 1)
            first = [schedule[0].cond for schedule in conds]
            if isinstance(first[0], dict):  # SDXL: cross-attention states and the pooled part of the vector
                hidden = [c["crossattn"] for c in first]
                pooled = torch.stack([c["vector"][:pooled_width] for c in first])
            else:
                hidden, pooled = first, None
            return _same_length(hidden), pooled

        return encode

    @contextlib.contextmanager
    def job_context(self, job):
        """The whole job holds the webui's queue lock and is its current job; what the job changed in the webui
        (requires_grad, a released model) is undone at the end, however it ends."""
        from modules import call_queue

        with call_queue.queue_lock:
            shared.state.begin(job="TrainTrain")
            shared.state.job_count = 1
            shared.state.textinfo = "TrainTrain: loading"
            self._job = contextlib.ExitStack()
            try:
                with self._job:
                    self._job.callback(self._drop_loaded)
                    networks = _lora_extension()
                    if networks is not None and getattr(networks, "loaded_networks", None):
                        # the extension merges its last networks into any layer that runs; none must during training
                        self._job.callback(_set_loaded_networks, networks, list(networks.loaded_networks))
                        networks.loaded_networks.clear()
                    yield
            finally:
                self._job = None
                shared.state.end()

    def interrupted(self) -> bool:
        return bool(shared.state.interrupted)

    def skipped(self) -> bool:
        return bool(getattr(shared.state, "skipped", False))

    def report(self, event: dict) -> None:
        """A job's progress where webui users look: `shared.state` (its progress bar), the console, the Lora list."""
        state = shared.state
        kind = event["kind"]
        if kind == Event.PHASE:
            state.textinfo = f"TrainTrain: {event['text']}"
        elif kind == Event.STEP:
            step, total = event["step"], event["total"]
            state.job_count, state.job_no = 1, 0
            state.sampling_steps, state.sampling_step = total, step
            state.textinfo = f"TrainTrain: step {step}/{total}, loss {event['loss_ema']:.5f}"
            if step == 1 or step == total or step % max(1, total // 20) == 0:
                log.info("step %d/%d, loss EMA %.5f", step, total, event["loss_ema"])
        elif kind in (Event.SAVED, Event.DONE) and event.get("path"):
            self.saved(event["path"])

    def saved(self, path) -> None:
        """A new LoRA file: the webui's Lora list is scanned again, so it shows without pressing refresh."""
        networks = _lora_extension()
        if networks is not None:
            networks.list_available_networks()

    def generate(self, prompts: list[str], negative: str, txt2img_json: str) -> tuple[list, str]:
        from .webui_generate import generate

        return generate(prompts, negative, txt2img_json)

    def preview_renderer(self, job):
        """The webui's txt2img for the job's sample previews (webui_generate.WebuiPreviews), so they look exactly like
        generations, when the job trains on the model the webui holds and its Lora extension can take a merged LoRA
        back out of the weights (backups kept); None otherwise, and the trainer renders them itself."""
        networks = _lora_extension()
        if not self.previews_through_txt2img or networks is None or not self.holds(job.model):
            return None
        if shared.opts.data.get("lora_without_backup_weight", False):
            log.warning("sample previews are rendered by the trainer, not the webui's txt2img: with the webui's "
                        "lora_without_backup_weight setting a LoRA merged for a preview could not be taken back out "
                        "of the weights being trained")
            return None
        from .webui_generate import WebuiPreviews

        return WebuiPreviews(self.lora_dir, networks)

    def tool_button(self, value: str, elem_id: str):
        try:
            from modules.ui_components import ToolButton
        except ImportError:  # Forge Neo re-exports it from ui_common (forge-api.md F2)
            from modules.ui_common import ToolButton

        return ToolButton(value=value, elem_id=elem_id)


def _set_loaded_networks(networks, saved: list) -> None:
    networks.loaded_networks[:] = saved


def _pooled_width(components) -> int:
    config = components.unet.config
    if not components.family.is_sdxl:
        return 0
    return config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim


def _same_length(hidden: list[torch.Tensor]) -> torch.Tensor:
    """One (B, T, D) batch from per-prompt (T_i, D) conditionings: shorter ones are padded with their own last
    77-token chunk's end-of-text state, as the webui pads a shorter prompt for a batch (prompts over 75 tokens)."""
    length = max(h.shape[0] for h in hidden)
    padded = [torch.cat([h, h[-1:].expand(length - h.shape[0], -1)]) if h.shape[0] < length else h for h in hidden]
    return torch.stack(padded)
