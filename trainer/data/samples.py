"""Images → bucketed training samples: main bucket, mirror copies, downscaled sub-image copies, captions."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch

from .buckets import main_buckets, nearest_bucket, sub_bucket_order, sub_buckets
from .images import ImageFile, caption_for, fit_to_bucket, open_image

log = logging.getLogger(__name__)


@dataclass
class Sample:
    image: object  # PIL RGB, exactly bucket-sized
    mask: torch.Tensor | None  # (1, h/8, w/8) from the alpha channel, or None
    caption: str
    bucket: tuple[int, int]  # (width, height) in pixels
    source: str
    mirrored: bool = False


def mirrored(sample: Sample) -> Sample:
    from PIL import ImageOps

    mask = sample.mask.flip(-1) if sample.mask is not None else None
    return Sample(ImageOps.mirror(sample.image), mask, sample.caption, sample.bucket, sample.source, True)


def samples_for_image(img, caption: str, source: str, settings) -> list[Sample]:
    """The samples one image gives: its nearest main bucket, then `sub_image_num` downscaled copies."""
    size = settings.image_size
    step, min_length, ratio = settings.image_buckets_step, settings.image_min_length, settings.image_max_ratio
    mains = main_buckets(size, step, min_length, ratio)
    subs = sub_buckets(size, step, min_length, ratio)
    width, height = img.size
    chosen = [mains[nearest_bucket(width, height, mains)]]
    if settings.sub_image_num and not subs:
        log.warning("no sub-buckets for image_size %s, step %d, min %d: sub_image_num is ignored", size, step,
                    min_length)
    chosen += [subs[i] for i in sub_bucket_order(width, height, subs, settings.sub_image_num)]
    out = []
    for bucket in chosen:
        fitted = fit_to_bucket(img, *bucket, disable_upscale=settings.image_disable_upscale)
        if fitted is None:
            continue
        sample = Sample(fitted[0], fitted[1], caption, bucket, source)
        out.append(sample)
        if settings.image_mirroring:
            out.append(mirrored(sample))
    return out


def build_samples(files: list[ImageFile], settings) -> tuple[list[Sample], Counter]:
    """All samples of a folder, and the tag frequency of their captions (for `ss_tag_frequency`)."""
    samples, tags = [], Counter()
    for image_file in files:
        caption = caption_for(image_file, settings.lora_trigger_word, settings.image_use_filename_as_tag)
        tags.update(t.strip() for t in caption.split(",") if t.strip())
        samples += samples_for_image(open_image(image_file.path), caption, str(image_file.path), settings)
    return samples, tags


def bucket_counts(samples: list[Sample]) -> dict[tuple[int, int], int]:
    return dict(sorted(Counter(s.bucket for s in samples).items(), key=lambda kv: kv[0][0] / kv[0][1]))
