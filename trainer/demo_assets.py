"""The bundled demo: a tiny random SD1 checkpoint and a few generated sample images, made on first use."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

from .paths import DEMO_DIR

log = logging.getLogger(__name__)

DEMO_MODEL = DEMO_DIR / "demo-sd1.safetensors"
SAMPLE_DIR = DEMO_DIR / "images"
SAMPLES = [
    ("red_circle", "a red circle on a blue background", (200, 40, 40), (30, 60, 160), "circle"),
    ("green_square", "a green square on a yellow background", (40, 170, 60), (230, 210, 60), "square"),
    ("white_circle", "a white circle on a black background", (240, 240, 240), (15, 15, 15), "circle"),
    ("orange_triangle", "an orange triangle on a teal background", (240, 140, 30), (20, 130, 130), "triangle"),
]


def ensure_demo_model(family: str = "sd1") -> Path:
    """Path of the demo checkpoint for `family`, writing it (and its .yaml) the first time."""
    from .models.demo import make_demo_model

    path = DEMO_MODEL if family == "sd1" else DEMO_DIR / f"demo-{family}.safetensors"
    if not path.is_file() or not path.with_suffix(".yaml").is_file():
        log.info("writing the demo %s model to %s (random weights, first use only)", family, path)
        make_demo_model(family, path)
    return path


def ensure_sample_images(folder: Path = SAMPLE_DIR, size: int = 96) -> Path:
    """A few drawn images with .txt captions: a dataset any mode can train on in seconds."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    if folder.is_dir() and len(list(folder.glob("*.png"))) >= len(SAMPLES):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for name, caption, fg, bg, shape in SAMPLES:
        img = Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        c, r = size / 2 + rng.uniform(-8, 8), size * 0.3
        if shape == "circle":
            draw.ellipse([c - r, c - r, c + r, c + r], fill=fg)
        elif shape == "square":
            draw.rectangle([c - r, c - r, c + r, c + r], fill=fg)
        else:
            pts = [(c + r * math.cos(a), c + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
            draw.polygon(pts, fill=fg)
        img.save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(caption, encoding="utf-8")
    return folder
