"""Decode/validate/crop/resize primitives shared by ingest and scoring."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sparkvision.data import images


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 40, h: int = 30) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None].repeat(w, 1)
    return Image.fromarray(np.concatenate([x, y, 255 - x], axis=2))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", images.ZERO_BYTES),
        (b"hello, I am a text file\n", images.NOT_AN_IMAGE),
        (_encode(_gradient(), "JPEG")[:300], images.TRUNCATED),
        (_encode(_gradient().convert("CMYK"), "JPEG"), images.UNEXPECTED_MODE),
        (_encode(_gradient(8, 8), "PNG"), images.UNEXPECTED_SIZE),
    ],
    ids=["zero", "text", "truncated", "cmyk", "tiny"],
)
def test_decode_rejects_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(images.ImageError) as info:
        images.decode_image(data, min_side=16)
    assert info.value.reason == reason
    assert info.value.message


def test_expected_size_names_both_sizes() -> None:
    with pytest.raises(images.ImageError, match="expected 178x218, found 40x30"):
        images.decode_image(_encode(_gradient(), "PNG"), expected_size=(178, 218))


def test_exif_orientation_is_applied() -> None:
    img = _gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = _encode(img, "JPEG", exif=exif.tobytes(), quality=95)
    assert images.decode_image(data).size == (30, 40)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_prepare_image_any_mode_gives_rgb_floats(mode: str) -> None:
    data = _encode(_gradient(60, 40).convert(mode), "PNG")
    arr = images.prepare_image(data, 16)
    assert arr.shape == (16, 16, 3) and arr.dtype == np.float32
    assert 0.0 <= arr.min() and arr.max() <= 1.0 and arr.std() > 0.01


def test_rgba_transparency_composites_on_white() -> None:
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert np.asarray(images.to_rgb(clear)).min() == 255


@pytest.mark.parametrize(
    ("w", "h", "mode", "expected"),
    [
        (178, 218, "center_square", images.Box(0, 20, 178, 198)),
        (300, 100, "center_square", images.Box(100, 0, 200, 100)),
        (178, 218, "none", images.Box(0, 0, 178, 218)),
    ],
)
def test_crop_box(w: int, h: int, mode: images.CropMode, expected: images.Box) -> None:
    assert images.crop_box(w, h, mode) == expected


def test_bbox_crop_is_square_inside_image() -> None:
    box = images.crop_box(178, 218, "bbox", images.Box(50, 60, 130, 160))
    assert box.width == box.height and box.left >= 0 and box.bottom <= 218
    assert box.left <= 50 and box.right >= 130 and box.top <= 60 and box.bottom >= 160


def test_project_points_and_box_follow_the_crop() -> None:
    crop = images.Box(0, 20, 178, 198)
    pts = images.project_points(np.array([[89.0, 109.0], [0.0, 20.0]]), crop)
    np.testing.assert_allclose(pts, [[0.5, 0.5], [0.0, 0.0]])
    assert images.project_box(images.Box(-10, 0, 89, 109), crop) == [0.0, 0.0, 0.5, 0.5]


def test_png_roundtrip_is_lossless_and_deterministic() -> None:
    img = _gradient()
    a, b = images.encode_png(img), images.encode_png(img)
    assert a == b
    np.testing.assert_array_equal(images.decode_array(a), np.asarray(img))
    assert images.content_hash(a) == images.content_hash(b) != images.content_hash(a + b"x")


@pytest.mark.parametrize(("value", "grey"), [(0, 0), (32768, 128), (65535, 255)])
def test_sixteen_bit_grey_is_scaled_not_clipped(value: int, grey: int) -> None:
    data = _encode(Image.fromarray(np.full((20, 20), value, dtype=np.uint16)), "PNG")
    img = images.decode_image(data, allowed_modes=("I;16", "I"))
    assert np.asarray(images.to_rgb(img)).max() == grey  # PIL's own convert() gives 255 for all but 0
    rules = images.Rules(allowed_modes=("I;16", "I"), min_side=16)
    assert images.prepare_image(data, 16, rules=rules).max() == pytest.approx(grey / 255)


@pytest.mark.parametrize(
    ("rules", "data", "reason"),
    [
        (images.Rules(), _encode(_gradient(8, 8), "PNG"), images.UNEXPECTED_SIZE),
        (images.Rules(), _encode(_gradient().convert("CMYK"), "JPEG"), images.UNEXPECTED_MODE),
        (images.Rules(), _encode(_gradient().convert("LA"), "PNG"), images.UNEXPECTED_MODE),
        (images.Rules(min_side=50), _encode(_gradient(60, 40), "PNG"), images.UNEXPECTED_SIZE),
    ],
    ids=["tiny", "cmyk", "grey-alpha", "rules-min-side"],
)
def test_prepare_image_refuses_what_ingest_refuses(rules: images.Rules, data: bytes, reason: str) -> None:
    with pytest.raises(images.ImageError) as info:
        images.prepare_image(data, 16, rules=rules)
    assert info.value.reason == reason


def test_rules_of_a_config_and_of_a_dict_agree(cfg) -> None:
    rules = images.Rules.of(cfg.ingest)
    assert rules == images.Rules.of(rules.as_dict())
    assert rules.allowed_modes == tuple(cfg.ingest.allowed_modes) and rules.min_side == cfg.ingest.min_side
