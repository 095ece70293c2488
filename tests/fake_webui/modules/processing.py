"""webui modules/processing.py: `StableDiffusionProcessing` / `StableDiffusionProcessingTxt2Img` (dataclasses with the
fields an extension sets), `Processed` (images, info, seed), `process_images(p)`, `p.close()`.

No sampling: each image is a solid colour derived from a hash of (prompt, negative prompt, seed, steps, cfg scale,
sampler, size, the model's hash), so equal settings give equal images. Images are saved to `outpath_samples` unless
`do_not_save_samples`; no grids; extra networks in the prompt are not applied."""

import hashlib
import os
import random
import threading
from dataclasses import dataclass

from modules import shared

process_images_calls = []  # test-only, one per process_images(p): {"p", "lock_held" (queue_lock), "thread", "sd_model"}
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
                colour = _colour(p.prompt, p.negative_prompt, image_seed, p.steps, p.cfg_scale, p.sampler_name,
                                 p.width, p.height, getattr(model, "sd_model_hash", None))
                image = Image.new("RGB", (int(p.width), int(p.height)), colour)
                image.info["parameters"] = _infotext(p, image_seed, model)
                images.append(image)
                if not p.do_not_save_samples and p.outpath_samples:
                    os.makedirs(p.outpath_samples, exist_ok=True)
                    image.save(os.path.join(p.outpath_samples, f"{len(os.listdir(p.outpath_samples)):05}-"
                                                               f"{image_seed}.png"))
            shared.state.sampling_step = p.steps
        shared.state.current_image = images[-1] if images else None
        return Processed(p, images, seed, _infotext(p, seed, model))
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored.items():
                shared.opts.data[k] = v
                if k == "sd_model_checkpoint" and v is not None:
                    sd_models.reload_model_weights()

