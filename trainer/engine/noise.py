"""The training noise ε and kohya sd-scripts' two ways of shaping it, both off by default:

- noise offset (Guttenberg, 2023, "Diffusion with Offset Noise"): ε + offset · n, n ~ N(0, 1) per sample and channel,
  constant over the image, so the model learns to move an image's mean (very dark and very bright images);
- multi-resolution ("pyramid") noise (Whitaker, 2023): ε plus upsampled noise, level i weighted discount^i at a
  size r^i times smaller (r drawn in [2, 4) per level), then rescaled to unit standard deviation.

Every random number comes from the step's generator, so a seeded run (and a resumed one) draws the same noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """ε + offset · n with n of shape (B, C, 1, 1) (kohya's apply_noise_offset)."""
    n = torch.randn(noise.shape[:2] + (1, 1), generator=generator, device=generator.device)
    return noise + offset * n.to(noise)


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float, generator: torch.Generator) -> torch.Tensor:
    """ε + Σ_{i=0..iterations-1} discount^i · up(n_i), n_i of size (h, w) / r^i with r ∈ [2, 4) drawn per level
    (level 0 is full-size), stopping after the level that reaches one pixel; divided by the result's standard
    deviation over the whole batch (kohya's pyramid_noise_like)."""
    batch, channels, height, width = noise.shape
    out = noise.float()
    for i in range(iterations):
        r = 2 + 2 * float(torch.rand((), generator=generator, device=generator.device))
        h, w = max(1, int(height / r**i)), max(1, int(width / r**i))
        level = torch.randn((batch, channels, h, w), generator=generator, device=generator.device).to(out)
        out = out + F.interpolate(level, size=(height, width), mode="bilinear") * discount**i
        if h == 1 or w == 1:
            break
    return (out / out.std()).to(noise.dtype)


def training_noise(like: torch.Tensor, settings, generator: torch.Generator) -> torch.Tensor:
    """ε for a batch shaped like `like` (dtype and device of `like`): N(0, 1), then the offset, then the pyramid,
    in kohya's order. With both off it is exactly one randn draw (upstream's stream)."""
    noise = torch.randn(like.shape, generator=generator, device=generator.device).to(like)
    if settings.noise_offset:
        noise = offset_noise(noise, settings.noise_offset, generator)
    if settings.multires_noise_iterations:
        noise = pyramid_noise(noise, settings.multires_noise_iterations, settings.multires_noise_discount, generator)
    return noise
