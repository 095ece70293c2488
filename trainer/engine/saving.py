"""Saving the network as it is now: metadata from the pass's settings, kohya keys, the loader self-check."""

from __future__ import annotations

from pathlib import Path

from ..networks.compat import names_from_components
from ..networks.io import save_network
from ..networks.metadata import build_metadata
from .optim import is_schedule_free
from .types import Output, TrainContext, save_points


def last_good_file(output: Output, settings, steps_done: int) -> str:
    """What a failed or diverged run leaves: its latest periodic file (checked finite when written), if any."""
    done = [n for n in save_points(settings.train_iterations, settings.save_per_steps) if n <= steps_done]
    for n in sorted(done, reverse=True):
        if output.path(n).is_file():
            return f"the last good file is {output.path(n)}"
    return "no file was written"


def save_lora(ctx: TrainContext, output: Output, optimizer, steps_done: int, started_at: float,
              suffix_steps: int | None = None) -> Path:
    """Write `output.path(suffix_steps)`; schedule-free optimizers are switched to their averaged weights first."""
    s = ctx.settings
    schedule_free = is_schedule_free(optimizer)
    if schedule_free:
        optimizer.eval()
    try:
        path = output.path(suffix_steps)
        metadata = build_metadata(
            spec=ctx.network.spec, family=ctx.components.family, is_v_prediction=ctx.is_v_prediction,
            output_name=path.stem, settings={**s.raw, "train_seed": ctx.seed, "train_iterations": steps_done},
            resolution=output.resolution, model_name=output.model_name, tag_frequency=output.tag_frequency,
            started_at=started_at, mode=output.mode, num_processes=ctx.world.size,
        )
        metadata.update(output.extra_metadata)
        if ctx.names is None:
            ctx.names = names_from_components(ctx.components.family, ctx.components.unet,
                                              ctx.components.text_encoders)
        save_network(ctx.network, path, metadata=metadata, save_precision=s.save_precision,
                     strength=s.network_strength, overwrite=output.overwrite,
                     names=ctx.names)
    finally:
        if schedule_free:
            optimizer.train()
    return path
