"""Data augmentation for the Image sub-tab ("Rotate random angle and scaling").

Each source image gives `count` variants. A variant is the source (as RGBA), optionally rotated by a random angle in
[-max_angle, +max_angle] (bicubic, `expand=True`, then trimmed to its visible pixels), shrunk to fit the canvas if the
rotation made it larger, optionally downscaled by a random s in [min_scale, 1] (Lanczos), and pasted onto a fully
transparent canvas of the source's size: at a random position, or flush against `fix_side` and random along the other
axis.

Output files are always `<stem>_id_<i>.png`. PNG because the transparent margins need an alpha channel (JPEG has none);
upstream kept the source extension and, in directory mode, wrote `name_id_0..png` with a double dot. Files are written
atomically (`fileio.atomic_path`: a temporary file in the same folder, linked to the final name only if that name is
free) and an existing file is never overwritten: numbering continues after the highest `<stem>_id_<n>.png` already in
the output folder, and past any name taken while we write. The dataset loader drops the `_id_<n>` suffix when it turns
file names into tags.

Works on Pillow 9.5 and Pillow >= 10 (`Image.Resampling` when present; `Image.ANTIALIAS` is never used).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from ..errors import UserError
from ..fileio import atomic_path

FIX_SIDES = ("none", "right", "left", "top", "bottom")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
OUTPUT_SUBDIR = "modified"
MAX_COUNT = 1000

_RESAMPLING = getattr(Image, "Resampling", Image)  # Pillow >= 9.1 has the enum; older ones only the constants
BICUBIC = _RESAMPLING.BICUBIC
LANCZOS = _RESAMPLING.LANCZOS


@dataclass(frozen=True)
class AugmentOptions:
    count: int = 5
    max_angle: float = 180
    min_scale: float = 0.4
    change_angle: bool = True
    change_scale: bool = True
    fix_side: str = "none"

    def __post_init__(self):
        count = self.count
        if isinstance(count, float) and count.is_integer():  # Gradio sliders hand back floats such as 5.0
            count = int(count)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            raise UserError(f"number of images must be a whole number from 0 to {MAX_COUNT} (got {self.count!r})")
        object.__setattr__(self, "count", count)
        if not _is_number(self.max_angle) or not 0 <= self.max_angle <= 180:
            raise UserError(f"max_tilting_angle must be from 0 to 180 degrees (got {self.max_angle!r})")
        if not _is_number(self.min_scale) or not 0 < self.min_scale <= 1:
            raise UserError(f"minimum downscale ratio must be above 0 and at most 1 (got {self.min_scale!r})")
        side = self.fix_side.strip().lower() if isinstance(self.fix_side, str) else self.fix_side
        if side not in FIX_SIDES:
            raise UserError(f"fix side must be one of {', '.join(FIX_SIDES)} (got {self.fix_side!r})")
        object.__setattr__(self, "fix_side", side)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def variants(image: Image.Image, options: AugmentOptions, rng: random.Random) -> list[Image.Image]:
    """`options.count` RGBA images, each the size of `image`. The same `rng` state gives the same images."""
    source = image.convert("RGBA")
    return [_variant(source, options, rng) for _ in range(options.count)]


def _variant(source: Image.Image, options: AugmentOptions, rng: random.Random) -> Image.Image:
    width, height = source.size
    piece = source
    if options.change_angle and options.max_angle > 0:
        angle = rng.uniform(-options.max_angle, options.max_angle)
        # Rotate premultiplied so the bicubic filter does not pull the black of transparent pixels into the edges.
        piece = piece.convert("RGBa").rotate(angle, resample=BICUBIC, expand=True).convert("RGBA")
        box = piece.getchannel("A").getbbox()  # drop the empty corners `expand` adds, so fix_side is truly flush
        if box:
            piece = piece.crop(box)
    fit = min(1.0, width / piece.width, height / piece.height)
    scale = rng.uniform(options.min_scale, 1.0) if options.change_scale else 1.0
    size = (max(1, min(width, round(piece.width * fit * scale))),
            max(1, min(height, round(piece.height * fit * scale))))
    if size != piece.size:
        piece = piece.resize(size, resample=LANCZOS)
    x = rng.randint(0, width - piece.width)
    y = rng.randint(0, height - piece.height)
    if options.fix_side == "left":
        x = 0
    elif options.fix_side == "right":
        x = width - piece.width
    elif options.fix_side == "top":
        y = 0
    elif options.fix_side == "bottom":
        y = height - piece.height
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    canvas.paste(piece, (x, y))  # no mask: copy the pixels, alpha included, onto the empty canvas
    return canvas


def augment_directory(directory: str | os.PathLike, options: AugmentOptions,
                      rng: random.Random | None = None) -> tuple[Path, list[Path]]:
    """Augment every image directly in `directory` (not sub-folders) into `<directory>/modified/`.

    Returns the output folder and the files written, in order.
    """
    text = str(directory).strip()
    if not text:
        raise UserError("Image directory is empty; enter the folder that holds the images")
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise UserError(f"Image directory {folder} is not a folder")
    output = folder / OUTPUT_SUBDIR
    sources = [p for p in sorted(folder.iterdir())
               if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
               and not _inside(p, output)]
    if not sources:
        raise UserError(f"No images in {folder} (looked for {' '.join(IMAGE_EXTENSIONS)}, any case)")
    rng = rng if rng is not None else random.Random()
    _make_dir(output)
    written: list[Path] = []
    for path in sources:
        written += _save_all(variants(_open(path), options, rng), path.stem, output)
    return output, written


def augment_file(image: Image.Image | None, name: str, output_directory: str | os.PathLike,
                 options: AugmentOptions, rng: random.Random | None = None) -> list[Path]:
    """Augment one image into `<output_directory>/<name>_id_<i>.png`; the folder is created if needed."""
    if image is None:
        raise UserError("No input image; put an image in Input Image first")
    if not isinstance(image, Image.Image):
        raise UserError(f"Input Image must be a PIL image (got {type(image).__name__})")
    stem = (name or "").strip()
    if not stem:
        raise UserError("Output name is empty; enter a name for the new images")
    if "/" in stem or "\\" in stem or (os.altsep and os.altsep in stem) or "\0" in stem:
        raise UserError(f"Output name {stem!r} must be a plain file name, without folders; "
                        "put the folder in Output directory")
    if Path(stem).suffix.lower() in IMAGE_EXTENSIONS:  # "cat.png" → cat_id_0.png, not cat.png_id_0.png
        stem = Path(stem).stem
    if stem in ("", ".", ".."):
        raise UserError(f"Output name {name!r} is not a usable file name")
    text = str(output_directory or "").strip()
    if not text:
        raise UserError("Output directory is empty; enter the folder to write the images to")
    output = Path(text).expanduser()
    _make_dir(output)
    rng = rng if rng is not None else random.Random()
    return _save_all(variants(image, options, rng), stem, output)


def summary(paths: Sequence[str | os.PathLike]) -> str:
    """One line for the UI message box."""
    paths = [Path(p) for p in paths]
    if not paths:
        return "No images written (number of images is 0)"
    folders = {p.parent for p in paths}
    where = str(paths[0].parent) if len(folders) == 1 else f"{len(folders)} folders"
    return f"Wrote {len(paths)} image{'s' if len(paths) != 1 else ''} to {where}"


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create the output folder {folder}: {err.strerror or err}") from None


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGBA")  # phone photos: apply the EXIF rotation
    except (OSError, Image.DecompressionBombError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable image ({reason})") from None


def _next_id(folder: Path, stem: str) -> int:
    pattern = re.compile(re.escape(stem) + r"_id_(\d+)\.png", re.IGNORECASE)
    ids = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return max(ids) + 1 if ids else 0


def _save_all(images: list[Image.Image], stem: str, folder: Path) -> list[Path]:
    if not images:
        return []
    index = _next_id(folder, stem)
    written = []
    for image in images:
        while True:
            target = folder / f"{stem}_id_{index}.png"
            index += 1
            if _write_new(image, target):
                written.append(target)
                break
    return written


def _write_new(image: Image.Image, target: Path) -> bool:
    """Write `image` as PNG to `target` atomically; False (nothing written) if `target` is taken.

    The name is created exclusively at the rename (`fileio.atomic_path(overwrite=False)`), so a file that appears
    while we write — another run, another thread — is never replaced: we move on to the next number."""
    if target.exists():  # cheap early skip; the exclusive create below is what guarantees it
        return False
    try:
        with atomic_path(target, overwrite=False) as tmp:
            image.save(tmp, format="PNG")  # the temporary name ends in .tmp: say the format
        return True
    except FileExistsError:
        return False
    except OSError as err:
        raise UserError(f"Cannot write {target}: {err.strerror or err}") from None
