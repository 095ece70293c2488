"""LoRA mode: images and captions in aspect-ratio buckets; the UNet learns to predict the added noise (or v).

prepare: find images → bucketed samples (mirror, sub-images) → latents once → captions encoded once unless the
text encoder is trained (BASE), in which case they are encoded every step so its LoRA gets gradients, or tags are
shuffled (`shuffle_caption`), in which case every step encodes its own order. Caption dropout uses the empty
caption's conditioning, encoded once.
step: noise a batch from one bucket at random timesteps and predict; images with an alpha channel carry a
latent-sized mask, and only their opaque part counts in the loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..data.batches import BucketBatches, repeat_items
from ..data.cache import encode_latents, finish_caching
from ..data.disk_cache import DiskCache
from ..data.captions import step_caption, varies_per_step
from ..data.images import find_images
from ..data.samples import bucket_counts, build_samples
from ..engine import diffusion
from ..engine.types import StepOutput
from ..errors import UserError
from ..models.conditioning import encode_prompts, sdxl_time_ids
from .base import Mode
from .quality import EVAL_BUCKETS, EVAL_SAMPLES, timestep_rows

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
    data_parallel = True

    def __init__(self, job):
        super().__init__(job)
        self.buckets: list[Bucket] = []
        self.tag_frequency: dict[str, int] = {}
        self.resolution = job.settings.image_size
        self.batches = None
        self.empty = None  # (hidden, pooled) of "", for caption dropout on cached conditionings

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
        disk = DiskCache.of_components(c, self.caches_conditionings) if s.cache_latents_to_disk else None
        batch = ctx.world.global_batch(s.train_batch_size)
        for size in counts:
            members = [x for x in samples if x.bucket == size]
            sources = [x.source for x in members]
            latents = encode_latents(c.vae, [x.image for x in members], c.family, ctx.generator, cache=disk,
                                     sources=sources, device=ctx.device).to(ctx.device)
            captions = [x.caption for x in members]
            hidden = pooled = None
            if self.caches_conditionings:
                hidden, pooled = self._encode_or_read(ctx, captions, sources, disk)
            items = repeat_items(len(members), s.image_num_multiply, batch)
            masks = stack_masks([x.mask for x in members], latents)
            self.buckets.append(Bucket(size, latents, captions, hidden, pooled, masks, items))
        if self.caches_conditionings and s.caption_dropout_rate:
            self.empty = self._encode(ctx, [""])
        finish_caching(ctx, disk)
        self._cached(ctx)

    def _cached(self, ctx) -> None:
        """After the data is cached: free what the steps no longer need, and order the batches."""
        c = ctx.components
        if not ctx.keep_vae:
            c.vae = None  # latents are cached; the VAE is not needed again
        if self.caches_conditionings:
            c.text_encoders = []  # conditionings are cached too
        batch = ctx.world.global_batch(ctx.settings.train_batch_size)
        self.batches = BucketBatches([len(b.items) for b in self.buckets], batch, ctx.rng)

    def shared_data(self) -> dict:
        """What prepare cached, for the other processes of a data-parallel run (engine/distributed.py)."""
        return {"buckets": self.buckets, "tag_frequency": self.tag_frequency, "empty": self.empty}

    def adopt_shared(self, ctx, data: dict) -> None:
        self.buckets, self.tag_frequency, self.empty = data["buckets"], data["tag_frequency"], data["empty"]
        self._cached(ctx)

    def state_dict(self) -> dict:
        """The data order: the epoch and the batches still due in it (a training state saves it)."""
        return {"batches": self.batches.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state["batches"])

    @property
    def caches_conditionings(self) -> bool:
        """Captions encoded once: not when the text-encoder LoRA trains or tags are shuffled at every step."""
        return not self.trains_text_encoder and not self.job.settings.shuffle_caption

    def _conditionings(self, ctx, bucket: Bucket, rows: list[int]):
        """(hidden, pooled) of this process's share of a batch: cached, or encoded for this step's captions
        (dropout, shuffled tags). Every caption of the whole batch is drawn, so all processes' generators agree."""
        s = ctx.settings
        captions = [bucket.captions[r] for r in rows]
        if varies_per_step(s):
            captions = [step_caption(caption, s, ctx.rng) for caption in captions]
        rows, captions = ctx.world.share(rows), ctx.world.share(captions)
        if self.trains_text_encoder:
            return encode_prompts(ctx.components, captions, ctx.device)
        if not self.caches_conditionings:
            return self._encode(ctx, captions)
        hidden = bucket.hidden[rows]
        pooled = bucket.pooled[rows] if bucket.pooled is not None else None
        dropped = [i for i, caption in enumerate(captions) if caption == "" and bucket.captions[rows[i]] != ""]
        if dropped:
            hidden, pooled = hidden.clone(), pooled.clone() if pooled is not None else None
            hidden[dropped] = self.empty[0].to(hidden)
            if pooled is not None:
                pooled[dropped] = self.empty[1].to(pooled)
        return hidden, pooled

    def _encode_or_read(self, ctx, captions: list[str], sources: list[str], disk):
        """A bucket's conditionings: all from the disk cache when every caption is there, else encoded together
        (as without the cache) and added to it."""
        if disk is None:
            return self._encode(ctx, captions)
        found = [disk.conditioning(source, caption) for source, caption in zip(sources, captions)]
        if all(f is not None for f in found):
            hidden = torch.stack([f[0] for f in found]).to(ctx.device)
            pooled = torch.stack([f[1] for f in found]).to(ctx.device) if found[0][1] is not None else None
            return hidden, pooled
        hidden, pooled = self._encode(ctx, captions)
        for i, (source, caption) in enumerate(zip(sources, captions)):
            disk.put_conditioning(source, caption, hidden[i], pooled[i] if pooled is not None else None)
        return hidden, pooled

    @torch.no_grad()
    def _encode(self, ctx, captions):
        c = ctx.components
        for encoder in c.text_encoders:
            encoder.to(ctx.device)
        hidden, pooled = encode_prompts(c, captions, ctx.device)
        return hidden.to(ctx.model_dtype), pooled.to(ctx.model_dtype) if pooled is not None else None

    def step(self, ctx, index: int) -> StepOutput:
        """One batch of a random bucket: noised at random timesteps and predicted. In a data-parallel run the
        whole batch is drawn (items, noise, timesteps) and this process predicts its share of the rows."""
        world = ctx.world
        b, picks = next(self.batches)
        bucket = self.buckets[b]
        rows = world.fill([bucket.items[i] for i in picks], ctx.settings.train_batch_size)
        latents = bucket.latents[rows]
        noise = ctx.noise_like(latents)
        t = ctx.timesteps(len(rows))
        hidden, pooled = self._conditionings(ctx, bucket, rows)
        latents, noise, t = world.share(latents), world.share(noise), world.share(t)
        noisy = diffusion.add_noise(latents, noise, t, ctx.alpha_bar)
        pred = self._predict(ctx, bucket, noisy, t, hidden, pooled)
        mask = bucket.masks[world.share(rows)] if bucket.masks is not None else None
        return StepOutput(pred, ctx.diffusion_target(latents, noise, t), t, mask)

    def _predict(self, ctx, bucket: Bucket, noisy, t, hidden, pooled):
        added = None
        if ctx.components.family.is_sdxl:
            width, height = bucket.size
            added = {"text_embeds": pooled.to(ctx.model_dtype),
                     "time_ids": sdxl_time_ids(height, width, noisy.shape[0], ctx.device, ctx.model_dtype)}
        return ctx.components.unet(noisy.to(ctx.model_dtype), t, hidden.to(ctx.model_dtype),
                                   added_cond_kwargs=added).sample

    def eval_outputs(self, ctx, generator, t_values: list[int]) -> list[StepOutput]:
        """The evaluation loss's batches (engine/evaluation.py): the first EVAL_SAMPLES images of each of the first
        EVAL_BUCKETS buckets, with their own captions (no dropout or shuffling), each at every timestep, noised by
        `generator`; one forward per bucket."""
        outputs = []
        for bucket in self.buckets[:EVAL_BUCKETS]:
            index, t = timestep_rows(t_values, min(EVAL_SAMPLES, bucket.latents.shape[0]), ctx.device)
            latents = bucket.latents[index]
            noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents)
            noisy = diffusion.add_noise(latents, noise, t, ctx.alpha_bar)
            if self.caches_conditionings:
                hidden = bucket.hidden[index]
                pooled = bucket.pooled[index] if bucket.pooled is not None else None
            else:
                captions = [bucket.captions[i] for i in index.tolist()]
                hidden, pooled = encode_prompts(ctx.components, captions, ctx.device)
            pred = self._predict(ctx, bucket, noisy, t, hidden, pooled)
            mask = bucket.masks[index] if bucket.masks is not None else None
            outputs.append(StepOutput(pred, ctx.diffusion_target(latents, noise, t), t, mask))
        return outputs
