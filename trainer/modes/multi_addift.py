"""Multi-ADDifT: ADDifT over a folder of pairs (`X.png` + `X<diff_target_name>.png`), each pair resized to the
pair's common size and bucketed like LoRA mode, with per-image captions. Fixed here: the pixel-difference mask is
really used with `diff_use_diff_mask`, and with BASE selected the captions are encoded (upstream crashed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..data.batches import BucketBatches, repeat_items
from ..data.cache import encode_latents, finish_caching
from ..data.disk_cache import DiskCache
from ..data.images import ImageFile, caption_for, open_image
from ..data.samples import samples_for_image
from ..engine.types import StepOutput
from ..errors import UserError
from . import common, pairs, quality
from .addift import TRAIN_MULTIPLIER, addift_eval, addift_step
from .base import Mode, Pass

log = logging.getLogger(__name__)


@dataclass
class PairBucket:
    size: tuple[int, int]  # (width, height) px
    original: torch.Tensor  # (N, 4, h, w)
    target: torch.Tensor
    masks: torch.Tensor  # (N, 1, h, w)
    captions: list[tuple[str, str]]  # (original caption, target caption)
    conds: list | None  # cached ((hidden, pooled), (hidden, pooled)) per item, when the text encoder is frozen
    items: list[int]


class MultiADDifTMode(Mode):
    name = "Multi-ADDifT"
    data_parallel = True

    def __init__(self, job):
        super().__init__(job)
        self.resolution = job.settings.image_size

    def passes(self) -> list[Pass]:
        s = self.job.settings
        return [Pass(settings=s, blocks=self.blocks(), resume=s.diff_load_1st_pass or s.network_resume)]

    def check_inputs(self, lora_dir) -> None:
        pairs.find_pairs(self.job.settings.lora_data_directory, self.job.settings.diff_target_name)

    def prepare(self, ctx) -> None:
        from PIL import Image

        s, c = ctx.settings, ctx.components
        grouped: dict[tuple[int, int], list] = {}
        for original_path, target_path in pairs.find_pairs(s.lora_data_directory, s.diff_target_name):
            original, target = open_image(original_path).convert("RGB"), open_image(target_path).convert("RGB")
            size = (min(original.size[0], target.size[0]), min(original.size[1], target.size[1]))
            original, target = original.resize(size, Image.LANCZOS), target.resize(size, Image.LANCZOS)
            captions = (caption_for(ImageFile(original_path), s.lora_trigger_word, s.image_use_filename_as_tag),
                        caption_for(ImageFile(target_path), s.lora_trigger_word, s.image_use_filename_as_tag))
            for o, t in zip(samples_for_image(original, captions[0], str(original_path), s),
                            samples_for_image(target, captions[1], str(target_path), s)):
                grouped.setdefault(o.bucket, []).append((o, t))
        if not grouped:
            raise UserError("Multi-ADDifT: no pair fits a bucket; untick image_disable_upscale or lower image_size")
        if s.diff_revert_original_target:
            grouped = {k: [(t, o) for o, t in v] for k, v in grouped.items()}
        disk = DiskCache.of_components(c, texts=False) if s.cache_latents_to_disk else None
        batch = ctx.world.global_batch(s.train_batch_size)
        self.buckets = []
        for size, members in grouped.items():
            originals, targets = (encode_latents(c.vae, [x[side].image for x in members], c.family, ctx.generator,
                                                 cache=disk, sources=[x[side].source for x in members],
                                                 device=ctx.device).to(ctx.device) for side in (0, 1))
            masks = torch.stack([pairs.difference_mask(o.image, t.image) for o, t in members]).to(ctx.device)
            captions = [(o.caption, t.caption) for o, t in members]
            conds = None if self.trains_text_encoder else [
                (common.encode(ctx, [a]), common.encode(ctx, [b])) for a, b in captions]
            items = repeat_items(len(members), s.image_num_multiply, batch)
            self.buckets.append(PairBucket(size, originals, targets, masks, captions, conds, items))
        log.info("Multi-ADDifT: %d pair images in %d bucket(s)", sum(len(b.captions) for b in self.buckets),
                 len(self.buckets))
        finish_caching(ctx, disk)
        self._cached(ctx)

    def _cached(self, ctx) -> None:
        """After the data is cached: free what the steps no longer need, and order the batches."""
        common.free_vae_and_text(ctx, keep_text=self.trains_text_encoder)
        batch = ctx.world.global_batch(ctx.settings.train_batch_size)
        self.batches = BucketBatches([len(b.items) for b in self.buckets], batch, ctx.rng)

    def shared_data(self) -> dict:
        """What prepare cached, for the other processes of a data-parallel run (engine/distributed.py)."""
        return {"buckets": self.buckets}

    def adopt_shared(self, ctx, data: dict) -> None:
        self.buckets = data["buckets"]
        self._cached(ctx)

    def state_dict(self) -> dict:
        """The data order: the epoch and the batches still due in it (a training state saves it)."""
        return {"batches": self.batches.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.batches.load_state_dict(state["batches"])

    def _conds(self, bucket: PairBucket, rows: list[int], side: int):
        if bucket.conds is not None:
            hidden = torch.cat([bucket.conds[r][side][0] for r in rows])
            pooled = [bucket.conds[r][side][1] for r in rows]
            return hidden, torch.cat(pooled) if pooled[0] is not None else None
        texts = [bucket.captions[r][side] for r in rows]
        return lambda ctx, grad: common.encode(ctx, texts, grad=grad and torch.is_grad_enabled())

    def step(self, ctx, index: int) -> StepOutput:
        """A batch of pairs from one bucket; in a data-parallel run addift_step keeps this process's share of it
        (the conditionings are looked up for that share only)."""
        b, picks = next(self.batches)
        bucket = self.buckets[b]
        rows = ctx.world.fill([bucket.items[i] for i in picks], ctx.settings.train_batch_size)
        mine = ctx.world.share(rows)
        width, height = bucket.size
        return addift_step(ctx, index, bucket.original[rows], bucket.target[rows], self._conds(bucket, mine, 0),
                           self._conds(bucket, mine, 1), (height, width), bucket.masks[rows])

    def eval_outputs(self, ctx, generator, t_values: list[int]) -> list[StepOutput]:
        """The first EVAL_SAMPLES pairs of each of the first EVAL_BUCKETS buckets (engine/evaluation.py)."""
        outputs = []
        for bucket in self.buckets[:quality.EVAL_BUCKETS]:
            rows = list(range(min(quality.EVAL_SAMPLES, bucket.original.shape[0])))
            width, height = bucket.size
            outputs.append(addift_eval(ctx, generator, t_values, bucket.original[rows], bucket.target[rows],
                                       self._conds(bucket, rows, 0), self._conds(bucket, rows, 1), (height, width),
                                       bucket.masks[rows]))
        return outputs

    def quality_report(self, ctx) -> dict:
        bucket = self.buckets[0]
        conds = [self._conds(bucket, [0], side) for side in (0, 1)]
        conds = [c(ctx, False) if callable(c) else c for c in conds]
        width, height = bucket.size
        return quality.pair_report(ctx, bucket.original[:1], bucket.target[:1], conds[0], conds[1], TRAIN_MULTIPLIER,
                                   (height, width), self.name)
