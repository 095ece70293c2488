"""webui modules/processing.py: `StableDiffusionProcessing` / `StableDiffusionProcessingTxt2Img` (dataclasses with the
fields an extension sets), `Processed` (images, info, seed), `process_images(p)`, `p.close()`.

No sampling: each image is a solid colour derived from a hash of (prompt, negative prompt, seed, steps, cfg scale,
sampler, size, the model's hash, the active LoRA files' hashes and multipliers), so equal settings give equal images.
Images are saved to `outpath_samples` unless `do_not_save_samples`; no grids. `<lora:NAME:te[:unet]>` tags are taken
out of the prompt and activated through the Lora extension's `load_networks` (all of them, none when the prompt has
none, as the webui activates every extra network for each generation) unless `disable_extra_networks`; then every
named Linear/Conv2d/GroupNorm/LayerNorm/MultiheadAttention "runs" once, i.e. gets `network_apply_weights`, as the
sampler's forwards through the Lora extension's patched forwards would."""

import hashlib
import os
import random
import re
import sys
import threading
from dataclasses import dataclass

from modules import shared

# test-only, one per process_images(p): {"p", "lock_held" (queue_lock), "thread", "sd_model", "prompt" (without its
# extra-network tags), "networks" (the loaded Networks), "merged" (every layer's network_current_names while it ran,
# by layer name, those not () only), "images"}
process_images_calls = []
LORA_TAG = re.compile(r"<lora:([^:>]+)((?::[^:>]*)*)>")
close_calls = 0  # test-only: how many times p.close() ran


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    disable_extra_networks: bool = False

    def __post_init__(self):
        self.override_settings = dict(self.override_settings or {})
        self.sampler = None
        self.c = None
        self.uc = None

    def close(self):
        global close_calls
        close_calls += 1
        self.sampler = None
        self.c = None
        self.uc = None


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float = 0.75
    hr_scale: float = 2.0
    hr_upscaler: str = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0


class Processed:
    def __init__(self, p, images_list, seed=-1, info=""):
        self.images = images_list
        self.info = info
        self.seed = seed


def _colour(*parts) -> tuple[int, int, int]:
    digest = hashlib.sha256("\x1f".join(str(x) for x in parts).encode("utf-8")).digest()
    return digest[0], digest[1], digest[2]


def _infotext(p, seed, model):
    negative = f"\nNegative prompt: {p.negative_prompt}" if p.negative_prompt else ""
    info = getattr(model, "sd_checkpoint_info", None)
    return (f"{p.prompt}{negative}\nSteps: {p.steps}, Sampler: {p.sampler_name or 'Euler'}, "
            f"Schedule type: {p.scheduler or 'Automatic'}, CFG scale: {p.cfg_scale}, Seed: {seed}, "
            f"Size: {p.width}x{p.height}, Model hash: {getattr(model, 'sd_model_hash', None)}, "
            f"Model: {getattr(info, 'model_name', None)}, Version: v1.10.1")


def _extra_networks(prompt: str) -> tuple[str, list[tuple[str, float, float]]]:
    """(the prompt without its `<lora:…>` tags, [(name, te multiplier, unet multiplier)])."""
    found = []
    for match in LORA_TAG.finditer(prompt):
        args = match.group(2).split(":")[1:]
        te = float(args[0]) if args and args[0] else 1.0
        unet = float(args[1]) if len(args) > 1 and args[1] else te
        found.append((match.group(1), te, unet))
    return LORA_TAG.sub("", prompt).strip(), found


def _activate_and_run(model, wanted) -> tuple[list, dict]:
    """Activate the wanted networks (the Lora extension, when loaded) and let every named layer merge them."""
    networks = sys.modules.get("networks")
    if networks is None or not hasattr(networks, "load_networks"):
        return [], {}
    networks.load_networks([w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted])
    import torch

    patched = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.MultiheadAttention)
    merged = {}
    for name, layer in (getattr(model, "network_layer_mapping", None) or {}).items():
        if not isinstance(layer, patched):  # the layer types whose forward the Lora extension patches (A6)
            continue
        networks.network_apply_weights(layer)
        if getattr(layer, "network_current_names", ()):
            merged[name] = layer.network_current_names
    return list(networks.loaded_networks), merged


def process_images(p: StableDiffusionProcessing) -> Processed:
    from PIL import Image

    from modules import call_queue, sd_models

    process_images_calls.append({"p": p, "lock_held": call_queue.queue_lock.locked(),
                                 "thread": threading.current_thread().name})
    stored = {k: shared.opts.data.get(k) for k in p.override_settings}
    try:
        for k, v in p.override_settings.items():
            shared.opts.data[k] = v
            if k == "sd_model_checkpoint":
                sd_models.reload_model_weights()
        model = p.sd_model or shared.sd_model
        process_images_calls[-1]["sd_model"] = model
        prompt, wanted = _extra_networks(p.prompt)
        loaded, merged = ([], {}) if p.disable_extra_networks else _activate_and_run(model, wanted)
        process_images_calls[-1].update(prompt=prompt, networks=loaded, merged=merged)
        active = [(n.name, n.te_multiplier, n.unet_multiplier, getattr(n, "sha256", None)) for n in loaded]
        seed = int(p.seed) if p.seed is not None and int(p.seed) != -1 else random.randrange(4294967294)
        if shared.state.job_count == -1:
            shared.state.job_count = p.n_iter
        shared.state.sampling_steps = p.steps
        images = []
        for n in range(p.n_iter):
            if shared.state.interrupted:
                break
            shared.state.job_no = n
            for b in range(p.batch_size):
                image_seed = seed + n * p.batch_size + b
                colour = _colour(prompt, p.negative_prompt, image_seed, p.steps, p.cfg_scale, p.sampler_name,
                                 p.width, p.height, getattr(model, "sd_model_hash", None), *active)
                image = Image.new("RGB", (int(p.width), int(p.height)), colour)
                image.info["parameters"] = _infotext(p, image_seed, model)
                images.append(image)
                if not p.do_not_save_samples and p.outpath_samples:
                    os.makedirs(p.outpath_samples, exist_ok=True)
                    image.save(os.path.join(p.outpath_samples, f"{len(os.listdir(p.outpath_samples)):05}-"
                                                               f"{image_seed}.png"))
            shared.state.sampling_step = p.steps
        shared.state.current_image = images[-1] if images else None
        process_images_calls[-1]["images"] = images
        return Processed(p, images, seed, _infotext(p, seed, model))
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored.items():
                shared.opts.data[k] = v
                if k == "sd_model_checkpoint" and v is not None:
                    sd_models.reload_model_weights()

