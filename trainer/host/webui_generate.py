"""The iLECO Generate buttons in the webui: a txt2img of the tab's prompts with the txt2img tab's current settings
(traintrain-behaviour.md §2, §4.4; webui-api.md A12). With host/webui.py, the only modules that import `modules`.

The txt2img tab's settings live only in its page (A12), so javascript/traintrain.js reads them by their labels when a
Generate button is pressed and sends them along; what the page did not give comes from the webui's saved txt2img
defaults (ui-config.json, A11), then from FALLBACK.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random

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
