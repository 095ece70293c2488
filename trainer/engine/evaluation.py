"""The evaluation loss (`eval_every_n_steps`): the mode's training objective on a fixed held-out set — the same
few cached images (or, for prompt modes, held-out latents and the job's prompts), the same noise, and fixed
timesteps spread over [train_min_timesteps, train_max_timesteps) — so it is comparable from step to step and run
to run, where the training loss jumps with each step's random timestep and noise.

It is the plain `train_loss_function` (no min-SNR or debiased weighting, which would change the scale between
runs), averaged over the timesteps. Its noise comes from a generator seeded afresh at each evaluation, never from the
training streams, so the same LoRA gives the same number every time, and evaluating changes no trained weight.
"""

from __future__ import annotations

import logging

import torch

from ..modes.quality import eval_timesteps
from .hooks import StepHook
from .loss import per_sample_loss

log = logging.getLogger(__name__)
EVAL_SEED_OFFSET = 2_000_003  # held-out noise: neither the training stream nor the quality report's


@torch.no_grad()
def evaluation_loss(ctx, mode) -> float:
    """The mean, over the fixed timesteps and the mode's evaluation batches, of the unweighted training loss."""
    s = ctx.settings
    generator = torch.Generator(ctx.device).manual_seed(ctx.seed + EVAL_SEED_OFFSET)
    with ctx.autocast():
        outputs = mode.eval_outputs(ctx, generator, eval_timesteps(s.train_min_timesteps, s.train_max_timesteps))
    values = [per_sample_loss(out.pred, out.target, s.train_loss_function, out.mask) for out in outputs]
    return float(torch.cat(values).mean())


class EvalLoss(StepHook):
    """Before the first step (the network as it starts: a new LoRA is the base model, a resumed one its state),
    every `eval_every_n_steps` steps and after the last one: the evaluation loss of the network now."""

    def __init__(self, job, mode):
        self.every = job.settings.eval_every_n_steps
        self.mode = mode
        self.initial: tuple[int, float] | None = None  # (steps done when training started, its loss)
        self.values: list[tuple[int, float]] = []

    def begin_pass(self, ctx, p, last: bool) -> None:
        self.values, self.initial = [], None

    def start(self, ctx, step: int) -> None:
        self.initial = (step, evaluation_loss(ctx, self.mode))

    def _measure(self, ctx, step: int) -> float:
        value = evaluation_loss(ctx, self.mode)
        self.values.append((step, value))
        return value

    def after_step(self, ctx, step: int) -> dict:
        return {"eval_loss": self._measure(ctx, step)} if step % self.every == 0 else {}

    def end_pass(self, ctx, p, steps: int, finished: bool) -> dict:
        if not p.train or self.initial is None or steps == self.initial[0]:
            return {}
        if not self.values or self.values[-1][0] != steps:
            self._measure(ctx, steps)
        last_step, last = self.values[-1]
        first_step, first = self.initial
        where = "the start" if first_step == 0 else f"step {first_step}, where it resumed"
        line = f"Evaluation loss: {last:.6f} at step {last_step} ({first:.6f} at {where})"
        log.info("%s", line)
        return {"eval_loss": last, "eval_start": first, "eval_history": list(self.values), "message": line}
