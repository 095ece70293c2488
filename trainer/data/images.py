"""Finding training images and their captions, and fitting an image into a bucket (resize + centre crop).

Extensions are matched case-insensitively (`.JPG` counts). A caption comes from, in order: the file name (when
`image_use_filename_as_tag`), `<stem>.txt`, `<stem>.caption`; the trigger word goes in front.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".pcx", ".ico")
ALPHA_THRESHOLD = 0.1 * 255  # alpha above this counts in the loss (upstream's rule)
BACKGROUND = (128, 128, 128)  # what transparent pixels are composited over


@dataclass(frozen=True)
class ImageFile:
    path: Path

    @property
    def filename_tags(self) -> str:
        """`red_dress_id_3.png` → "red,dress" (the Image tab's `_id_<n>` suffix is dropped)."""
        stem = re.split(r"_id_", self.path.stem, maxsplit=1)[0]
        return ",".join(t for t in stem.split("_") if t)

    def sibling(self, suffix: str) -> Path:
        return self.path.with_suffix(suffix)


def find_images(folder: str | os.PathLike, setting: str = "lora_data_directory") -> list[ImageFile]:
    folder = Path(str(folder).strip()) if str(folder).strip() else None
    if folder is None:
        raise UserError(f"{setting} is empty; choose the folder of training images")
    if not folder.is_dir():
        raise UserError(f"{setting}: {folder} is not a folder")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                path = Path(root) / name
                if not path.is_file():  # a FIFO or a device would block or stream forever when opened
                    raise UserError(f"{setting}: {path} is not a regular file; remove it from the folder")
                found.append(ImageFile(path))
    if not found:
        raise UserError(f"{setting}: no images in {folder} (looked for {' '.join(IMAGE_EXTENSIONS)})")
    return found


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise UserError(f"{path}: the caption is not UTF-8 text; save it as UTF-8") from None


def caption_for(image: ImageFile, trigger: str, use_filename: bool) -> str:
    """Trigger word and caption joined by ", " (no leading comma when either is empty)."""
    if use_filename:
        body = image.filename_tags
    elif image.sibling(".txt").is_file():
        body = read_text(image.sibling(".txt"))
    elif image.sibling(".caption").is_file():
        body = read_text(image.sibling(".caption"))
    else:
        body = ""
    return ", ".join(p for p in (trigger.strip(), body) if p)


ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
WIDE_GREY_MODES = ("I", "F") + tuple(m for m in ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;32", "I;32B"))


def open_image(path: Path):
    """The image as 8-bit RGBA when it has transparency (an alpha channel or a `transparency` colour), else RGB.

    Wide greyscale is scaled by its real range, not clipped: 16-bit (I;16*, and "I" holding values up to 65535, as a
    16-bit PNG opens on some Pillow versions) keeps the top 8 bits; other "I" data is scaled by its maximum; float
    ("F") is taken as [0, 1] when its maximum is at most 1, else clipped to [0, 255]. A file Pillow cannot open or
    convert is refused in one line naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in WIDE_GREY_MODES or img.mode.startswith("I;"):
                return _wide_grey_to_8_bit(img)
            if img.mode in ALPHA_MODES or "transparency" in img.info:
                return img.convert("RGBA")
            return img.convert("RGB")
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise many types on hostile files; all mean "unreadable"
        detail = (str(err).splitlines() or [""])[0][:120] or type(err).__name__
        raise UserError(f"{path}: cannot read the image ({detail})") from None


def _wide_grey_to_8_bit(img):
    import numpy as np
    from PIL import Image

    data = np.asarray(img)
    if data.ndim != 2:
        raise ValueError(f"unsupported image mode {img.mode}")
    if img.mode == "F" or data.dtype.kind == "f":
        values = np.nan_to_num(data.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        finite_max = float(values.max()) if values.size else 0.0
        if finite_max <= 1.0:
            values = values * 255.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    else:
        values = data.astype(np.int64)
        top = int(values.max()) if values.size else 0
        if top <= 65535:
            grey = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        else:
            grey = np.clip(np.rint(np.clip(values, 0, None) * (255.0 / top)), 0, 255).astype(np.uint8)
    rgb = Image.fromarray(grey, "L").convert("RGB")
    transparent = img.info.get("transparency")
    if isinstance(transparent, (int, float)) and not isinstance(transparent, bool):
        alpha = np.where(data == transparent, 0, 255).astype(np.uint8)
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(alpha, "L"))
        return rgba
    return rgb


def fit_to_bucket(img, width: int, height: int, disable_upscale: bool = False):
    """Resize keeping the aspect so the bucket is covered, then centre-crop; None if that would upscale and
    upscaling is disabled. Returns (RGB image, mask (1, h/8, w/8) from the alpha channel, or None); an image with
    alpha is composited over a grey background."""
    from PIL import Image

    w, h = img.size
    image_ratio, bucket_ratio = w / h, width / height
    wider = bucket_ratio - image_ratio <= 0  # the image is relatively wider than the bucket: match heights
    if disable_upscale and ((not wider and w < width) or (wider and h < height)):
        return None
    if wider:
        size = (max(width, round(w * height / h)), height)
    else:
        size = (width, max(height, round(h * width / w)))
    resized = img.resize(size, Image.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    fitted = resized.crop((left, top, left + width, top + height))
    if fitted.mode != "RGBA":
        return fitted.convert("RGB"), None
    alpha = fitted.getchannel("A").resize((width // 8, height // 8), Image.NEAREST)
    mask = (torch.frombuffer(bytearray(alpha.tobytes()), dtype=torch.uint8).float() > ALPHA_THRESHOLD)
    return on_background(fitted), mask.float().reshape(1, height // 8, width // 8)


def on_background(img):
    """RGBA → RGB over a neutral grey (0 in the VAE's [-1, 1] range), so the colours hidden under transparent
    pixels never reach the model (PIL's plain RGB conversion would keep them). PIL resizes RGBA premultiplied,
    so a resized transparent pixel carries no hidden colour either."""
    from PIL import Image

    background = Image.new("RGBA", img.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, img).convert("RGB")


def to_tensor(img) -> torch.Tensor:
    """PIL RGB → (3, H, W) in [-1, 1]."""
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(img.size[1], img.size[0], 3)
    return data.permute(2, 0, 1).float() / 127.5 - 1.0
