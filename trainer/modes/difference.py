"""Difference: pass 1 trains a "copy machine" LoRA that reproduces the Original Image; pass 2 trains a new LoRA
on the Target Image with the copier held on, so it learns only what differs (target minus the copier's original).

Fixed here (upstream defects): `diff_load_1st_pass` really loads the copier; `diff_1st_pass_only` saves it;
the saved pass-2 file's metadata describes pass 2; the 2nd-pass column is used when `use_2nd_pass_settings`.
Pass 1 continues `network_resume` when it is set (as upstream creates network 1 from it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..engine import diffusion
from ..engine.types import StepOutput
from ..errors import UserError
from ..settings import BY_KEY, SECOND_PASS_KEYS
from . import common, pairs, quality
from .base import Mode, Pass

log = logging.getLogger(__name__)


def second_pass_settings(job):
    """Pass-2 settings: the 2nd-pass column's values for the settings shown there, pass 1's for the rest."""
    second = job.second_pass
    if second is None or not (second.use_2nd_pass_settings or job.settings.use_2nd_pass_settings):
        return job.settings
    return job.settings.replace(**{key: second.raw[BY_KEY[key].name] for key in SECOND_PASS_KEYS})


def find_copier(name: str, lora_dir: Path) -> Path:
    """A full path, or a file name searched for (recursively) in the LoRA folder; `.safetensors` optional."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    file_name = name if name.endswith(".safetensors") else f"{name}.safetensors"
    found = sorted(Path(lora_dir).rglob(file_name)) if Path(lora_dir).is_dir() else []
    if not found:
        raise UserError(f"diff_load_1st_pass: {name} is neither a file nor a LoRA in {lora_dir}")
    return found[0]


class DifferenceMode(Mode):
    name = "Difference"

    def __init__(self, job):
        super().__init__(job)
        self.phase = 1
        self.copier = ""  # a saved copier to load instead of training pass 1
        self.copy_fit_value = None

    def check_inputs(self, lora_dir) -> None:
        pairs.open_pair(self.job.original_image, self.job.target_image, self.name)
        s = self.job.settings
        if s.diff_load_1st_pass and s.diff_1st_pass_only:
            raise UserError("diff_1st_pass_only with diff_load_1st_pass would train nothing; untick one")
        if s.diff_load_1st_pass:
            self.copier = str(find_copier(s.diff_load_1st_pass, lora_dir))

    def passes(self) -> list[Pass]:
        s = self.job.settings
        if self.copier:
            first = Pass(settings=s, blocks=self.blocks(), resume=self.copier, train=False, suffix="_copy",
                         save=False, keep=True)
        else:
            first = Pass(settings=s, blocks=self.blocks(), resume=s.network_resume, suffix="_copy",
                         save=s.diff_save_1st_pass or s.diff_1st_pass_only, keep=not s.diff_1st_pass_only)
        if s.diff_1st_pass_only:
            return [first]
        second = second_pass_settings(self.job)
        own_seed = second is not s and second.train_seed >= 0
        return [first, Pass(settings=second, blocks=tuple(second.network_blocks), reseed=True,
                            seed=second.train_seed if own_seed else None, number=2)]

    def begin_pass(self, ctx, p: Pass) -> None:
        self.phase = p.number
        # pass 2 trains the text encoder only if it is still there (prepare frees it unless pass 1 trains it)
        self.trains_text_encoder = p.trains_text_encoder and bool(ctx.components.text_encoders)

    def end_pass(self, ctx, p: Pass) -> None:
        if p.number == 1:
            self.copy_fit_value = self.copy_fit(ctx)
            log.info("pass 1: copy fit %.3f (held-out; < 1 means the copier reproduces the original)",
                     self.copy_fit_value)

    def prepare(self, ctx) -> None:
        images = pairs.open_pair(self.job.original_image, self.job.target_image, self.name)
        self.original, self.target = pairs.pair_latents(ctx, images)
        self.size_px = (images[0].size[1], images[0].size[0])
        self.resolution = self.size_px
        # upstream conditions on the (usually empty) Original Prompt with the Target Prompt's pooled vector
        self.prompts = common.Prompts(ctx, {"original": self.job.original_prompt, "target": self.job.target_prompt},
                                      self.trains_text_encoder)
        common.free_vae_and_text(ctx, keep_text=self.trains_text_encoder)

    def cond(self, ctx, grad=True):
        hidden, _ = self.prompts.get(ctx, "original", grad)
        _, pooled = self.prompts.get(ctx, "target", grad)
        return hidden, pooled

    def step(self, ctx, index: int) -> StepOutput:
        latent = self.original if self.phase == 1 else self.target
        latents = latent.expand(ctx.settings.train_batch_size, *latent.shape[1:])
        noise = ctx.noise_like(latents)
        t = ctx.timesteps(latents.shape[0])
        noisy = diffusion.add_noise(latents, noise, t, ctx.alpha_bar)
        pred = common.predict(ctx, noisy, t, *self.cond(ctx), self.size_px)
        return StepOutput(pred, ctx.diffusion_target(latents, noise, t), t)

    def eval_outputs(self, ctx, generator, t_values: list[int]) -> list[StepOutput]:
        """The evaluation loss's batch (engine/evaluation.py): the pass's image (pass 1: original, pass 2: target)
        denoised at every timestep under `generator`'s noise, as a training step does, in one batch."""
        latent = self.original if self.phase == 1 else self.target
        index, t = quality.timestep_rows(t_values, latent.shape[0], ctx.device)
        latents = latent[index]
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents)
        pred = common.predict(ctx, diffusion.add_noise(latents, noise, t, ctx.alpha_bar), t,
                              *self.cond(ctx, grad=False), self.size_px)
        return [StepOutput(pred, ctx.diffusion_target(latents, noise, t), t)]

    @torch.no_grad()
    def copy_fit(self, ctx) -> float:
        """‖ε_copier(x_t(O)) − target‖² / ‖ε₀(x_t(O)) − target‖² on held-out noise: < 1 = it reproduces O."""
        g = torch.Generator().manual_seed(ctx.seed + quality.REPORT_SEED_OFFSET)
        num = den = 0.0
        cond = self.cond(ctx, grad=False)
        for t_value in quality.eval_timesteps(ctx.settings.train_min_timesteps, ctx.settings.train_max_timesteps):
            noise = torch.randn(self.original.shape, generator=g).to(self.original)
            t = torch.full((1,), t_value, device=ctx.device)
            noisy = diffusion.add_noise(self.original, noise, t, ctx.alpha_bar)
            target = ctx.diffusion_target(self.original, noise, t).float()
            with ctx.network.at(1.0):
                num += float((common.predict(ctx, noisy, t, *cond, self.size_px).float() - target).pow(2).mean())
            with ctx.network.at(0.0):
                den += float((common.predict(ctx, noisy, t, *cond, self.size_px).float() - target).pow(2).mean())
        return num / max(den, 1e-12)

    def quality_report(self, ctx) -> dict | None:
        if self.phase == 1:
            return None
        cond = self.cond(ctx, grad=False)
        return quality.pair_report(ctx, self.original, self.target, cond, cond, 1.0, self.size_px, self.name,
                                   extra={"copy_fit": self.copy_fit_value}, fit="denoise")
