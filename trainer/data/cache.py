"""Encode once, train many times: latents from the VAE (one posterior sample per image, upstream's choice)
and, when the text encoder is not trained, the captions' conditionings. With `cache_latents_to_disk` the VAE's
posteriors come from, and go to, the files beside the images (data/disk_cache.py)."""

from __future__ import annotations

import torch

from .images import to_tensor


@torch.no_grad()
def encode_latents(vae, images, family, generator: torch.Generator, batch_size: int = 1, cache=None,
                   sources=None, device=None) -> torch.Tensor:
    """PIL images of one size → latents (N, 4, H/8, W/8), scaled and shifted for the UNet. One image at a time
    by default: VAE activations at full resolution are the largest buffers of a whole run.

    `cache` (a DiskCache) with `sources` (each image's file): posteriors found there skip the VAE, new ones are
    added. The posterior noise is drawn in image order either way, so the latents are the same with or without it.
    `device`: where the VAE encodes (moved there at the first image it has to encode); default: where it is."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        found = [cache.posterior(sources[start + i], img) for i, img in enumerate(chunk)] if cache else [None]
        if cache is not None and all(f is not None for f in found):
            where = device or generator.device
            mean = torch.stack([f[0] for f in found]).to(where)
            std = torch.stack([f[1] for f in found]).to(where)
        else:
            if device is not None:
                vae.to(device)
            param = next(vae.parameters())
            pixels = torch.stack([to_tensor(img) for img in chunk])
            posterior = vae.encode(pixels.to(param.device, param.dtype)).latent_dist
            mean, std = posterior.mean, posterior.std
            if cache is not None:
                for i, img in enumerate(chunk):
                    cache.put_posterior(sources[start + i], img, mean[i], std[i])
        noise = torch.randn(mean.shape, generator=generator, device=generator.device)
        latents = mean + std * noise.to(mean)
        out.append(((latents - family.vae_shift) * family.vae_scale).float())
    return torch.cat(out)


def finish_caching(ctx, disk=None) -> None:
    """After a mode's data is encoded: the disk cache's new entries written, and the VAE on the training device when
    previews decode with it (it stays where it was when every latent came from the cache)."""
    if disk is not None:
        disk.flush()
    if ctx.keep_vae:
        ctx.components.vae.to(ctx.device)
