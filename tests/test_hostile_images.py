"""Every image mode Pillow opens decodes to the 8-bit RGB(A) it looks like, or is refused by name (issue 15, item 6)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from trainer.data.images import open_image
from trainer.errors import UserError

RAMP16 = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))  # 4 x 256, 0..65535


def _save(tmp_path, img, name="x.png", **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def _reds(img):
    return np.asarray(img)[..., 0].astype(int)


def test_16_bit_greyscale_png_follows_the_ramp(tmp_path):
    path = _save(tmp_path, Image.fromarray(RAMP16))
    with Image.open(path) as raw:
        assert raw.mode in ("I;16", "I")  # depends on the Pillow version
    img = open_image(path)
    assert img.mode == "RGB"
    row = _reds(img)[0]
    assert row[0] == 0 and row[-1] == 255
    assert abs(int(row[128]) - 128) <= 2  # mid-grey, not white
    assert np.all(np.diff(row) >= 0) and len(set(row.tolist())) > 200
    assert np.abs(row - np.arange(256)).max() <= 1
    channels = np.asarray(img).astype(int)
    assert (channels[..., 0] == channels[..., 1]).all() and (channels[..., 1] == channels[..., 2]).all()


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16_bit_modes_in_memory(tmp_path, mode, monkeypatch):
    raw = RAMP16.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    src = Image.frombytes(mode, (RAMP16.shape[1], RAMP16.shape[0]), raw)
    assert src.mode == mode
    monkeypatch.setattr(Image, "open", _opener(src))
    row = _reds(open_image(tmp_path / "mem.png"))[0]
    assert abs(int(row[128]) - 128) <= 2 and row[-1] == 255 and row[0] == 0


def _opener(img):
    class _Ctx:
        def __enter__(self):
            return img

        def __exit__(self, *exc):
            return False

    return lambda *a, **k: _Ctx()


def test_32_bit_integer_16_bit_data(tmp_path):
    path = _save(tmp_path, Image.fromarray(RAMP16.astype(np.int32)), "i.tif")
    with Image.open(path) as raw:
        assert raw.mode == "I"
    row = _reds(open_image(path))[0]
    assert abs(int(row[128]) - 128) <= 2 and row[-1] == 255


def test_32_bit_integer_full_range_scales_by_max(tmp_path):
    data = np.tile(np.linspace(0, 4_000_000, 256).astype(np.int32), (2, 1))
    path = _save(tmp_path, Image.fromarray(data), "i.tif")
    row = _reds(open_image(path))[0]
    assert row[0] == 0 and row[-1] == 255 and abs(int(row[128]) - 128) <= 2


def test_float_unit_range(tmp_path):
    data = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (2, 1))
    path = _save(tmp_path, Image.fromarray(data), "f.tif")
    with Image.open(path) as raw:
        assert raw.mode == "F"
    img = open_image(path)
    assert img.mode == "RGB"
    row = _reds(img)[0]
    assert row[0] == 0 and row[-1] == 255 and abs(int(row[128]) - 128) <= 2


def test_float_byte_range_is_clipped(tmp_path):
    data = np.array([[-5.0, 0.0, 100.0, 255.0, 400.0, np.nan]], dtype=np.float32)
    path = _save(tmp_path, Image.fromarray(data), "f.tif")
    assert _reds(open_image(path))[0].tolist() == [0, 0, 100, 255, 255, 0]


def test_cmyk_becomes_rgb(tmp_path):
    path = _save(tmp_path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "c.jpg", quality=100)
    img = open_image(path)
    assert img.mode == "RGB"
    r, g, b = np.asarray(img)[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60  # red


def test_palette_with_transparency_becomes_rgba(tmp_path):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    path = _save(tmp_path, pal, "p.png", transparency=0)
    img = open_image(path)
    assert img.mode == "RGBA"
    a = np.asarray(img)
    assert a[0, 0].tolist() == [0, 255, 0, 255] and a[1, 1, 3] == 0


def test_palette_without_transparency_is_rgb(tmp_path):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    img = open_image(_save(tmp_path, pal, "p.png"))
    assert img.mode == "RGB" and np.asarray(img)[0, 0].tolist() == [10, 20, 30]


def test_la_becomes_rgba(tmp_path):
    img = open_image(_save(tmp_path, Image.new("LA", (4, 4), (200, 50)), "la.png"))
    assert img.mode == "RGBA" and np.asarray(img)[0, 0].tolist() == [200, 200, 200, 50]


def test_greyscale_with_transparency_becomes_rgba(tmp_path):
    grey = Image.new("L", (4, 4), 7)
    grey.putpixel((0, 0), 9)
    img = open_image(_save(tmp_path, grey, "l.png", transparency=7))
    assert img.mode == "RGBA"
    a = np.asarray(img)
    assert a[0, 0].tolist() == [9, 9, 9, 255] and a[1, 1, 3] == 0


def test_16_bit_greyscale_with_transparency(tmp_path, monkeypatch):
    src = Image.fromarray(RAMP16)
    src.info["transparency"] = 0
    monkeypatch.setattr(Image, "open", _opener(src))
    img = open_image(tmp_path / "mem.png")
    assert img.mode == "RGBA"
    a = np.asarray(img)
    assert a[0, 0, 3] == 0 and a[0, 1, 3] == 255 and abs(int(a[0, 128, 0]) - 128) <= 2


@pytest.mark.parametrize("mode,value,expected", [
    ("1", 1, [255, 255, 255]), ("L", 77, [77, 77, 77]), ("RGB", (1, 2, 3), [1, 2, 3]),
])
def test_plain_modes_unchanged(tmp_path, mode, value, expected):
    img = open_image(_save(tmp_path, Image.new(mode, (4, 4), value), "x.png"))
    assert img.mode == "RGB" and np.asarray(img)[0, 0].tolist() == expected


def test_rgba_stays_rgba(tmp_path):
    img = open_image(_save(tmp_path, Image.new("RGBA", (4, 4), (1, 2, 3, 4)), "x.png"))
    assert img.mode == "RGBA" and np.asarray(img)[0, 0].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("content", [b"not an image", b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_unreadable_file_is_refused_by_name(tmp_path, content):
    path = tmp_path / "broken image.png"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        open_image(path)
    message = str(info.value)
    assert "broken image.png" in message and "\n" not in message and "cannot read" in message


def test_truncated_png_is_refused_by_name(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(UserError, match="cut.png: cannot read the image"):
        open_image(path)


def test_unsupported_mode_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "open", _opener(Image.new("LAB", (4, 4))))
    try:
        img = open_image(tmp_path / "lab.tif")
    except UserError as err:
        assert "lab.tif" in str(err) and "\n" not in str(err)
    else:
        assert img.mode in ("RGB", "RGBA")
