"""The Image sub-tab's augmentation: rotated / downscaled variants on a transparent canvas of the original size."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from trainer.errors import UserError
from trainer.imagetools.augment import (
    AugmentOptions,
    augment_directory,
    augment_file,
    summary,
    variants,
)

W, H = 64, 48


def solid(color=(200, 40, 40), size=(W, H), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def pattern() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB")


def alpha(img: Image.Image) -> np.ndarray:
    return np.asarray(img.getchannel("A"))


def test_variants_keep_the_original_size_and_are_rgba():
    out = variants(pattern(), AugmentOptions(count=6), random.Random(1))
    assert len(out) == 6
    for img in out:
        assert img.size == (W, H)
        assert img.mode == "RGBA"


class SmallestScale(random.Random):
    """uniform() always returns its lower bound, so every variant is downscaled by exactly min_scale."""

    def uniform(self, a, b):
        return a


def test_downscaled_variants_have_transparent_pixels():
    opts = AugmentOptions(count=3, change_angle=False, min_scale=0.5)
    for img in variants(solid(), opts, SmallestScale(2)):
        a = alpha(img)
        assert img.size == (W, H)
        assert (a == 255).sum() == (W // 2) * (H // 2)
        assert (a == 0).sum() == W * H - (W // 2) * (H // 2)


def test_random_downscale_leaves_transparency_in_most_variants():
    opts = AugmentOptions(count=8, change_angle=False, min_scale=0.3)
    out = variants(solid(), opts, random.Random(2))
    assert sum((alpha(img) == 0).any() for img in out) >= 6


def test_rotated_variants_have_transparent_corners_and_visible_content():
    opts = AugmentOptions(count=5, change_scale=False, max_angle=60)
    for img in variants(solid(), opts, random.Random(3)):
        a = alpha(img)
        assert (a == 0).any() and (a > 0).any()


def test_no_change_reproduces_the_image():
    src = pattern()
    (img,) = variants(src, AugmentOptions(count=1, change_angle=False, change_scale=False), random.Random(0))
    assert np.array_equal(np.asarray(img), np.asarray(src.convert("RGBA")))


def test_same_seed_same_images_different_seed_differs():
    opts = AugmentOptions(count=4)
    a = [np.asarray(i) for i in variants(pattern(), opts, random.Random(42))]
    b = [np.asarray(i) for i in variants(pattern(), opts, random.Random(42))]
    c = [np.asarray(i) for i in variants(pattern(), opts, random.Random(43))]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("side,edge", [
    ("left", (slice(None), 0)), ("right", (slice(None), W - 1)),
    ("top", (0, slice(None))), ("bottom", (H - 1, slice(None))),
])
def test_fix_side_is_flush(side, edge):
    opts = AugmentOptions(count=4, change_angle=False, min_scale=0.3, fix_side=side)
    for img in variants(solid(), opts, random.Random(5)):
        assert (alpha(img)[edge] == 255).any()


def test_fix_side_left_with_rotation_touches_column_zero():
    opts = AugmentOptions(count=5, max_angle=45, min_scale=0.5, fix_side="left")
    for img in variants(solid(), opts, random.Random(6)):
        a = alpha(img)
        assert (a[:, 0] > 0).any()


def test_rotation_larger_than_canvas_is_fitted():
    # A long thin image rotated 90° is far taller than the canvas; it must be scaled down, never cropped.
    src = solid(size=(60, 10))
    opts = AugmentOptions(count=3, max_angle=90, change_scale=False)
    for img in variants(src, opts, random.Random(7)):
        assert img.size == (60, 10)
        assert (alpha(img) > 0).any()


def test_rgba_input_keeps_its_transparency():
    src = solid((10, 200, 10, 0), mode="RGBA")
    (img,) = variants(src, AugmentOptions(count=1), random.Random(0))
    assert (alpha(img) == 0).all()


def test_directory_mode_writes_png_into_modified(tmp_path):
    solid().save(tmp_path / "red_dress.png")
    solid((0, 0, 255)).save(tmp_path / "blue.JPG")
    pattern().save(tmp_path / "x.webp")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    solid().save(tmp_path / "sub" / "nested.png")
    out, written = augment_directory(tmp_path, AugmentOptions(count=3), random.Random(0))
    assert out == tmp_path / "modified"
    assert len(written) == 9
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in written)
    assert "blue_id_0.png" in names  # uppercase .JPG picked up
    assert not any(n.startswith("nested") for n in names)  # not recursive
    for p in written:
        assert p.parent == out
        assert p.name.count(".") == 1 and ".." not in p.name
        with Image.open(p) as img:
            assert img.format == "PNG" and img.mode == "RGBA" and img.size == (W, H)
    assert sorted(n for n in names if n.startswith("red_dress")) == [f"red_dress_id_{i}.png" for i in range(3)]


def test_directory_mode_continues_numbering_and_never_overwrites(tmp_path):
    solid().save(tmp_path / "a.png")
    _, first = augment_directory(tmp_path, AugmentOptions(count=2), random.Random(0))
    before = {p: p.read_bytes() for p in first}
    _, second = augment_directory(tmp_path, AugmentOptions(count=2), random.Random(1))
    assert [p.name for p in second] == ["a_id_2.png", "a_id_3.png"]
    assert all(p.read_bytes() == data for p, data in before.items())
    assert len(list((tmp_path / "modified").iterdir())) == 4  # no temporary files left behind


def test_numbering_continues_after_the_highest_id(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cat_id_7.png").write_bytes(b"keep")
    (out / "catalog_id_20.png").write_bytes(b"other stem")
    written = augment_file(solid(), "cat", out, AugmentOptions(count=2), random.Random(0))
    assert [p.name for p in written] == ["cat_id_8.png", "cat_id_9.png"]
    assert (out / "cat_id_7.png").read_bytes() == b"keep"


def test_file_mode_creates_the_folder_and_names_files(tmp_path):
    out = tmp_path / "new" / "dir"
    written = augment_file(solid(mode="RGBA"), "girl.png", out, AugmentOptions(count=4), random.Random(0))
    assert [p.name for p in written] == [f"girl_id_{i}.png" for i in range(4)]
    assert all(p.is_file() for p in written)
    assert summary(written) == f"Wrote 4 images to {out}"


def test_summary_lines():
    assert summary([]).startswith("No images written")
    assert summary(["/x/a_id_0.png"]) == "Wrote 1 image to /x"


def test_count_zero_writes_nothing(tmp_path):
    solid().save(tmp_path / "a.png")
    _, written = augment_directory(tmp_path, AugmentOptions(count=0), random.Random(0))
    assert written == []


@pytest.mark.parametrize("kwargs", [
    {"count": -1}, {"count": 1001}, {"count": 2.5}, {"count": "5"},
    {"max_angle": -1}, {"max_angle": 181}, {"max_angle": float("nan")},
    {"min_scale": 0}, {"min_scale": 1.5}, {"min_scale": -0.1},
    {"fix_side": "middle"}, {"fix_side": None},
])
def test_bad_options_raise_user_error(kwargs):
    with pytest.raises(UserError) as err:
        AugmentOptions(**kwargs)
    assert "\n" not in str(err.value)


def test_options_normalise_ui_values():
    opts = AugmentOptions(count=5.0, fix_side=" Left ")
    assert opts.count == 5 and isinstance(opts.count, int)
    assert opts.fix_side == "left"


def test_directory_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        augment_directory(tmp_path / "missing", AugmentOptions())
    with pytest.raises(UserError, match="No images"):
        augment_directory(tmp_path, AugmentOptions())
    with pytest.raises(UserError, match="empty"):
        augment_directory("  ", AugmentOptions())


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        augment_directory(tmp_path, AugmentOptions(count=1))


@pytest.mark.parametrize("image,name,match", [
    (None, "x", "No input image"),
    (solid(), "", "Output name is empty"),
    (solid(), "   ", "Output name is empty"),
    (solid(), "a/b", "plain file name"),
    (solid(), "..\\b", "plain file name"),
])
def test_file_mode_errors(tmp_path, image, name, match):
    with pytest.raises(UserError, match=match):
        augment_file(image, name, tmp_path, AugmentOptions(count=1))
    assert list(tmp_path.iterdir()) == []


def test_file_mode_empty_output_directory():
    with pytest.raises(UserError, match="Output directory is empty"):
        augment_file(solid(), "x", "", AugmentOptions(count=1))
