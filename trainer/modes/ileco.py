"""iLECO ("instant LECO"): erase or replace a concept with two UNet calls per step.

On one fixed random latent at random timesteps, the LoRA'd prediction for the Original Prompt is regressed onto
the frozen prediction for the Target Prompt (empty target = erase):  ε_LoRA(x, t, c_orig) → ε_base(x, t, c_target).
With BASE selected (or `network_train_text_encoder` ticked, which iLECO's panel shows) the original prompt is
encoded every step through the text-encoder LoRA, so that LoRA trains too (upstream encoded it once and saved
all-zero text-encoder modules, and never read the checkbox). `network_resume` is not used (as upstream).
"""

from __future__ import annotations

import functools
import logging

import torch

from ..engine.types import StepOutput
from ..errors import UserError
from ..networks.blocks import BASE, BLOCK_IDS
from . import common, quality
from .base import Mode, Pass

log = logging.getLogger(__name__)
UNRELATED_PROMPTS = ("a photo of a dog", "a mountain landscape at sunset", "a bowl of fruit on a wooden table")


class ILECOMode(Mode):
    name = "iLECO"

    def __init__(self, job):
        super().__init__(job)
        self.height, self.width = job.settings.image_size  # as given: upstream sorted them (H,W order was lost)
        self.resolution = (self.height, self.width)

    def blocks(self) -> tuple[str, ...]:
        s = self.job.settings
        chosen = set(s.network_blocks) | ({BASE} if s.network_train_text_encoder else set())
        return tuple(b for b in BLOCK_IDS if b in chosen)

    def passes(self) -> list[Pass]:
        return [Pass(settings=self.job.settings, blocks=self.blocks())]

    def check_inputs(self, lora_dir) -> None:
        if not self.job.original_prompt.strip():
            raise UserError("iLECO needs an Original Prompt (the concept to erase or replace)")
        if self.job.settings.network_resume:
            log.warning("network_resume is not used in iLECO (as upstream)")

    def prepare(self, ctx) -> None:
        s = ctx.settings
        prompt = functools.partial(common.encode_prompt, ctx, trains_text_encoder=self.trains_text_encoder)
        self.orig = prompt([self.job.original_prompt])
        self.targ = prompt([self.job.target_prompt])
        shape = (s.train_batch_size, 4, self.height // 8, self.width // 8)
        self.latents = torch.randn(shape, generator=ctx.generator, device=ctx.device).to(ctx.model_dtype)
        self.unrelated = [prompt([p]) for p in UNRELATED_PROMPTS]
        self.empty = prompt([""])
        common.free_vae_and_text(ctx, keep_text=self.trains_text_encoder)

    def step(self, ctx, index: int) -> StepOutput:
        t = ctx.timesteps(self.latents.shape[0])
        size = (self.height, self.width)
        with torch.no_grad(), ctx.network.at(0.0):
            target = common.predict(ctx, self.latents, t, *self.targ, size)
        with ctx.network.at(1.0):
            orig = common.encode(ctx, [self.job.original_prompt], grad=True) if self.trains_text_encoder else self.orig
            pred = common.predict(ctx, self.latents, t, *orig, size)
        return StepOutput(pred, target, t)

    def eval_outputs(self, ctx, generator, t_values: list[int]) -> list[StepOutput]:
        """The evaluation loss's batch (engine/evaluation.py): a training step's regression on its own fixed latents
        (iLECO trains on one random latent per batch row; the first quality.EVAL_SAMPLES of them), each at every
        timestep, in one batch. The quality report measures held-out latents; this measures the fit."""
        size = (self.height, self.width)
        index, t = quality.timestep_rows(t_values, min(quality.EVAL_SAMPLES, self.latents.shape[0]), ctx.device)
        x = self.latents[index]
        with ctx.network.at(0.0):
            target = common.predict(ctx, x, t, *self.targ, size)
        with ctx.network.at(1.0):
            pred = common.predict(ctx, x, t, *self.cond_at(ctx, "original", 1.0), size)
        return [StepOutput(pred, target, t)]

    def cond_at(self, ctx, which, multiplier: float):
        """Conditioning of a report prompt as the LoRA'd model at `multiplier` sees it."""
        prompts = {"original": self.job.original_prompt, "target": self.job.target_prompt, "empty": ""}
        cached = {"original": self.orig, "target": self.targ, "empty": self.empty}
        if isinstance(which, int):
            prompts, cached = {which: UNRELATED_PROMPTS[which]}, {which: self.unrelated[which]}
        if not self.trains_text_encoder or multiplier == 0:
            return cached[which]
        with ctx.network.at(multiplier):
            return common.encode(ctx, [prompts[which]])

    def quality_report(self, ctx) -> dict:
        return quality.ileco_report(ctx, self, len(UNRELATED_PROMPTS), (self.height, self.width),
                                    erase=not self.job.target_prompt.strip(), unrelated_prompts=UNRELATED_PROMPTS)
