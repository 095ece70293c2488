"""What runs beside the training steps without being one: sample previews, the evaluation loss. A hook sees the
job's life in order — before the mode caches its data, each pass, its first step, each step, the end of each pass — and
never changes the maths of a step: whatever random numbers it needs come from its own generators.

The runner builds the hooks of a job (runner.job_hooks) and calls every one; the engine calls `after_step`.
"""

from __future__ import annotations


class StepHook:
    """No-op defaults; a hook overrides what it needs."""

    def before_prepare(self, ctx) -> None:
        """Before mode.prepare: the VAE and text encoders are still loaded (encode what later needs them)."""

    def begin_pass(self, ctx, p, last: bool) -> None:
        """The pass's network is attached (ctx.network); `last`: the job's last pass (Difference has two)."""

    def start(self, ctx, step: int) -> None:
        """The engine is about to train step `step` + 1: the network is as it starts (a resumed state restored)."""

    def after_step(self, ctx, step: int) -> dict:
        """After optimizer step `step` (1-based) of the pass; returns values for the step's event, or {}. Numbers
        named in jobs.logs.EXTRA_COLUMNS ("eval_loss") also go into the CSV row; others (a preview's paths:
        "samples") only into the event."""
        return {}

    def end_pass(self, ctx, p, steps: int, finished: bool) -> dict:
        """After the pass's last step (`finished`: all its steps ran), before its final save. Returns {} or values
        for the job's Result: "message" (a line added to the job's message) and anything else into Result.extras
        ({"samples": [paths]})."""
        return {}


def keeps_vae(hooks) -> bool:
    """Whether a hook needs the VAE after the data is cached (previews decode with it)."""
    return any(getattr(h, "needs_vae", False) for h in hooks)
