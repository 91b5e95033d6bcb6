"""Decoding every format users bring, and refusing broken files with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from alexkit.data import decode
from alexkit.data.decode import UnreadableImage, decode_image, sniff
from alexkit.errors import DataError

BLOCKS = np.zeros((48, 64, 3), np.uint8)
BLOCKS[:, :16] = (200, 30, 30)
BLOCKS[:, 16:32] = (30, 200, 60)
BLOCKS[:, 32:48] = (40, 60, 220)
BLOCKS[:, 48:] = (250, 250, 250)


def _noise(h=160, w=200, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_baseline_and_progressive_jpeg_match_the_original(tmp_path):
    for progressive in (False, True):
        path = tmp_path / f"p{progressive}.JPG"  # extension case never matters here
        Image.fromarray(BLOCKS).save(path, quality=95, progressive=progressive)
        out = decode_image(path)
        assert out.shape == (48, 64, 3) and out.dtype == np.uint8
        assert np.abs(out[24, 8::16].astype(int) - BLOCKS[24, 8::16]).max() <= 6
        assert sniff(str(path)).route == decode.ROUTE_JPEG


def test_cmyk_jpeg_colours_close_to_rgb_original(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(BLOCKS).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    out = decode_image(path)
    assert out.shape == (48, 64, 3)
    assert np.abs(out[24, 8::16].astype(int) - BLOCKS[24, 8::16]).max() <= 8


def test_16bit_png_scaled_by_actual_bit_range(tmp_path):
    # A 12-bit X-ray in a 16-bit container: 4095 must become ~255, not 15.
    ramp = np.linspace(0, 4095, 64 * 48).reshape(48, 64).astype(np.uint16)
    path = tmp_path / "xray.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    assert sniff(str(path)).route == decode.ROUTE_PNG16
    out = decode_image(path)
    assert out.shape == (48, 64, 3)
    assert out.max() == 255 and out.min() == 0
    assert out[24, 32, 0] == round(int(ramp[24, 32]) * 255 / 4095)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_scale_16bit_uses_bit_length():
    assert decode.scale_16bit(np.array([4095], np.uint16))[0] == 255
    assert decode.scale_16bit(np.array([4096], np.uint16))[0] == round(4096 * 255 / 8191)
    assert decode.scale_16bit(np.array([65535], np.uint16))[0] == 255
    assert decode.scale_16bit(np.array([200], np.uint16))[0] == 200  # 8-bit range kept


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA"])
def test_png_modes_become_rgb(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    Image.fromarray(BLOCKS).convert(mode).save(path)
    out = decode_image(path)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(BLOCKS).convert(mode).convert("RGB"))
    np.testing.assert_array_equal(out, expected)
    if mode in ("L", "LA"):
        # grayscale replicated to three identical channels
        assert (out[..., 0] == out[..., 2]).all()
        assert out[24, 8, 0] == round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)


def test_animated_gif_first_frame_bmp_webp_tiff(tmp_path):
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 240)]
    gif = tmp_path / "a.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert Image.open(gif).n_frames == 2
    out = decode_image(gif)
    assert out.shape == (20, 30, 3) and abs(int(out.mean()) - 10) <= 2
    for ext, fmt in ((".bmp", "BMP"), (".webp", "WEBP"), (".tif", "TIFF")):
        path = tmp_path / f"x{ext}"
        Image.fromarray(BLOCKS).save(
            path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {})
        )
        info = sniff(str(path))
        assert info.format == fmt and (info.width, info.height) == (64, 48)
        np.testing.assert_array_equal(decode_image(path), BLOCKS)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(_noise(40, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes())
    info = sniff(str(path))
    assert (info.route, info.orientation) == (decode.ROUTE_JPEG_EXIF, 6)
    out = decode_image(path)
    assert out.shape == (80, 40, 3)
    upright = np.asarray(Image.open(path).convert("RGB").transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(out, upright)


def _truncated_jpeg(tmp_path):
    path = tmp_path / "trunc.jpg"
    buf = io.BytesIO()
    Image.fromarray(_noise()).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * 0.7)])  # cut inside the scan data
    return path


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("zero.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image\n", "not an image"),
        ("junk.png", bytes(range(256)) * 4, "not an image"),
    ],
)
def test_unreadable_files_raise_with_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImage) as err:
        decode_image(path)
    assert reason in err.value.reason
    assert isinstance(err.value, DataError) and str(path) in str(err.value)


def test_truncated_jpeg_and_png_detected_from_tail(tmp_path):
    path = _truncated_jpeg(tmp_path)
    info = sniff(str(path))
    assert not info.ok and info.reason == "truncated JPEG (no end-of-image marker)"
    assert (info.width, info.height) == (200, 160)
    png = tmp_path / "t.png"
    buf = io.BytesIO()
    Image.fromarray(_noise()).save(buf, format="PNG")
    png.write_bytes(buf.getvalue()[:-200])
    with pytest.raises(UnreadableImage, match="truncated PNG"):
        decode_image(png)


def test_missing_file_and_bomb_guard(tmp_path, monkeypatch):
    with pytest.raises(UnreadableImage, match="file not found"):
        decode_image(tmp_path / "nope.jpg")
    path = tmp_path / "big.png"
    Image.fromarray(_noise(100, 100)).save(path)
    monkeypatch.setenv("ALEXKIT_MAX_PIXELS", "9999")
    with pytest.raises(UnreadableImage, match="too large: 100x100"):
        decode_image(path)
    assert decode_image(path, limit=10_000).shape == (100, 100, 3)


def test_hash_in_file_name_is_a_plain_file(tmp_path):
    path = tmp_path / "scan#1.png"
    Image.fromarray(BLOCKS).save(path)
    assert decode.split_item(str(path)) == (str(path), "")
    np.testing.assert_array_equal(decode_image(path), BLOCKS)
