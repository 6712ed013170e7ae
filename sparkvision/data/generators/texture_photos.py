"""An MVTec AD category cut from real texture photos, with defects painted onto its test images.

No labelled defect photo can be downloaded here, but real textures can: photos of a material (a
rug, a weave, leather, gravel) from an installed package, or your own camera's frames. This cuts
square crops from them, the training crops and the test crops from separate bands of each photo
(the upper ``train_share`` of its rows, and the rest), so no test pixel was ever a training pixel,
and paints ``DEFECTS`` onto the test crops with pixel-exact masks::

    OUT/train/good/000.png
    OUT/test/good/000.png
    OUT/test/<defect>/000.png
    OUT/ground_truth/<defect>/000_mask.png     mode L, 0/255, same size

Each defect is drawn from the photo's own statistics (its local brightness and colours), so it is
as visible on dark leather as on a pale weave:

- ``hole``: an irregular opening, dark backing with a frayed darker rim;
- ``scratch``: a thin wandering line, lighter or darker than the texture;
- ``stain``: a soft-edged blob that tints and darkens what lies under it, texture still visible;
- ``strip``: a straight band where the texture is missing (a blurred, slightly darker smear);
- ``contamination``: a small blob of a foreign colour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sparkvision.data.generators.fabric import blob_mask, erode_mask, save_png

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

PhotoDefect = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
"""``(clean float32 (S, S, 3) image in [0, 1], rng) -> (defective image, boolean mask)``."""


def _scale(img: np.ndarray) -> float:
    return min(img.shape[:2]) / 256


def _soft(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` as a float alpha in [0, 1], blurred by ``radius`` pixels."""
    blurred = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(blurred, np.float32) / 255


def defect_hole(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An opening: dark backing (a fifth of the local brightness) with a frayed, darker rim."""
    h, w = img.shape[:2]
    mask = blob_mask(h, w, rng, rng.uniform(7, 15) * _scale(img), rng.uniform(0.8, 1.6), 0.45)
    out = img.copy()
    backing = img[mask].mean(axis=0) * rng.uniform(0.12, 0.25)
    out[mask] = backing + rng.normal(0, 0.015, (int(mask.sum()), 1)).astype(np.float32)
    rim = mask & ~erode_mask(mask, 2)
    out[rim] = img[rim] * 0.5
    return np.clip(out, 0, 1), mask


def defect_scratch(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A wandering line 2-4 px wide (at 256 px), lighter or darker than the texture around it."""
    h, w = img.shape[:2]
    s = _scale(img)
    length = rng.uniform(50, 120) * s
    steps = 24
    heading = rng.uniform(0, 2 * math.pi)
    x, y = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    points = [(x, y)]
    for _ in range(steps):
        heading += rng.normal(0, 0.12)
        x = float(np.clip(x + math.cos(heading) * length / steps, 2, w - 3))
        y = float(np.clip(y + math.sin(heading) * length / steps, 2, h - 3))
        points.append((x, y))
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).line(points, fill=255, width=max(2, int(round(rng.uniform(2, 4) * s))), joint="curve")
    soft = _soft(np.asarray(canvas) > 0, 0.8)
    mask = soft > 0.1  # the anti-aliased edge is part of the scratch; the faint rest is not painted
    alpha = np.where(mask, soft, 0.0)[..., None] * 0.85
    local = float(img[mask].mean())
    target = min(1.0, local + 0.35) if rng.random() < 0.5 or local < 0.3 else local * 0.35
    return np.clip(img * (1 - alpha) + target * alpha, 0, 1), mask


def defect_stain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A soft-edged blob that tints and darkens the texture under it (the texture shows through)."""
    h, w = img.shape[:2]
    mask = blob_mask(h, w, rng, rng.uniform(13, 26) * _scale(img), rng.uniform(0.7, 1.8), 0.35)
    tint = np.array([0.62, 0.5, 0.32], np.float32) * rng.uniform(0.8, 1.05)
    alpha = (0.45 + 0.45 * _soft(mask, 3 * _scale(img)))[..., None]
    stained = img * (1 - alpha) + img * tint * alpha
    out = img.copy()
    out[mask] = stained[mask]
    return out, mask


def defect_strip(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A straight band 5-10 px wide (at 256 px) across part of the image where the texture is gone:
    the image blurred beyond its grain and darkened a little."""
    h, w = img.shape[:2]
    s = _scale(img)
    width = int(round(rng.uniform(5, 10) * s))
    span = rng.uniform(0.35, 0.8)
    mask = np.zeros((h, w), bool)
    if rng.random() < 0.5:
        y0 = int(rng.integers(int(0.15 * h), int(0.85 * h) - width))
        x0 = int(rng.uniform(0, 1 - span) * w)
        mask[y0 : y0 + width, x0 : x0 + int(span * w)] = True
    else:
        x0 = int(rng.integers(int(0.15 * w), int(0.85 * w) - width))
        y0 = int(rng.uniform(0, 1 - span) * h)
        mask[y0 : y0 + int(span * h), x0 : x0 + width] = True
    smear = np.asarray(Image.fromarray(np.uint8(img * 255)).filter(ImageFilter.GaussianBlur(6 * s)), np.float32) / 255
    out = img.copy()
    out[mask] = smear[mask] * rng.uniform(0.75, 0.9)
    return out, mask


def defect_contamination(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small blob of a colour far from the texture's own (a fibre, paint or dirt of another hue)."""
    h, w = img.shape[:2]
    mask = blob_mask(h, w, rng, rng.uniform(5, 11) * _scale(img), rng.uniform(1.0, 2.2), 0.4)
    colours = np.array([(0.85, 0.15, 0.15), (0.15, 0.3, 0.85), (0.15, 0.65, 0.2), (0.9, 0.75, 0.1)], np.float32)
    mean = img.reshape(-1, 3).mean(axis=0)
    far = colours[int(np.argmax(np.abs(colours - mean).sum(axis=1)))]
    shade = img[mask].mean(axis=1, keepdims=True) / max(float(mean.mean()), 1e-3)
    out = img.copy()
    out[mask] = np.clip(far * (0.6 + 0.4 * shade), 0, 1)
    return out, mask


DEFECTS: dict[str, PhotoDefect] = {
    "hole": defect_hole,
    "scratch": defect_scratch,
    "stain": defect_stain,
    "strip": defect_strip,
    "contamination": defect_contamination,
}
"""Defect folder names and their painters."""


def list_photos(photos: str | Path | Sequence[str | Path]) -> list[Path]:
    """The image files of a folder (sorted, not recursive) or the given files.

    Raises:
        FileNotFoundError: When a path does not exist or a folder holds no image file.
    """
    given = [photos] if isinstance(photos, (str, Path)) else list(photos)
    found: list[Path] = []
    for p in map(Path, given):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in PHOTO_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: expected a texture photo or a folder of them, found nothing")
    if not found:
        raise FileNotFoundError(f"{given}: expected image files ({', '.join(PHOTO_SUFFIXES)}), found none")
    return found


def _crops(
    photo: np.ndarray, count: int, crop: int, rows: tuple[int, int], rng: np.random.Generator
) -> list[np.ndarray]:
    top, bottom = rows
    if bottom - top < crop or photo.shape[1] < crop:
        raise ValueError(f"expected a band of at least {crop}x{crop} px, found {photo.shape[1]}x{bottom - top}")
    out = []
    for _ in range(count):
        y = int(rng.integers(top, bottom - crop + 1))
        x = int(rng.integers(0, photo.shape[1] - crop + 1))
        out.append(photo[y : y + crop, x : x + crop])
    return out


def generate_mvtec_from_photos(
    photos: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    seed: int = 0,
    train_count: int = 100,
    test_count: int = 10,
    crop: int = 256,
    image_size: int = 256,
    train_share: float = 0.7,
    defects: Sequence[str] = tuple(DEFECTS),
) -> Path:
    """Write an MVTec AD category cut from real texture photos.

    Args:
        photos: A folder of photos of one material, or the files.
        out: Category folder to write (created).
        seed: Seed of the crop positions and the defects. Same seed and photos, same bytes.
        train_count: Defect-free training crops (``train/good``), drawn from the photos in turn.
        test_count: Crops in ``test/good`` and in ``test/<defect>`` for each of ``defects``.
        crop: Side of the crops in photo pixels.
        image_size: Side of the written images (crops are resized when it differs).
        train_share: Share of each photo's rows that training crops come from; test crops come
            from the rows below.
        defects: Names from ``DEFECTS``.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: No photo found.
        ValueError: An unknown defect, or a photo band smaller than one crop (naming the photo).
    """
    unknown = sorted(set(defects) - set(DEFECTS))
    if unknown:
        raise ValueError(f"unknown defect(s) {unknown}: expected names from {sorted(DEFECTS)}")
    out = Path(out)
    sources = list_photos(photos)
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(Image.open(p).convert("RGB"), np.float32) / 255 for p in sources]
    n_test = test_count * (1 + len(defects))

    def cut(count: int, train: bool) -> list[np.ndarray]:
        per = [count // len(arrays) + (i < count % len(arrays)) for i in range(len(arrays))]
        crops = []
        for path, photo, n in zip(sources, arrays, per, strict=True):
            split = int(photo.shape[0] * train_share)
            try:
                crops += _crops(photo, n, crop, (0, split) if train else (split, photo.shape[0]), rng)
            except ValueError as exc:
                side = "training" if train else "test"
                raise ValueError(f"{path}: {side} rows of the photo (train_share {train_share}): {exc}") from None
        order = rng.permutation(len(crops))
        return [crops[i] for i in order]

    def resized(a: np.ndarray) -> np.ndarray:
        if a.shape[0] == image_size:
            return a
        img = Image.fromarray(np.uint8(np.rint(a * 255))).resize((image_size, image_size), Image.Resampling.LANCZOS)
        return np.asarray(img, np.float32) / 255

    def png(a: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)

    for n, a in enumerate(cut(train_count, True)):
        save_png(out / "train" / "good" / f"{n:03d}.png", png(resized(a)), "RGB")
    tests = [resized(a) for a in cut(n_test, False)]
    for n, a in enumerate(tests[:test_count]):
        save_png(out / "test" / "good" / f"{n:03d}.png", png(a), "RGB")
    for d, name in enumerate(defects):
        for n in range(test_count):
            clean = tests[test_count * (1 + d) + n]
            for _ in range(20):  # a defect too small to see (clipped at a border) is drawn again
                img, mask = DEFECTS[name](clean, rng)
                if mask.sum() >= 12:
                    break
            save_png(out / "test" / name / f"{n:03d}.png", png(img), "RGB")
            save_png(out / "ground_truth" / name / f"{n:03d}_mask.png", mask.astype(np.uint8) * 255, "L")
    return out
