"""Buckets (upstream's worked examples, exactly), image discovery, captions, fitting, batches."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from trainer.data.batches import BucketBatches, repeat_items
from trainer.data.buckets import main_buckets, nearest_bucket, sub_bucket_order, sub_buckets
from trainer.data.images import caption_for, find_images, fit_to_bucket, open_image
from trainer.data.samples import build_samples
from trainer.errors import UserError
from trainer.settings import validate


@pytest.mark.parametrize("size,step,minimum,expected_main,expected_sub", [
    ((512, 512), 256, 512, [(512, 512)], []),
    ((768, 512), 128, 512, [(512, 768), (512, 640), (512, 512), (640, 512), (768, 512)], []),
    ((768, 512), 128, 256,
     [(384, 768), (512, 768), (512, 640), (512, 512), (640, 512), (768, 512), (768, 384)],
     [(256, 512), (384, 640), (256, 384), (384, 512), (384, 384), (256, 256), (512, 384), (384, 256), (640, 384),
      (512, 256)]),
    ((1024, 1024), 256, 512,
     [(512, 1024), (768, 1024), (1024, 1024), (1024, 768), (1024, 512)],
     [(512, 768), (768, 768), (512, 512), (768, 512)]),
])
def test_bucket_worked_examples(size, step, minimum, expected_main, expected_sub):
    assert main_buckets(size, step, minimum, 2) == expected_main
    assert sub_buckets(size, step, minimum, 2) == expected_sub


def test_nearest_and_sub_order():
    buckets = main_buckets((768, 512), 128, 512, 2)
    assert buckets[nearest_bucket(1200, 800, buckets)] == (768, 512)
    assert buckets[nearest_bucket(500, 1000, buckets)] == (512, 768)
    subs = sub_buckets((768, 512), 128, 256, 2)
    picks = [subs[i] for i in sub_bucket_order(600, 600, subs, 3)]
    assert picks[:2] == [(384, 384), (256, 256)] and picks[2] != picks[0]


def _image(path, size=(80, 60), mode="RGB", color=(200, 10, 10)):
    Image.new(mode, size, color if mode == "RGB" else (*color, 255)).save(path)


def test_discovery_is_recursive_and_case_insensitive(tmp_path):
    (tmp_path / "sub").mkdir()
    _image(tmp_path / "a.JPG")
    _image(tmp_path / "sub" / "b.png")
    _image(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("x")
    assert [f.path.name for f in find_images(tmp_path)] == ["a.JPG", "b.png"]


def test_captions_precedence_and_tags(tmp_path):
    _image(tmp_path / "red_dress_id_3.png")
    (tmp_path / "red_dress_id_3.txt").write_bytes("\ufeffa red dress".encode("utf-8"))
    (tmp_path / "red_dress_id_3.caption").write_text("ignored", encoding="utf-8")
    [f] = find_images(tmp_path)
    assert caption_for(f, "sks", False) == "sks, a red dress"
    assert caption_for(f, "", False) == "a red dress"  # no leading ", " (upstream wrote one)
    assert caption_for(f, "sks", True) == "sks, red,dress"
    (tmp_path / "red_dress_id_3.txt").unlink()
    assert caption_for(f, "", False) == "ignored"
    (tmp_path / "red_dress_id_3.caption").unlink()
    assert caption_for(f, "sks", False) == "sks"


def test_fit_to_bucket_crops_and_masks(tmp_path):
    wide = Image.new("RGB", (200, 100))
    image, mask = fit_to_bucket(wide, 64, 64)
    assert image.size == (64, 64) and mask is None
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 32, 64))
    image, mask = fit_to_bucket(rgba, 64, 64)
    assert mask.shape == (1, 8, 8) and mask[0, :, :4].all() and not mask[0, :, 4:].any()
    assert fit_to_bucket(Image.new("RGB", (32, 32)), 64, 64, disable_upscale=True) is None


def test_samples_with_mirror_and_sub_images(tmp_path):
    _image(tmp_path / "a.png", size=(128, 128))
    s = validate({"image_size(height, width)": "128", "image_min_length": "64", "image_buckets_step": "64",
                  "image_mirroring": True, "sub_image_num": "1"})
    samples, tags = build_samples(find_images(tmp_path), s)
    assert [(x.bucket, x.mirrored) for x in samples] == [((128, 128), False), ((128, 128), True),
                                                         ((64, 64), False), ((64, 64), True)]


def test_corrupt_image_is_one_clear_line(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="x.png: cannot read the image"):
        open_image(tmp_path / "x.png")


def test_batches_cover_every_item_each_epoch():
    batches = BucketBatches([5, 3], 2, random.Random(0))
    seen = {0: [], 1: []}
    for _ in range(5):  # ceil(5/2) + ceil(3/2) = 5 batches per epoch
        bucket, items = next(batches)
        seen[bucket] += items
    assert sorted(seen[0]) == [0, 1, 2, 3, 4] and sorted(seen[1]) == [0, 1, 2]
    next(batches)
    assert batches.epoch == 1


def test_repeat_items():
    assert repeat_items(3, 2, 2) == [0, 1, 2, 0, 1, 2]
    assert len(repeat_items(2, 1, 5)) == 10  # batch larger than the data: repeated, not refused
