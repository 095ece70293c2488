"""Neo modules/processing.py (forge-api.md F7): `StableDiffusionProcessing(Txt2Img)` (dataclasses with the fields an
extension sets; `p.scripts` None), `Processed` (images, info, seed), `process_images(p)`, `need_global_unload`.

`process_images(p)`: when `need_global_unload` (set by a checkpoint change) the loaded models are unloaded first
*(inferred)*; then `sd_models.forge_model_reload()` loads the **selected** checkpoint if it is stale, and `p.sd_model`
becomes `shared.sd_model`; `sd_model.set_clip_skip(opts.CLIP_stop_at_last_layers)`; the `<lora:name:te[:unet]>` of
the prompt go to `networks.load_networks` (which, in the fake, applies only networks that
`networks.merge_random_lora` made) and are removed from it; the UNet, CLIP and VAE patchers are loaded
(`load_models_gpu`: a pending LoRA merge, or its undoing, happens there) and stay loaded. No sampling: each image is a
solid colour derived from a hash of (prompt, negative prompt, seed, steps, cfg scale, sampler, size, model hash,
LoRA hash). Images are saved to `outpath_samples` unless `do_not_save_samples`; no grids.

Test-only: `process_images_calls` ({"p", "lock_held", "thread", "sd_model"} per call), `close_calls`."""

import hashlib
import os
import random
import re
import threading
from dataclasses import dataclass

from modules import shared

need_global_unload = False
process_images_calls = []  # test-only
close_calls = 0  # test-only
re_lora = re.compile(r"<lora:([^:>]+)(?::([^:>]+))?(?::([^:>]+))?>")


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
    distilled_cfg_scale: float = 3.5
    width: int = 512
    height: int = 512
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    disable_extra_networks: bool = False

    def __post_init__(self):
        self.override_settings = dict(self.override_settings or {})
        self.scripts = None
        self.script_args = []
        self.sampler = None
        self.c = None
        self.uc = None
        self.extra_generation_params = {}

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
        self.infotexts = [info] * len(images_list)


def _colour(*parts) -> tuple[int, int, int]:
    digest = hashlib.sha256("\x1f".join(str(x) for x in parts).encode("utf-8")).digest()
    return digest[0], digest[1], digest[2]


def _infotext(p, prompt, seed, model):
    negative = f"\nNegative prompt: {p.negative_prompt}" if p.negative_prompt else ""
    info = getattr(model, "sd_checkpoint_info", None)
    return (f"{prompt}{negative}\nSteps: {p.steps}, Sampler: {p.sampler_name or 'Euler'}, "
            f"Schedule type: {p.scheduler or 'Automatic'}, CFG scale: {p.cfg_scale}, Seed: {seed}, "
            f"Size: {p.width}x{p.height}, Model hash: {getattr(model, 'sd_model_hash', None)}, "
            f"Model: {getattr(info, 'model_name', None)}, Version: neo")


def _extra_networks(prompt):
    """The prompt without its <lora:…> tags, and (names, te_multipliers, unet_multipliers)."""
    names, te, unet = [], [], []
    for m in re_lora.finditer(prompt):
        names.append(m.group(1))
        te.append(float(m.group(2)) if m.group(2) else 1.0)
        unet.append(float(m.group(3)) if m.group(3) else te[-1])
    return re_lora.sub("", prompt), (names, te, unet)


def process_images(p: StableDiffusionProcessing) -> Processed:
    global need_global_unload
    import sys

    from backend import memory_management
    from PIL import Image

    from modules import call_queue, sd_models

    process_images_calls.append({"p": p, "lock_held": call_queue.queue_lock.locked(),
                                 "thread": threading.current_thread().name})
    stored = {k: shared.opts.data.get(k) for k in p.override_settings}
    try:
        for k, v in p.override_settings.items():
            shared.opts.data[k] = v
            if k == "sd_model_checkpoint":
                from modules_forge import main_entry

                main_entry.refresh_model_loading_parameters()
        if need_global_unload:
            need_global_unload = False
            memory_management.unload_all_models()
        sd_models.forge_model_reload()
        model = shared.sd_model
        p.sd_model = model
        process_images_calls[-1]["sd_model"] = model
        model.set_clip_skip(int(shared.opts.data.get("CLIP_stop_at_last_layers", 1)))
        prompt, (names, te, unet) = _extra_networks(p.prompt)
        networks = sys.modules.get("networks")
        if networks is not None and not p.disable_extra_networks:
            networks.load_networks(names, te, unet, [None] * len(names))
        objects = model.forge_objects
        memory_management.load_models_gpu([objects.unet, objects.clip.patcher, objects.vae.patcher])
        seed = int(p.seed) if p.seed is not None and int(p.seed) != -1 else random.randrange(4294967294)
        if shared.state.job_count == -1:
            shared.state.job_count = p.n_iter
        shared.state.sampling_steps = p.steps
        images = []
        for n in range(p.n_iter):
            if shared.state.interrupted or shared.state.stopping_generation:
                break
            shared.state.job_no = n
            for b in range(p.batch_size):
                image_seed = seed + n * p.batch_size + b
                colour = _colour(prompt, p.negative_prompt, image_seed, p.steps, p.cfg_scale, p.sampler_name,
                                 p.width, p.height, getattr(model, "sd_model_hash", None), model.current_lora_hash)
                image = Image.new("RGB", (int(p.width), int(p.height)), colour)
                image.info["parameters"] = _infotext(p, p.prompt, image_seed, model)
                images.append(image)
                if not p.do_not_save_samples and p.outpath_samples:
                    os.makedirs(p.outpath_samples, exist_ok=True)
                    image.save(os.path.join(p.outpath_samples,
                                            f"{len(os.listdir(p.outpath_samples)):05}-{image_seed}.png"))
            shared.state.sampling_step = p.steps
        shared.state.current_image = images[-1] if images else None
        return Processed(p, images, seed, _infotext(p, p.prompt, seed, model))
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored.items():
                shared.opts.data[k] = v
                if k == "sd_model_checkpoint":
                    from modules_forge import main_entry

                    main_entry.refresh_model_loading_parameters()
