"""Image decode, validation, crop, resize and encode: the one implementation used by
ingest (on executors), by the pyfunc models at scoring time and by the benchmarks.

Pure functions on bytes, PIL images and numpy arrays; no Spark here.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CropMode = Literal["center_square", "none", "bbox"]

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm")
"""File extensions (any case) read as images: by ingest (``folder``, ``celeba``) and by scoring."""

# Quarantine reason codes: stable strings, documented in README "Quarantine".
ZERO_BYTES = "zero_bytes"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
UNREADABLE = "unreadable"
UNEXPECTED_MODE = "unexpected_mode"
UNEXPECTED_SIZE = "unexpected_size"
MISSING_ANNOTATION = "missing_annotation"
MALFORMED_ANNOTATION = "malformed_annotation"
MISSING_IMAGE = "missing_image"
DUPLICATE_CONTENT = "duplicate_content"
UNSUPPORTED_EXTENSION = "unsupported_extension"
HIDDEN_FILE = "hidden_file"
BROKEN_LINK = "broken_link"
TOO_LARGE = "too_large"
REASONS = (
    ZERO_BYTES,
    NOT_AN_IMAGE,
    TRUNCATED,
    UNREADABLE,
    UNEXPECTED_MODE,
    UNEXPECTED_SIZE,
    MISSING_ANNOTATION,
    MALFORMED_ANNOTATION,
    MISSING_IMAGE,
    DUPLICATE_CONTENT,
    UNSUPPORTED_EXTENSION,
    HIDDEN_FILE,
    BROKEN_LINK,
    TOO_LARGE,
)
LISTING_REASONS = (UNSUPPORTED_EXTENSION, HIDDEN_FILE, BROKEN_LINK)
"""Reasons decided from the file listing alone (the file's bytes are never read)."""

ORIENTATION = 0x0112
"""The EXIF orientation tag (1: upright)."""

MAX_PIXELS = 89_478_485
"""Largest accepted ``width x height``: PIL's warning limit (PIL itself refuses only images twice
as large). Larger images are refused as ``too_large`` before their pixels are decoded
(decompression bombs)."""


@dataclass(frozen=True)
class Rules:
    """What an image must be to be used, shared by ingest (``IngestConfig``) and scoring (the model's meta).

    Attributes:
        allowed_modes: PIL modes accepted as decoded (others: ``unexpected_mode``).
        min_side: Smallest acceptable width and height (``unexpected_size``).
        expected_size: ``(width, height)`` every image must have; empty: any.
    """

    allowed_modes: tuple[str, ...] = ("RGB", "L", "RGBA", "P")
    min_side: int = 16
    expected_size: tuple[int, ...] = ()

    @classmethod
    def of(cls, values: object) -> Rules:
        """Rules from anything with ``allowed_modes``/``min_side``/``expected_size`` (a config or a dict)."""
        get = values.get if isinstance(values, dict) else lambda k, d: getattr(values, k, d)
        return cls(
            tuple(get("allowed_modes", cls.allowed_modes)),
            int(get("min_side", cls.min_side)),
            tuple(int(v) for v in get("expected_size", ()) or ()),
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (stored in a model's meta as ``image_rules``)."""
        return {"allowed_modes": list(self.allowed_modes), "min_side": self.min_side,
                "expected_size": list(self.expected_size)}  # fmt: skip


class ImageError(ValueError):
    """An input image cannot be used; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Box:
    """A pixel rectangle ``[left, top, right, bottom)`` in source image coordinates."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of the file bytes: the identity of an input in every table."""
    return hashlib.sha256(data).hexdigest()


def decode_image(
    data: bytes,
    allowed_modes: Sequence[str] = ("RGB", "L", "RGBA", "P"),
    min_side: int = 1,
    expected_size: Sequence[int] = (),
) -> Image.Image:
    """Decode and validate encoded image bytes, applying the EXIF orientation.

    Args:
        data: The file's bytes.
        allowed_modes: PIL modes accepted as they are decoded.
        min_side: Smallest acceptable width and height.
        expected_size: ``(width, height)`` the image must have after EXIF rotation; empty: any.

    Returns:
        The fully loaded image (not yet converted to RGB).

    Raises:
        ImageError: With reason zero_bytes, not_an_image, truncated, unreadable, too_large,
            unexpected_mode or unexpected_size.
    """
    if not data:
        raise ImageError(ZERO_BYTES, "file is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(TOO_LARGE, f"refused before decoding: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(NOT_AN_IMAGE, f"not a recognised image format (starts with {data[:8]!r})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a quarantine reason
        raise ImageError(_failure_reason(exc), f"cannot read the image header: {exc}") from None
    if img.width * img.height > MAX_PIXELS:
        raise ImageError(
            TOO_LARGE, f"{img.width}x{img.height} is more than {MAX_PIXELS} pixels (a decompression bomb?)"
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(_failure_reason(exc), f"{img.format} data cannot be decoded: {exc}") from None
    if img.mode not in allowed_modes:
        raise ImageError(UNEXPECTED_MODE, f"expected mode in {list(allowed_modes)}, found {img.mode}")
    try:
        if img.getexif().get(ORIENTATION, 1) != 1:  # exif_transpose copies even an upright image
            img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
        pass
    w, h = img.size
    if min(w, h) < min_side:
        raise ImageError(UNEXPECTED_SIZE, f"expected sides >= {min_side}px, found {w}x{h}")
    if expected_size and (w, h) != tuple(expected_size):
        raise ImageError(UNEXPECTED_SIZE, f"expected {expected_size[0]}x{expected_size[1]}, found {w}x{h}")
    return img


def _failure_reason(exc: BaseException) -> str:
    text = str(exc).lower()
    return TRUNCATED if any(k in text for k in ("truncated", "eof", "broken data")) else UNREADABLE


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any mode; transparency is composited on white, not dropped to black.

    16-bit and 32-bit grey (``I;16*``, ``I``) are scaled from 0..65535 to 0..255, not clipped
    (PIL's own conversion clips every value above 255 to white); float (``F``) images are
    taken as 0..1 when their maximum is at most 1, else as 0..255.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            scale = 255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0
        grey = np.clip(np.nan_to_num(arr * scale), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def crop_box(width: int, height: int, mode: CropMode, bbox: Box | None = None) -> Box:
    """The source rectangle to crop before resizing.

    ``center_square`` takes the largest centred square; ``bbox`` a square around ``bbox``
    enlarged by 25% and clipped to the image (falls back to ``center_square`` without one);
    ``none`` the whole image.
    """
    if mode == "none":
        return Box(0, 0, width, height)
    if mode == "bbox" and bbox is not None:
        side = min(max(bbox.width, bbox.height) * 1.25, width, height)
        cx = (bbox.left + bbox.right) / 2
        cy = (bbox.top + bbox.bottom) / 2
        left = min(max(cx - side / 2, 0), width - side)
        top = min(max(cy - side / 2, 0), height - side)
        return Box(round(left), round(top), round(left) + round(side), round(top) + round(side))
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return Box(left, top, left + side, top + side)


def crop_resize(img: Image.Image, box: Box, size: int) -> Image.Image:
    """Crop ``box`` and resize to ``size`` x ``size`` (bilinear with antialiasing)."""
    region = (int(box.left), int(box.top), int(box.right), int(box.bottom))
    return img.resize((size, size), Image.Resampling.BILINEAR, box=region, reducing_gap=None)


def project_points(points: np.ndarray, box: Box) -> np.ndarray:
    """Map ``(N, 2)`` source pixel coordinates into ``[0, 1]`` coordinates of the crop ``box``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.empty_like(pts)
    out[:, 0] = (pts[:, 0] - box.left) / max(box.width, 1e-9)
    out[:, 1] = (pts[:, 1] - box.top) / max(box.height, 1e-9)
    return out


def project_box(b: Box, crop: Box) -> list[float]:
    """Normalised ``[x_min, y_min, x_max, y_max]`` of ``b`` inside ``crop``, clipped to [0, 1]."""
    pts = project_points(np.array([[b.left, b.top], [b.right, b.bottom]]), crop)
    return [float(v) for v in np.clip(pts, 0.0, 1.0).reshape(-1)]


def encode_png(img: Image.Image, compress_level: int = 1) -> bytes:
    """Lossless PNG bytes (deterministic for the same pixels and level)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_array(data: bytes) -> np.ndarray:
    """Decode stored image bytes to a ``uint8`` array of shape ``(H, W, C)``."""
    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def prepare_image(data: bytes, size: int, crop: CropMode = "center_square", rules: Rules | None = None) -> np.ndarray:
    """Bytes of any common image → ``float32`` RGB array ``(size, size, 3)`` in ``[0, 1]``.

    The exact preprocessing and validation of training data: the ingest ``rules`` (modes,
    minimum side; default ``Rules()``, ingest's defaults), EXIF rotation, RGB conversion, crop,
    resize. Scoring never predicts on an image ingest would have refused.

    Raises:
        ImageError: An unusable input, with the reason ingest would have quarantined it for.
    """
    r = rules or Rules()
    img = to_rgb(decode_image(data, r.allowed_modes, r.min_side, r.expected_size))
    img = crop_resize(img, crop_box(img.width, img.height, crop), size)
    return np.asarray(img, dtype=np.float32) / 255.0
