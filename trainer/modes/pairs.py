"""Original/target image pairs for Difference, ADDifT and Multi-ADDifT: loading, latents, the difference mask."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..data.cache import encode_latents
from ..data.images import IMAGE_EXTENSIONS, find_images, open_image
from ..errors import UserError

log = logging.getLogger(__name__)
DIFF_THRESHOLD = 10  # summed |RGB difference| (0–765) above which a pixel counts as changed


def open_pair(original: str, target: str, mode: str):
    """Both images as RGB, cropped to a multiple of 8; they must have the same size."""
    if not str(original or "").strip() or not str(target or "").strip():
        raise UserError(f"{mode} needs an Original Image and a Target Image")
    images = []
    for label, path in (("Original Image", original), ("Target Image", target)):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{label} {path} does not exist")
        images.append(open_image(path).convert("RGB"))
    if images[0].size != images[1].size:
        raise UserError(f"{mode}: the Original Image is {images[0].size[0]}x{images[0].size[1]} but the Target Image "
                        f"is {images[1].size[0]}x{images[1].size[1]}; they must be the same size")
    return [crop_to_multiple_of_8(img) for img in images]


def crop_to_multiple_of_8(img):
    width, height = img.size
    w8, h8 = width // 8 * 8, height // 8 * 8
    if (w8, h8) == (width, height):
        return img
    left, top = (width - w8) // 2, (height - h8) // 2
    return img.crop((left, top, left + w8, top + h8))


def difference_mask(original, target) -> torch.Tensor:
    """(1, h/8, w/8): 1 where the pair differs (summed |ΔRGB| > 10), nearest-sampled to latent size."""
    from PIL import Image

    width, height = original.size
    a = torch.frombuffer(bytearray(original.tobytes()), dtype=torch.uint8).reshape(height, width, 3).int()
    b = torch.frombuffer(bytearray(target.tobytes()), dtype=torch.uint8).reshape(height, width, 3).int()
    changed = ((a - b).abs().sum(-1) > DIFF_THRESHOLD).to(torch.uint8) * 255
    small = Image.frombytes("L", (width, height), changed.numpy().tobytes()).resize(
        (width // 8, height // 8), Image.NEAREST)
    return (torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8) > 0).float().reshape(
        1, height // 8, width // 8)


def pair_latents(ctx, images) -> list[torch.Tensor]:
    vae = ctx.components.vae.to(ctx.device)
    return [encode_latents(vae, [img], ctx.components.family, ctx.generator).to(ctx.device) for img in images]


def find_pairs(folder: str, suffix: str) -> list[tuple[Path, Path]]:
    """(original, target) for every image `X.ext` with a partner `X<suffix>.<any image ext>`."""
    if not suffix.strip():
        raise UserError("diff_target_name is empty: give the file-name suffix of the target images, e.g. _after")
    files = [f.path for f in find_images(folder)]
    by_stem = {}
    for path in files:
        by_stem.setdefault(path.with_suffix(""), []).append(path)
    targets = {p for p in files if p.stem.endswith(suffix)}
    pairs, alone = [], []
    for path in files:
        if path in targets:
            continue
        partner = next((c for c in by_stem.get(path.with_name(path.stem + suffix), [])
                        if c.suffix.lower() in IMAGE_EXTENSIONS), None)
        (pairs if partner else alone).append((path, partner))
    for path, _ in alone:
        log.warning("Multi-ADDifT: %s has no partner %s%s.*; skipped", path, path.stem, suffix)
    if not pairs:
        raise UserError(f"Multi-ADDifT: no pairs in {folder} (an image X.png needs a partner X{suffix}.png)")
    return pairs
