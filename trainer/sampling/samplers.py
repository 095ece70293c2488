"""The preview samplers users can pick (settings' `sample_sampler` choices come from here): each a diffusers
scheduler, built on the training schedule and imported only when a preview renders."""

from __future__ import annotations

import inspect

from ..errors import UserError

SAMPLERS = {"euler": "EulerDiscreteScheduler", "ddim": "DDIMScheduler"}  # name users pick → diffusers class


def sampler(name: str, training_scheduler, is_v_prediction: bool):
    """A fresh inference scheduler with the training's betas and timesteps (and DDIM its clip_sample=False).
    "trailing" spacing starts at the last training timestep, so even a few steps begin from pure noise, as the
    model was trained to expect."""
    if name not in SAMPLERS:
        raise UserError(f"sample_sampler: unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    import diffusers

    cls = getattr(diffusers, SAMPLERS[name])
    known = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in training_scheduler.config.items() if k in known}
    return cls.from_config(config, prediction_type="v_prediction" if is_v_prediction else "epsilon",
                           timestep_spacing="trailing", steps_offset=0)
