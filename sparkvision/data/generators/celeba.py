"""CelebA in its public on-disk layout, drawn deterministically from a seed.

Written under ``OUT`` (same names and line formats as the official download)::

    img_align_celeba/000001.jpg ...      178 x 218 RGB JPEG, 6-digit names
    list_attr_celeba.txt                 count, 40 names, "000001.jpg -1  1 ..." rows
    list_bbox_celeba.txt                 count, "image_id x_1 y_1 width height", rows
    list_landmarks_align_celeba.txt      count, 10 landmark column names, rows of 10 ints
    list_eval_partition.txt              "000001.jpg 0" (0 train, 1 val, 2 test)
    identity_CelebA.txt                  "000001.jpg 2880"

Partitions are identity-disjoint (about 80/10/10 of identities) and contiguous in file
number (train first), like the real set. In the official download ``list_bbox_celeba.txt``
refers to the in-the-wild ``img_celeba`` images; here the box is the face box of the
aligned image, because only aligned images are written.
"""

from __future__ import annotations

import concurrent.futures
import io
import math
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sparkvision.data.generators.face_painter import HEIGHT, WIDTH, render_face, sample_identity, sample_look
from sparkvision.data.schema import CELEBA_ATTRIBUTES, LANDMARK_NAMES

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
BBOX_FILE = "list_bbox_celeba.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"

BBOX_HEADER = "image_id x_1 y_1 width height"
LANDMARKS_HEADER = " ".join(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in ("x", "y"))
JPEG_QUALITY = 92
_MAX_CELEBA_IDENTITY = 10177

RANDOM_ATTRIBUTES: tuple[str, ...] = ("Attractive",)
"""Attributes written to ``list_attr_celeba.txt`` but not drawn: no model can learn them here."""
DRAWN_ATTRIBUTES: tuple[str, ...] = tuple(a for a in CELEBA_ATTRIBUTES if a not in RANDOM_ATTRIBUTES)
"""Attributes the painter draws (docs/datasets.md says how): what quality goals are judged on."""
REAL_CELEBA: dict[str, tuple[float, int]] = {
    "5_o_Clock_Shadow": (0.111, 91), "Arched_Eyebrows": (0.267, 79), "Attractive": (0.513, 81),
    "Bags_Under_Eyes": (0.205, 79), "Bald": (0.022, 98), "Bangs": (0.152, 95), "Big_Lips": (0.241, 68),
    "Big_Nose": (0.235, 78), "Black_Hair": (0.239, 88), "Blond_Hair": (0.148, 95), "Blurry": (0.051, 84),
    "Brown_Hair": (0.205, 80), "Bushy_Eyebrows": (0.142, 90), "Chubby": (0.058, 91), "Double_Chin": (0.047, 92),
    "Eyeglasses": (0.065, 99), "Goatee": (0.063, 95), "Gray_Hair": (0.042, 97), "Heavy_Makeup": (0.387, 90),
    "High_Cheekbones": (0.455, 87), "Male": (0.417, 98), "Mouth_Slightly_Open": (0.483, 92),
    "Mustache": (0.042, 95), "Narrow_Eyes": (0.115, 81), "No_Beard": (0.835, 95), "Oval_Face": (0.284, 66),
    "Pale_Skin": (0.043, 91), "Pointy_Nose": (0.277, 72), "Receding_Hairline": (0.080, 89),
    "Rosy_Cheeks": (0.066, 90), "Sideburns": (0.057, 96), "Smiling": (0.482, 92), "Straight_Hair": (0.208, 73),
    "Wavy_Hair": (0.320, 80), "Wearing_Earrings": (0.189, 82), "Wearing_Hat": (0.048, 99),
    "Wearing_Lipstick": (0.472, 93), "Wearing_Necklace": (0.123, 71), "Wearing_Necktie": (0.073, 93),
    "Young": (0.774, 87),
}  # fmt: skip
"""Real CelebA, per attribute: the share of its 202,599 images labelled 1 (``list_attr_celeba.txt``),
and the test accuracy in percent of a CNN trained on it: LNets+ANet in Z. Liu, P. Luo, X. Wang and
X. Tang, "Deep Learning Face Attributes in the Wild", ICCV 2015, Table 1 (CelebA row; mean 87).
``benchmarks/fidelity.py`` holds the generated faces against these figures."""
FAIR_ATTRIBUTES: tuple[str, ...] = tuple(
    a for a in DRAWN_ATTRIBUTES if 0.3 <= REAL_CELEBA[a][0] <= 0.7
)  # Heavy_Makeup, High_Cheekbones, Male, Mouth_Slightly_Open, Smiling, Wavy_Hair, Wearing_Lipstick
"""Drawn attributes whose real prevalence lies between 30 % and 70 %, where accuracy is a fair measure
(elsewhere always answering the majority label already scores high)."""
COARSE_ATTRIBUTES: tuple[str, ...] = ("Male", "Black_Hair", "Blond_Hair", "Gray_Hair", "Bald", "Eyeglasses",
                                      "Wearing_Hat", "Pale_Skin", "No_Beard", "Bangs")  # fmt: skip
"""Drawn attributes that cover many pixels and stay visible at 32x32 (tests train at that size)."""

# Independent random streams, so one image does not depend on how many others are drawn.
_STREAM_LAYOUT, _STREAM_IDENTITY, _STREAM_IMAGE, _STREAM_NEW = 0, 1, 2, 3


def _plan(count: int, seed: int, images_per_identity: int) -> list[tuple[int, int, int]]:
    """``(identity_index, identity_number, partition)`` per output image, in file order."""
    n_ids = math.ceil(count / images_per_identity)
    rng = np.random.default_rng([seed, _STREAM_LAYOUT])
    numbers = rng.choice(np.arange(1, max(_MAX_CELEBA_IDENTITY, 2 * n_ids) + 1), size=n_ids, replace=False)
    order = rng.permutation(n_ids)
    n_val = n_test = round(0.1 * n_ids) if n_ids >= 10 else int(n_ids >= 3)
    partition = np.zeros(n_ids, np.int64)
    partition[order[n_ids - n_val - n_test : n_ids - n_test]] = 1
    partition[order[n_ids - n_test :]] = 2
    sizes = [images_per_identity] * (n_ids - 1) + [count - images_per_identity * (n_ids - 1)]
    rows: list[tuple[int, int, int]] = []
    for part in (0, 1, 2):
        block = [(k, int(numbers[k]), part) for k in range(n_ids) if partition[k] == part for _ in range(sizes[k])]
        rows.extend(block[i] for i in rng.permutation(len(block)))
    return rows


def generate_celeba(out: Path, count: int, seed: int, images_per_identity: int = 8) -> Path:
    """Write a CelebA-format folder of ``count`` drawn faces.

    Args:
        out: Folder to write (created; existing files of the same names are replaced).
        count: Number of images.
        seed: Seed; the same seed writes byte-identical files.
        images_per_identity: Images of each identity (the last identity takes the remainder).

    Returns:
        ``out``.

    Raises:
        ValueError: When ``count`` or ``images_per_identity`` is below 1 or ``count`` needs
            more than 6 digits.
    """
    if count < 1 or images_per_identity < 1:
        raise ValueError(f"expected count >= 1 and images_per_identity >= 1, found {count} and {images_per_identity}")
    if count > 999_999:
        raise ValueError(f"CelebA file names have 6 digits: expected count <= 999999, found {count}")
    out = Path(out)
    img_dir = out / IMAGE_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(count, seed, images_per_identity)
    items = [(index, k) for index, (k, _, _) in enumerate(plan)]
    procs = max(1, min(os.cpu_count() or 1, count // IMAGES_PER_PROCESS))
    if procs == 1:
        rows = _render(img_dir, seed, items)
    else:  # every image has its own random stream: the files are the same for any number of processes
        chunks = [items[i::procs] for i in range(procs)]
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = sorted(r for part in pool.map(_render, [img_dir] * procs, [seed] * procs, chunks) for r in part)
    attr_rows, bbox_rows, lm_rows, part_rows, id_rows = [], [], [], [], []
    for index, name, attributes, bbox, landmarks in rows:
        attr_rows.append(name + " " + " ".join(f"{1 if attributes[a] else -1:2d}" for a in CELEBA_ATTRIBUTES))
        x, y, w, h = bbox
        bbox_rows.append(f"{name:<10}{x:>6d}{y:>4d}{w:>4d}{h:>4d}")
        lm_rows.append(name + "".join(f"{v:>5d}" for v in landmarks))
        _, number, part = plan[index]
        part_rows.append(f"{name} {part}")
        id_rows.append(f"{name} {number}")
    _write(out / ATTR_FILE, [str(count), " ".join(CELEBA_ATTRIBUTES), *attr_rows])
    _write(out / BBOX_FILE, [str(count), BBOX_HEADER, *bbox_rows])
    _write(out / LANDMARKS_FILE, [str(count), LANDMARKS_HEADER, *lm_rows])
    _write(out / PARTITION_FILE, part_rows)
    _write(out / IDENTITY_FILE, id_rows)
    return out


IMAGES_PER_PROCESS = 500
"""``generate_celeba`` draws in one process per core, with at least this many images each."""


def _render(img_dir: Path, seed: int, items: list[tuple[int, int]]) -> list[tuple]:
    """Draw and save the images ``(index, identity_index)``; their annotation rows
    ``(index, file name, attributes, bbox, landmark points)``."""
    identities: dict[int, Any] = {}
    rows = []
    for index, k in items:
        if k not in identities:
            identities[k] = sample_identity(np.random.default_rng([seed, _STREAM_IDENTITY, k]))
        rng = np.random.default_rng([seed, _STREAM_IMAGE, index])
        face = render_face(identities[k], sample_look(rng, identities[k]), rng)
        name = f"{index + 1:06d}.jpg"
        face.image.save(img_dir / name, format="JPEG", quality=JPEG_QUALITY)
        points = [int(v) for v in np.rint(face.landmarks).astype(int).ravel()]
        rows.append((index, name, dict(face.attributes), tuple(int(v) for v in face.bbox), points))
    return rows


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


# --------------------------------------------------------------------------- new images

NEW_IMAGE_KINDS = ("jpeg_rgb", "png_rgb", "jpeg_gray", "png_rgba", "jpeg_exif6", "png_gray", "jpeg_exif8")
"""Cycle of file kinds written by :func:`generate_new_images`."""

EXIF_ORIENTATION_TAG = 0x0112
# Pixels are stored so that PIL's ``ImageOps.exif_transpose`` (which applies this transpose)
# brings the face upright: orientation 6 = display rotated 90 degrees clockwise, 8 = counter.
_STORE_TRANSPOSE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def generate_new_images(out: Path, count: int, seed: int) -> list[Path]:
    """Write a flat folder of "new" face images for batch scoring, mixing what real uploads hold.

    Kinds cycle through ``NEW_IMAGE_KINDS``: RGB JPEG, RGB PNG, grayscale (mode L) JPEG and
    PNG, RGBA PNG with a transparent background, and JPEGs with an EXIF Orientation of 6 or
    8 whose pixels are stored rotated so that EXIF transposition restores the upright face.
    Sizes vary (scaled 0.6x to 2x from 178x218, some cropped square). Identities are new.

    Args:
        out: Folder to write (created).
        count: Number of images.
        seed: Seed; the same seed writes byte-identical files.

    Returns:
        The written paths, in order (``new_00000.jpg``, ``new_00001.png``, ...).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        img = new_image_upright(seed, index)
        kind = NEW_IMAGE_KINDS[index % len(NEW_IMAGE_KINDS)]
        buf = io.BytesIO()
        if kind == "jpeg_rgb":
            img.save(buf, format="JPEG", quality=90)
        elif kind == "png_rgb":
            img.save(buf, format="PNG")
        elif kind == "jpeg_gray":
            img.convert("L").save(buf, format="JPEG", quality=90)
        elif kind == "png_gray":
            img.convert("L").save(buf, format="PNG")
        elif kind == "png_rgba":
            rgba = img.convert("RGBA")
            rgba.putalpha(_head_alpha(img.size))
            rgba.save(buf, format="PNG")
        else:
            orientation = 6 if kind == "jpeg_exif6" else 8
            exif = Image.Exif()
            exif[EXIF_ORIENTATION_TAG] = orientation
            img.transpose(_STORE_TRANSPOSE[orientation]).save(buf, format="JPEG", quality=90, exif=exif.tobytes())
        path = out / f"new_{index:05d}.{'png' if kind.startswith('png') else 'jpg'}"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def new_image_upright(seed: int, index: int) -> Image.Image:
    """The upright RGB pixels of image ``index`` of :func:`generate_new_images` (before its
    file kind is applied): a new identity, optionally cropped square, scaled 0.6x to 2x."""
    rng = np.random.default_rng([seed, _STREAM_NEW, index])
    ident = sample_identity(rng)
    img = render_face(ident, sample_look(rng, ident), rng).image
    if rng.random() < 0.3:  # a square crop around the face, like a phone thumbnail
        top = int(rng.integers(0, HEIGHT - WIDTH + 1))
        img = img.crop((0, top, WIDTH, top + WIDTH))
    factor = float(rng.uniform(0.6, 2.0))
    size = (max(16, round(img.width * factor)), max(16, round(img.height * factor)))
    return img.resize(size, Image.Resampling.BICUBIC)


def _head_alpha(size: tuple[int, int]) -> Image.Image:
    """Opaque ellipse around the head and shoulders, transparent corners."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = ((xx - w / 2) / (0.48 * w)) ** 2 + ((yy - h * 0.5) / (0.52 * h)) ** 2
    return Image.fromarray((np.clip((1.15 - r) / 0.15, 0, 1) * 255).astype(np.uint8), "L")
