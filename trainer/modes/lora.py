"""LoRA mode: images and captions in aspect-ratio buckets; the UNet learns to predict the added noise (or v).

prepare: find images → bucketed samples (mirror, sub-images) → latents once → captions encoded once unless the
text encoder is trained (BASE), in which case they are encoded every step so its LoRA gets gradients.
step: noise a batch from one bucket at random timesteps and predict; images with an alpha channel carry a
latent-sized mask, and only their opaque part counts in the loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..data.batches import BucketBatches, repeat_items
from ..data.cache import encode_latents
from ..data.images import find_images
from ..data.samples import bucket_counts, build_samples
from ..engine import diffusion
from ..engine.types import StepOutput
from ..errors import UserError
from ..models.conditioning import encode_prompts, sdxl_time_ids
from .base import Mode

log = logging.getLogger(__name__)


@dataclass
class Bucket:
    size: tuple[int, int]  # (width, height) in pixels
    latents: torch.Tensor  # (N, 4, h, w) on the training device
    captions: list[str]
    hidden: torch.Tensor | None  # (N, 77, D) cached conditionings, when the text encoder is not trained
    pooled: torch.Tensor | None  # (N, P) for SDXL
    masks: torch.Tensor | None  # (N, 1, h, w) from the alpha channels (1 = opaque); None: no image has alpha
    items: list[int]  # sample indices, repeated by image_num_multiply (and the batch size if larger)


def stack_masks(masks: list[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor | None:
    """One (N, 1, h, w) mask for a bucket's samples; samples without alpha count everywhere."""
    if all(m is None for m in masks):
        return None
    full = torch.ones(1, *like.shape[-2:])
    return torch.stack([full if m is None else m for m in masks]).to(like.device)


class LoRAMode(Mode):
    name = "LoRA"

    def __init__(self, job):
        super().__init__(job)
        self.buckets: list[Bucket] = []
        self.tag_frequency: dict[str, int] = {}
        self.resolution = job.settings.image_size
        self.batches = None

    def check_inputs(self, lora_dir) -> None:
        find_images(self.job.settings.lora_data_directory)

    def prepare(self, ctx) -> None:
        s, c = ctx.settings, ctx.components
        samples, tags = build_samples(find_images(s.lora_data_directory), s)
        if not samples:
            raise UserError("no image fits a bucket: every image would need upscaling; untick "
                            "image_disable_upscale or lower image_size")
        self.tag_frequency = dict(tags)
        counts = bucket_counts(samples)
        log.info("%d training images in %d bucket(s): %s", len(samples), len(counts),
                 ", ".join(f"{w}x{h}: {n}" for (w, h), n in counts.items()))
        c.vae.to(ctx.device)
        for size in counts:
            members = [x for x in samples if x.bucket == size]
            latents = encode_latents(c.vae, [x.image for x in members], c.family, ctx.generator).to(ctx.device)
            captions = [x.caption for x in members]
            hidden = pooled = None
            if not self.trains_text_encoder:
                hidden, pooled = self._encode(ctx, captions)
            items = repeat_items(len(members), s.image_num_multiply, s.train_batch_size)
            masks = stack_masks([x.mask for x in members], latents)
            self.buckets.append(Bucket(size, latents, captions, hidden, pooled, masks, items))
        if not ctx.keep_vae:
            c.vae = None  # latents are cached; the VAE is not needed again
        if not self.trains_text_encoder:
            c.text_encoders = []  # conditionings are cached too
        self.batches = BucketBatches([len(b.items) for b in self.buckets], s.train_batch_size, ctx.rng)

    @torch.no_grad()
    def _encode(self, ctx, captions):
        c = ctx.components
        for encoder in c.text_encoders:
            encoder.to(ctx.device)
        hidden, pooled = encode_prompts(c, captions, ctx.device)
        return hidden.to(ctx.model_dtype), pooled.to(ctx.model_dtype) if pooled is not None else None

    def step(self, ctx, index: int) -> StepOutput:
        b, picks = next(self.batches)
        bucket = self.buckets[b]
        rows = [bucket.items[i] for i in picks]
        latents = bucket.latents[rows]
        noise = ctx.noise_like(latents)
        t = ctx.timesteps(len(rows))
        noisy = diffusion.add_noise(latents, noise, t, ctx.alpha_bar)
        if self.trains_text_encoder:
            hidden, pooled = encode_prompts(ctx.components, [bucket.captions[r] for r in rows], ctx.device)
        else:
            hidden = bucket.hidden[rows]
            pooled = bucket.pooled[rows] if bucket.pooled is not None else None
        added = None
        if ctx.components.family.is_sdxl:
            width, height = bucket.size
            added = {"text_embeds": pooled.to(ctx.model_dtype),
                     "time_ids": sdxl_time_ids(height, width, len(rows), ctx.device, ctx.model_dtype)}
        pred = ctx.components.unet(noisy.to(ctx.model_dtype), t, hidden.to(ctx.model_dtype),
                                   added_cond_kwargs=added).sample
        mask = bucket.masks[rows] if bucket.masks is not None else None
        return StepOutput(pred, ctx.diffusion_target(latents, noise, t), t, mask)
