"""Encode once, train many times: latents from the VAE (one posterior sample per image, upstream's choice)
and, when the text encoder is not trained, the captions' conditionings."""

from __future__ import annotations

import torch

from .images import to_tensor


@torch.no_grad()
def encode_latents(vae, images, family, generator: torch.Generator, batch_size: int = 1) -> torch.Tensor:
    """PIL images of one size → latents (N, 4, H/8, W/8), scaled and shifted for the UNet. One image at a time
    by default: VAE activations at full resolution are the largest buffers of a whole run."""
    param = next(vae.parameters())
    out = []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack([to_tensor(img) for img in images[start:start + batch_size]])
        posterior = vae.encode(pixels.to(param.device, param.dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator, device=generator.device)
        latents = posterior.mean + posterior.std * noise.to(posterior.mean)
        out.append(((latents - family.vae_shift) * family.vae_scale).float())
    return torch.cat(out)
