"""The pair images uploaded in the tab (Difference, ADDifT), kept as PNGs under json/images/<day>/ so that a queued or
saved job still finds them when the browser is gone."""

from __future__ import annotations

import datetime
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_path

IMAGE_KEYS = ("original image", "target image")


def save_pair(images: dict, json_dir: Path, name: str, mode: str, when: datetime.datetime | None = None) -> dict:
    """{key: PIL image or None} → {key: path of its PNG}. Both are needed; a missing one is an error before anything
    is written. File names carry the LoRA name and the time to the microsecond, so runs never share a file."""
    missing = [key for key in IMAGE_KEYS if images.get(key) is None]
    if missing:
        raise UserError(f"{mode} needs both images: upload the {' and the '.join(missing)}")
    stamp = (when or datetime.datetime.now()).strftime("%Y%m%d_%H%M%S_%f")
    folder = Path(json_dir) / "images" / stamp[:8]
    return {key: str(save_png(images[key], folder / f"{name}-{stamp}-{key.split()[0]}.png")) for key in IMAGE_KEYS}


def save_png(image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
