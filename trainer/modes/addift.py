"""ADDifT: a slider LoRA from one pair. Shared noise on both images; on even steps the LoRA at +0.25 on the
noisy target must give the frozen model's prediction for the noisy original; odd steps train the mirror at
−0.25·|diff_alt_ratio| (or, with a negative ratio, keep pure noise unchanged). Because training runs at 0.25, the
saved LoRA at weight 1 applies four times the trained delta.

Timesteps: upstream's stratified values by default — for min/max 500/1000 the sequence is 550, 650, 750, 850, 950,
each used twice (the presets were tuned on it); `diff_random_timesteps_in_span` draws inside each tenth instead.
"""

from __future__ import annotations

import logging

import torch

from ..engine import diffusion
from ..engine.types import StepOutput
from ..networks.blocks import BASE
from . import common, pairs, quality
from .base import Mode, Pass

log = logging.getLogger(__name__)
TRAIN_MULTIPLIER = 0.25


def addift_timestep(step: int, t_min: int, t_max: int, random_in_span: bool, generator: torch.Generator) -> int:
    """Step n's timestep: slice n % 10 + 1 of ten (even steps; odd steps share their even step's slice).

    Deterministic (upstream): the slice's lower edge, so 500/1000 gives 550, 550, 650, 650, …, 950, 950, 550, …
    """
    even = step - step % 2
    span = (t_max - t_min) / 10
    index = even % 10 + 1
    low = min(int(t_min + span * index), 999)
    if not random_in_span:
        return low
    high = min(int(t_min + span * (index + 1)), 1000)
    return int(torch.randint(low, max(high, low + 1), (1,), generator=generator, device=generator.device))


def addift_step(ctx, step: int, original, target, cond_original, cond_target, size_px, mask=None,
                prompts=None) -> StepOutput:
    """One ADDifT step on a batch of pairs (latents (B, 4, h, w)); `cond_*` are (hidden, pooled) or callables, of
    this process's share of the batch."""
    s = ctx.settings
    turn = step % 2 == 0
    t_value = addift_timestep(step, s.train_min_timesteps, s.train_max_timesteps, s.diff_random_timesteps_in_span,
                              ctx.generator)
    noise = ctx.noise_like(original)
    # a data-parallel run draws the noise of the whole batch and keeps this process's share (engine/distributed.py)
    original, target, noise = ctx.world.share(original), ctx.world.share(target), ctx.world.share(noise)
    mask = ctx.world.share(mask) if mask is not None else None
    t = torch.full((original.shape[0],), t_value, device=ctx.device)
    if s.diff_alt_ratio < 0 and not turn:
        original = target = noise  # null step: on pure noise the negative LoRA must change nothing
    a, b = (original, target) if turn else (target, original)
    cond_a, cond_b = (cond_original, cond_target) if turn else (cond_target, cond_original)
    x_a = diffusion.add_noise(a, noise, t, ctx.alpha_bar)
    x_b = diffusion.add_noise(b, noise, t, ctx.alpha_bar)
    with torch.no_grad(), ctx.network.at(0.0):
        reference = common.predict(ctx, x_a, t, *_resolve(ctx, cond_a, False), size_px)
    multiplier = TRAIN_MULTIPLIER if turn else -TRAIN_MULTIPLIER * abs(s.diff_alt_ratio)
    with ctx.network.at(multiplier):
        pred = common.predict(ctx, x_b, t, *_resolve(ctx, cond_b, True), size_px)
    return StepOutput(pred, reference, t, mask if s.diff_use_diff_mask else None)


def addift_eval(ctx, generator, t_values: list[int], original, target, cond_original, cond_target, size_px,
                mask=None) -> StepOutput:
    """The evaluation loss's batch (engine/evaluation.py): the forward relation of a training step — the LoRA'd
    model on the noised target should predict what the base model predicts on the original under the same noise —
    for each pair (rows of `original`/`target`) at every timestep, with `generator`'s noise, in one batch."""
    index, t = quality.timestep_rows(t_values, original.shape[0], ctx.device)
    original, target = original[index], target[index]
    noise = torch.randn(original.shape, generator=generator, device=generator.device).to(original)
    cond_original, cond_target = (_rows(_resolve(ctx, c, False), index) for c in (cond_original, cond_target))
    with ctx.network.at(0.0):
        reference = common.predict(ctx, diffusion.add_noise(original, noise, t, ctx.alpha_bar), t, *cond_original,
                                   size_px)
    with ctx.network.at(TRAIN_MULTIPLIER):
        pred = common.predict(ctx, diffusion.add_noise(target, noise, t, ctx.alpha_bar), t, *cond_target, size_px)
    return StepOutput(pred, reference, t, mask[index] if mask is not None and ctx.settings.diff_use_diff_mask else None)


def _rows(cond, index):
    """(hidden, pooled) of one row per pair, or one for all, picked for the evaluation rows."""
    return tuple(x if x is None or x.shape[0] == 1 else x[index] for x in cond)


def _resolve(ctx, cond, grad):
    return cond(ctx, grad) if callable(cond) else cond


class ADDifTMode(Mode):
    name = "ADDifT"

    def blocks(self) -> tuple[str, ...]:
        s = self.job.settings
        if BASE in s.network_blocks and not s.lora_trigger_word.strip():
            return tuple(b for b in s.network_blocks if b != BASE)
        return tuple(s.network_blocks)

    def passes(self) -> list[Pass]:
        s = self.job.settings  # upstream continues a diff_load_1st_pass file here too
        return [Pass(settings=s, blocks=self.blocks(), resume=s.diff_load_1st_pass or s.network_resume)]

    def check_inputs(self, lora_dir) -> None:
        pairs.open_pair(self.job.original_image, self.job.target_image, self.name)
        if BASE in self.job.settings.network_blocks and BASE not in self.blocks():
            log.info("ADDifT: BASE is not trained without a trigger word (as upstream)")

    def prepare(self, ctx) -> None:
        images = pairs.open_pair(self.job.original_image, self.job.target_image, self.name)
        self.mask = pairs.difference_mask(*images).to(ctx.device)[None]
        self.original, self.target = pairs.pair_latents(ctx, images)
        self.size_px = (images[0].size[1], images[0].size[0])
        self.resolution = self.size_px
        self.prompts = common.Prompts(ctx, {"original": self.job.original_prompt, "target": self.job.target_prompt},
                                      self.trains_text_encoder)
        if ctx.settings.diff_revert_original_target:
            self.original, self.target = self.target, self.original
            self.prompts.texts = {"original": self.job.target_prompt, "target": self.job.original_prompt}
            self.prompts.cached = {"original": self.prompts.cached["target"], "target": self.prompts.cached["original"]}
        common.free_vae_and_text(ctx, keep_text=self.trains_text_encoder)

    def _cond(self, key):
        def get(ctx, grad):
            hidden, _ = self.prompts.get(ctx, key, grad)
            _, pooled = self.prompts.get(ctx, "target", grad)  # upstream: the target prompt's pooled vector
            return hidden, pooled

        return get

    def step(self, ctx, index: int) -> StepOutput:
        batch = ctx.settings.train_batch_size
        expand = lambda x: x.expand(batch, *x.shape[1:])  # noqa: E731
        return addift_step(ctx, index, expand(self.original), expand(self.target), self._cond("original"),
                           self._cond("target"), self.size_px, expand(self.mask))

    def eval_outputs(self, ctx, generator, t_values: list[int]) -> list[StepOutput]:
        return [addift_eval(ctx, generator, t_values, self.original, self.target, self._cond("original"),
                            self._cond("target"), self.size_px, self.mask)]

    def quality_report(self, ctx) -> dict:
        return quality.pair_report(ctx, self.original, self.target, self._cond("original")(ctx, False),
                                   self._cond("target")(ctx, False), TRAIN_MULTIPLIER, self.size_px, self.name)
