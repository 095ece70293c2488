"""One preview image from the components being trained: classifier-free guided denoising with a diffusers
scheduler built from the training schedule, then the VAE. Deterministic for a seed: the noise comes from a
generator of its own (never the training streams or torch's global one).

    ε̂ = ε(x, t, ∅) + cfg · (ε(x, t, c) − ε(x, t, ∅))          (Ho & Salimans, 2022)
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..modes.common import predict


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """x_T on the CPU from its own generator: the same preview on every device."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def guided(uncond: torch.Tensor, cond: torch.Tensor, cfg: float) -> torch.Tensor:
    return uncond + cfg * (cond - uncond)


@torch.no_grad()
def denoise(ctx, scheduler, noise: torch.Tensor, steps: int, cfg: float, cond, uncond, size_px: tuple[int, int],
            seed: int) -> torch.Tensor:
    """Latents (1, 4, h, w) from x_T `noise` in `steps` steps; `cond`/`uncond` are (hidden, pooled) of one prompt
    and of the negative one. Both halves of the guidance go through the UNet as one batch of two."""
    scheduler.set_timesteps(steps, device=ctx.device)
    generator = torch.Generator("cpu").manual_seed(seed)  # any noise a scheduler adds (churn, eta): never global
    hidden = torch.cat([uncond[0], cond[0]])
    pooled = torch.cat([uncond[1], cond[1]]) if cond[1] is not None else None
    latents = noise.to(ctx.device, torch.float32) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        with ctx.autocast():
            pred = predict(ctx, x, t, hidden, pooled, size_px).float()
        eps_uncond, eps_cond = pred.chunk(2)
        latents = scheduler.step(guided(eps_uncond, eps_cond, cfg), t, latents, generator=generator).prev_sample
    return latents


@torch.no_grad()
def decode(vae, latents: torch.Tensor, family) -> Image.Image:
    """Latents (1, 4, h, w) → an RGB image, undoing the scale and shift the training latents were cached with."""
    param = next(vae.parameters())
    pixels = vae.decode((latents / family.vae_scale + family.vae_shift).to(param.device, param.dtype)).sample
    pixels = ((pixels[0].float() + 1) / 2).clamp(0, 1).nan_to_num(0.0)  # a NaN pixel shows black, not a crash
    return Image.fromarray((pixels.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))


def latent_shape(vae, size_px: tuple[int, int]) -> tuple[int, int, int, int]:
    """(1, C, H/f, W/f) for a (height, width) in pixels; f = 2^(VAE levels − 1), 8 for every SD family."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return 1, vae.config.latent_channels, size_px[0] // factor, size_px[1] // factor
