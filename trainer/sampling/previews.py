"""The sample-preview hook: every `sample_every_n_steps` steps of the job's last training pass (and after its last
step) one grid — a row per prompt, a column per LoRA multiplier — rendered between steps, outside the step time.

Nothing it does changes the training: it renders under no_grad with its own generators, sets the network's
multiplier only for the render (restored after), and keeps the VAE on the CPU except while decoding. The prompts are
encoded before the text encoders are freed, or at each render when the text-encoder LoRA trains, so that LoRA is seen
at each multiplier. Networks an earlier pass keeps on (Difference's copier) are held at 0 while rendering: a preview
shows the saved LoRA on the base model, as a generation with it would.

Where the host generates images itself (the A1111 webui, when the job trains on the model it holds), the previews are
its own txt2img of `<prompt> <lora:…:m>` on the network saved as it is now (host/webui_generate.WebuiPreviews).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path

import torch

from ..data.images import ImageFile, caption_for, find_images
from ..engine.hooks import StepHook
from ..engine.saving import save_lora
from ..errors import UserError
from ..modes import common, pairs
from ..settings import BY_KEY
from . import render
from .samplers import sampler
from .grid import grid, write_grid

log = logging.getLogger(__name__)

# the multipliers a mode's previews sweep when sample_multipliers is empty: a slider from −1 to 1, an erasure
# without (0) and with (1) the LoRA
DEFAULT_MULTIPLIERS = {
    "LoRA": (1.0,),
    "iLECO": (0.0, 1.0),
    "Difference": (-1.0, 0.0, 1.0),
    "ADDifT": (-1.0, 0.0, 1.0),
    "Multi-ADDifT": (-1.0, 0.0, 1.0),
}
CAPTION_MODES = ("LoRA", "Multi-ADDifT")  # trained on captioned images; the other modes on their own prompts


def sample_points(iterations: int, every: int) -> set[int]:
    """The steps that get a grid: every N-th, and always the last (every = 0: only the last).

    sample_points(25, 10) == {10, 20, 25}; sample_points(20, 10) == {10, 20}; sample_points(20, 0) == {20}"""
    return (set(range(every, iterations + 1, every)) if every > 0 else set()) | {iterations}


def sample_prompts(job) -> list[str]:
    """sample_prompts, one per line; empty: the first training caption (LoRA, Multi-ADDifT), else the job's
    Original and Target Prompts (distinct, non-empty; the empty prompt when both are empty)."""
    s = job.settings
    lines = [line.strip() for line in s.sample_prompts.splitlines() if line.strip()]
    if lines:
        return lines
    if job.mode in CAPTION_MODES:
        return [first_caption(s, job.mode)]
    prompts = [p.strip() for p in (job.original_prompt, job.target_prompt) if p.strip()]
    return list(dict.fromkeys(prompts)) or [""]


def first_caption(s, mode: str) -> str:
    """The caption (with the trigger word) of the first training image, as the mode reads it."""
    if mode == "Multi-ADDifT":
        first = ImageFile(pairs.find_pairs(s.lora_data_directory, s.diff_target_name)[0][0])
    else:
        first = find_images(s.lora_data_directory)[0]
    return caption_for(first, s.lora_trigger_word, s.image_use_filename_as_tag)


def sample_size(job, resolution: int) -> tuple[int, int]:
    """(height, width): sample_size, else image_size where the mode trains at it, else the model's resolution."""
    s = job.settings
    if s.sample_size:
        return s.sample_size
    return s.image_size if BY_KEY["image_size"].shown_in(job.mode) else (resolution, resolution)


@contextlib.contextmanager
def rendering(network, held):
    """The network in eval mode and every held network at multiplier 0, for the block; restored after."""
    was_training = network.training
    network.eval()
    try:
        with contextlib.ExitStack() as stack:
            for other in held:
                stack.enter_context(other.at(0.0))
            yield
    finally:
        network.train(was_training)


class Previews(StepHook):
    def __init__(self, job, mode, output, renderer=None):
        """`renderer`: the host's own generation (Host.preview_renderer), or None: rendered here."""
        s = job.settings
        self.job, self.mode, self.output, self.renderer = job, mode, output, renderer
        self.needs_vae = renderer is None  # the modes keep the VAE after caching the latents
        self.prompts = sample_prompts(job)
        self.multipliers = tuple(s.sample_multipliers) or DEFAULT_MULTIPLIERS[job.mode]
        self.size_px = None  # (height, width), once the model's resolution is known
        self.cached = None  # [(hidden, pooled) per prompt, then the negative ""]
        self.held = []  # networks of earlier passes kept on under this one
        self.active = False  # in the pass that gets previews; its output name, folder and sample points:
        self.name, self.folder, self.overwrite = output.name, None, output.overwrite
        self.points: set[int] = set()
        self.paths: list[Path] = []

    # -- the hook --------------------------------------------------------------------------------------------------
    def before_prepare(self, ctx) -> None:
        self.size_px = sample_size(self.job, ctx.components.resolution)
        if self.renderer is None:
            self.cached = self._split(*common.encode_prompt(ctx, [*self.prompts, ""], self.mode.trains_text_encoder))

    def begin_pass(self, ctx, p, last: bool) -> None:
        if self.renderer is None:
            ctx.components.vae.to("cpu")  # kept for the previews only: on the device only while decoding
        if p.keep:
            self.held.append(ctx.network)
        self.active = last and p.train
        if not self.active:
            return
        self.name = f"{self.output.name}{p.suffix}"
        self.folder = Path(self.output.directory) / f"{self.name}_samples"
        self.overwrite = p.settings.save_overwrite
        self.points = sample_points(p.settings.train_iterations, self.job.settings.sample_every_n_steps)
        taken = sorted(path for path in map(self.path, self.points) if path.exists())
        if taken and not self.overwrite:
            raise UserError(f"{taken[0]} already exists; tick save_overwrite or choose another save_lora_name")

    def after_step(self, ctx, step: int) -> dict:
        if not self.active or step not in self.points:
            return {}
        path = self.write(ctx, step)
        if path is None:
            return {}
        self.paths.append(path)
        return {"samples": [str(path)]}

    def end_pass(self, ctx, p, steps: int, finished: bool) -> dict:
        """The grids of the pass; the last step's grid is already among them when the pass finished."""
        if not self.active:
            return {}
        self.active = False
        if not self.paths:
            return {}
        return {"samples": [str(path) for path in self.paths],
                "message": f"Sample previews: {self.folder} ({len(self.paths)} grids)"}

    # -- rendering -------------------------------------------------------------------------------------------------
    def path(self, step: int) -> Path:
        return self.folder / f"{self.name}_{step:06d}.png"

    def seed(self, ctx) -> int:
        seed = self.job.settings.sample_seed
        return seed if seed >= 0 else ctx.seed

    def write(self, ctx, step: int) -> Path | None:
        s = self.job.settings
        info = {"prompts": self.prompts, "step": step, "multipliers": list(self.multipliers),
                "sampler": s.sample_sampler, "steps": s.sample_steps, "cfg": s.sample_cfg, "seed": self.seed(ctx),
                "size": list(self.size_px), "lora": self.name,
                "rendered_by": "trainer" if self.renderer is None else "webui txt2img"}
        rows = self.images(ctx) if self.renderer is None else self.host_images(ctx, step)
        if rows is None:
            return None
        path = write_grid(self.path(step), grid(rows), info, self.overwrite)
        log.info("sample preview: %s", path)
        return path

    def host_images(self, ctx, step: int) -> list[list] | None:
        """rows[prompt][multiplier] as the host's generations of the network saved as it is now (None: the host's
        Interrupt stopped them). The network goes to the host as a temporary file saved the way the LoRA is."""
        s = self.job.settings

        def save(folder, name) -> Path:
            output = dataclasses.replace(self.output, directory=Path(folder), name=name, suffix="", overwrite=True)
            return save_lora(ctx, output, None, step, time.time())

        return self.renderer.render(save, self.prompts, list(self.multipliers), sampler=s.sample_sampler,
                                    steps=s.sample_steps, cfg=s.sample_cfg, seed=self.seed(ctx),
                                    size_px=tuple(self.size_px), step=step)

    def images(self, ctx) -> list[list]:
        """rows[prompt][multiplier] of the network as it is now (PIL images)."""
        s, c = self.job.settings, ctx.components
        seed = self.seed(ctx)
        scheduler = sampler(s.sample_sampler, c.noise_scheduler, c.is_v_prediction)
        noise = render.initial_noise(render.latent_shape(c.vae, self.size_px), seed)  # one x_T for every cell
        latents = [[None] * len(self.multipliers) for _ in self.prompts]
        with torch.no_grad(), rendering(ctx.network, self.held):
            for col, multiplier in enumerate(self.multipliers):
                with ctx.network.at(multiplier):
                    *conds, uncond = self._conditionings(ctx)
                    for row, cond in enumerate(conds):
                        latents[row][col] = render.denoise(ctx, scheduler, noise, s.sample_steps, s.sample_cfg,
                                                           cond, uncond, self.size_px, seed)
        c.vae.to(ctx.device)
        try:
            return [[render.decode(c.vae, x, c.family) for x in row] for row in latents]
        finally:
            c.vae.to("cpu")

    def _conditionings(self, ctx) -> list[tuple]:
        """(hidden, pooled) per prompt and for the negative "": through the text-encoder LoRA at its current
        multiplier while it trains, else as encoded before the text encoders were freed."""
        if self.mode.trains_text_encoder and ctx.components.text_encoders:
            return self._split(*common.encode(ctx, [*self.prompts, ""]))
        return self.cached

    @staticmethod
    def _split(hidden, pooled) -> list[tuple]:
        return [(hidden[i:i + 1], pooled[i:i + 1] if pooled is not None else None) for i in range(hidden.shape[0])]
