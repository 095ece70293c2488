"""A sample point's images as one grid PNG: rows = prompts, columns = multipliers, every cell the same size. What
made it (prompts, step, multipliers, sampler settings) goes into the PNG's text chunks, UTF-8 (iTXt), so a grid
found later says what it shows."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..fileio import atomic_path


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """rows[r][c] → one image of len(rows[0]) × width by len(rows) × height."""
    width, height = rows[0][0].size
    out = Image.new("RGB", (width * len(rows[0]), height * len(rows)))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            out.paste(image, (c * width, r * height))
    return out


def png_info(info: dict) -> PngInfo:
    """One iTXt chunk per key, its value as JSON (`json.loads(Image.open(path).text[key])` reads it back)."""
    chunks = PngInfo()
    for key, value in info.items():
        chunks.add_itxt(key, json.dumps(value, ensure_ascii=False))
    return chunks


def write_grid(path: Path, image: Image.Image, info: dict, overwrite: bool) -> Path:
    """Written atomically (a temp file renamed into place); FileExistsError when `path` exists and not `overwrite`."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        image.save(tmp, format="PNG", pnginfo=png_info(info))
    return Path(path)

