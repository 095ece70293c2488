"""The webui's txt2img for the tab: the iLECO Generate buttons (the tab's prompts with the txt2img tab's current
settings; traintrain-behaviour.md §2, §4.4; webui-api.md A12) and the sample previews of a job training on the
webui's model (WebuiPreviews). With host/webui.py, the only modules that import `modules`.

The txt2img tab's settings live only in its page (A12), so javascript/traintrain.js reads them by their labels when a
Generate button is pressed and sends them along; what the page did not give comes from the webui's saved txt2img
defaults (ui-config.json, A11), then from FALLBACK.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import re

from modules import shared  # noqa: the webui is present whenever this module is imported

from ..errors import UserError

log = logging.getLogger(__name__)

# txt2img label (as in ui-config.json's "txt2img/<label>/value") → processing field, type
LABELS = {
    "Sampling method": ("sampler_name", str),
    "Schedule type": ("scheduler", str),
    "Sampling steps": ("steps", int),
    "CFG Scale": ("cfg_scale", float),
    "Width": ("width", int),
    "Height": ("height", int),
    "Seed": ("seed", int),
}
FALLBACK = {"sampler_name": "Euler", "steps": 20, "cfg_scale": 7.0, "width": 512, "height": 512, "seed": -1}


def saved_txt2img_defaults() -> dict:
    """The txt2img values the webui restores at start (its ui-config.json), by label."""
    from modules import paths_internal

    path = getattr(shared.cmd_opts, "ui_config_file", None) or os.path.join(paths_internal.data_path,
                                                                            "ui-config.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {label: data[f"txt2img/{label}/value"] for label in LABELS if f"txt2img/{label}/value" in data}


def txt2img_fields(page_json: str) -> dict:
    """processing fields from the page's values (JSON, by label), over the saved defaults, over FALLBACK."""
    try:
        page = json.loads(page_json) if page_json else {}
    except ValueError:
        page = {}
    values = {**saved_txt2img_defaults(), **(page if isinstance(page, dict) else {})}
    fields = dict(FALLBACK)
    for label, (field, kind) in LABELS.items():
        if values.get(label) in (None, ""):
            continue
        try:
            fields[field] = kind(float(values[label])) if kind is int else kind(values[label])
        except (TypeError, ValueError):
            log.info("txt2img %s %r not understood; using %r", label, values[label], fields.get(field))
    if int(fields["seed"]) < 0:
        fields["seed"] = random.randrange(2**32)
    return fields


def generate(prompts: list[str], negative: str, page_json: str) -> tuple[list, str]:
    """(images, infotext): one txt2img per prompt, all with the same settings and seed ("Generate All" renders
    Original then Target with one seed)."""
    from modules import call_queue, processing

    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise UserError("type a prompt first (Original Prompt / Target Prompt)")
    fields = txt2img_fields(page_json)
    known = {f.name for f in dataclasses.fields(processing.StableDiffusionProcessingTxt2Img)}
    fields = {k: v for k, v in fields.items() if k in known}  # `scheduler` exists from webui 1.9 on
    opts = shared.opts
    images, infos = [], []
    with call_queue.queue_lock:  # as txt2img does: never at the same time as a training job or a generation
        for prompt in prompts:
            p = processing.StableDiffusionProcessingTxt2Img(
                sd_model=shared.sd_model, prompt=prompt, negative_prompt=negative or "", batch_size=1, n_iter=1,
                outpath_samples=opts.data.get("outdir_samples") or opts.data.get("outdir_txt2img_samples"),
                outpath_grids=opts.data.get("outdir_grids") or opts.data.get("outdir_txt2img_grids"),
                do_not_save_grid=True, **fields)
            try:
                processed = processing.process_images(p)
            finally:
                p.close()
            images += list(processed.images)
            infos.append(processed.info)
    return images, "\n".join(str(i) for i in infos)


# -- sample previews through the webui's txt2img (issue 16) ----------------------------------------------------------
SAMPLER_NAMES = {"euler": "Euler", "ddim": "DDIM"}  # sample_sampler → the webui's sampler of the same method
PREVIEW_FOLDER = ".traintrain-previews"  # under the LoRA folder, while a preview renders; empty and removed after
STATE_FIELDS = ("job", "job_count", "job_no", "sampling_step", "sampling_steps", "textinfo")


def lora_prompt(prompt: str, name: str, multiplier: float) -> str:
    """The prompt of one preview cell: the network as `<lora:NAME:m>` (webui-api.md A9: both multipliers m);
    multiplier 0 is the prompt alone, the base model. lora_prompt("a cat", "p", 0.5) == "a cat <lora:p:0.5>"."""
    return f"{prompt} <lora:{name}:{multiplier:g}>".strip() if multiplier else prompt


class WebuiPreviews:
    """Renders a job's sample previews as webui generations: the network as it is now is written to a temporary
    LoRA file in the webui's Lora folder, each cell is a txt2img of the prompt with `<lora:that file:m>`, and the
    webui's base weights are restored afterwards (the Lora extension merges a LoRA into them in place, and the job
    trains on those very tensors). The job holds the queue lock already; `shared.state` is given back as it was, so
    the progress bar goes on showing the training."""

    def __init__(self, lora_dir, networks):
        self.folder = os.path.join(str(lora_dir), PREVIEW_FOLDER)
        self.networks = networks  # the Lora extension's `networks` module (webui-api.md A9)
        self.count = 0
        remove_left_previews(self.folder)

    @staticmethod
    def file_name(pid: int, count: int) -> str:
        return f"traintrain-preview-{pid}-{count}"

    def render(self, save, prompts: list[str], multipliers, *, sampler: str, steps: int, cfg: float, seed: int,
               size_px: tuple[int, int], step: int):
        """rows[prompt][multiplier] of PIL images, or None when the webui's Interrupt stopped the render.
        `save(folder, name)` writes the network as a LoRA file and returns its path."""
        from modules import processing

        from .held_model import restore_base_weights

        self.count += 1
        name = self.file_name(os.getpid(), self.count)  # new each time: the webui caches networks by name
        path = save(self.folder, name)
        state, kept = shared.state, {k: getattr(shared.state, k, None) for k in STATE_FIELDS}
        skipped = bool(getattr(state, "skipped", False))
        try:
            self.networks.list_available_networks()
            state.textinfo = f"TrainTrain: sample preview at step {step}"
            known = {f.name for f in dataclasses.fields(processing.StableDiffusionProcessingTxt2Img)}
            fields = {"sampler_name": SAMPLER_NAMES[sampler], "scheduler": "Automatic", "steps": steps,
                      "cfg_scale": cfg, "seed": seed, "width": size_px[1], "height": size_px[0]}
            rows = []
            for prompt in prompts:
                row = []
                for multiplier in multipliers:
                    p = processing.StableDiffusionProcessingTxt2Img(
                        sd_model=shared.sd_model, prompt=lora_prompt(prompt, name, multiplier), negative_prompt="",
                        batch_size=1, n_iter=1, do_not_save_samples=True, do_not_save_grid=True,
                        **{k: v for k, v in fields.items() if k in known})
                    try:
                        images = processing.process_images(p).images
                    finally:
                        p.close()
                    if state.interrupted or not images:
                        return None
                    row.append(images[0].convert("RGB"))
                rows.append(row)
            return rows
        finally:
            for key, value in kept.items():
                setattr(state, key, value)
            state.skipped = skipped or bool(getattr(state, "skipped", False))  # a Skip pressed meanwhile counts
            with contextlib.suppress(OSError):
                os.remove(path)
                os.rmdir(self.folder)
            self.networks.list_available_networks()
            self.networks.loaded_networks.clear()  # nothing may merge into the weights the job trains
            restore_base_weights(shared.sd_model, self.networks)


def remove_left_previews(folder: str) -> list[str]:
    """Preview files a killed webui left (their pid is gone), so the Lora list does not keep showing them."""
    from ..fileio import pid_alive, remove_stale_temps

    if os.path.isdir(folder):
        remove_stale_temps(folder)  # a half-written one
    removed = []
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        match = re.fullmatch(r"traintrain-preview-(\d+)-\d+\.safetensors", entry)
        if match and not pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, entry))
                removed.append(entry)
    with contextlib.suppress(OSError):
        os.rmdir(folder)  # only when empty
    return removed
