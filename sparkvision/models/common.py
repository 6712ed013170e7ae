"""Shared pieces of the model families: dataset facts from the manifest, PNG decoding for
``tf.data`` and for pandas, and seeded augmentation that moves boxes and landmarks with
the pixels.

TensorFlow is imported inside the functions: tasks import this module at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision.data import schema

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

    from sparkvision.config import TrainConfig

LANDMARK_FLIP_ORDER: tuple[int, ...] = (1, 0, 2, 4, 3)
"""After a horizontal flip the left eye is the old right eye (and the mouth corners swap):
the new point ``i`` is the old point ``LANDMARK_FLIP_ORDER[i]`` of ``schema.LANDMARK_NAMES``."""

DEFAULT_CROP = {"celeba": "center_square", "folder": "center_square", "fabric": "none"}

DEFAULT_FLIP = {"celeba": True, "folder": False, "fabric": False}
"""``train.augment_flip: auto`` per table: faces are left-right symmetric (landmarks and boxes
are mirrored with them); digits, text, logos and many class-per-folder sets are not; fabric
models choose their own texture augmentation."""


def resolve_flip(cfg: TrainConfig, table: str) -> bool:
    """``train.augment_flip`` with ``auto`` replaced by the table's default (``DEFAULT_FLIP``)."""
    if cfg.augment_flip == "auto":
        return DEFAULT_FLIP[table]
    return bool(cfg.augment_flip)


def manifest_value(manifest: dict[str, Any], key: str) -> Any:
    """``key`` at the top of the manifest, else in its ``config``/``ingest`` section."""
    if key in manifest:
        return manifest[key]
    for section in ("ingest", "config", "ingest_config"):
        sub = manifest.get(section)
        if isinstance(sub, dict) and key in sub:
            return sub[key]
    return None


def table_of(manifest: dict[str, Any]) -> str:
    """The ingested table kind (``celeba``/``fabric``/``folder``) a manifest describes.

    Raises:
        ValueError: When the manifest names neither a ``table`` nor a known ``format``.
    """
    table = manifest.get("table")
    if table in schema.TABLES:
        return str(table)
    fmt = manifest_value(manifest, "format")
    if fmt in schema.FORMAT_TABLE:
        return schema.FORMAT_TABLE[fmt]
    raise ValueError(
        f"dataset manifest {manifest.get('output', '?')}: expected 'table' in {sorted(schema.TABLES)} "
        f"or 'format' in {sorted(schema.FORMAT_TABLE)}, found table={table!r} format={fmt!r}"
    )


SPECIFIED_NETWORKS = ("vae", "detector")
"""Families whose layers the talks specify: ``train.width`` other than 1 is refused for them."""


def widened(filters: Sequence[int], width: float) -> tuple[int, ...]:
    """``filters`` scaled by ``train.width`` (MobileNet's width multiplier), at least 4 channels each."""
    return tuple(max(4, int(round(f * width))) for f in filters)


def base_meta(task: str, tables: Sequence[str], manifest: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """The meta every task starts from: task, table, image size and crop, checked against ``cfg``.

    Raises:
        ValueError: On a table the task cannot train on, or an image size that differs from
            the ingested one.
    """
    where = f"dataset {manifest.get('output', '?')}"
    table = table_of(manifest)
    if table not in tables:
        raise ValueError(f"{where}: model '{task}' trains on tables {list(tables)}, found table '{table}'")
    ingested = manifest_value(manifest, "image_size")
    if ingested is None:
        raise ValueError(f"{where}: expected 'image_size' in the manifest, found keys {sorted(manifest)}")
    if int(ingested) != cfg.image_size:
        raise ValueError(
            f"{where}: train.image_size {cfg.image_size} requested, {ingested} ingested; "
            f"set train.image_size={ingested} or re-ingest at {cfg.image_size}"
        )
    if cfg.width != 1.0 and task in SPECIFIED_NETWORKS:
        raise ValueError(f"train.width={cfg.width:g}: model '{task}' keeps the layers its talk specifies; the width "
                         f"multiplier scales the channels of the other families' networks (set train.width=1)")  # fmt: skip
    crop = manifest_value(manifest, "crop") or DEFAULT_CROP[table]
    return {"task": task, "table": table, "image_size": int(ingested), "crop": str(crop),
            "augment_flip": resolve_flip(cfg, table), "width": float(cfg.width)}  # fmt: skip


def check_divisible(task: str, size: int, factor: int) -> None:
    """Raise ``ValueError`` unless ``size`` is a positive multiple of ``factor``."""
    if size % factor or size < factor:
        raise ValueError(f"model '{task}': image_size must be a multiple of {factor}, found {size}")


# --------------------------------------------------------------------------- tf.data side


def decode_png(data: tf.Tensor, size: int) -> tf.Tensor:
    """PNG bytes (``tf.string``) → ``float32`` ``(size, size, 3)`` in [0, 1]."""
    import tensorflow as tf

    image = tf.io.decode_png(data, channels=3)
    image = tf.cast(image, tf.float32) / 255.0
    image.set_shape((size, size, 3))
    return image


AUGMENT_SEED = "_augment_seed"
"""Row key of the ``int64[2]`` augmentation seed that ``training.data.training_dataset`` adds to
each training row (derived from the rank's seed, the row's position in its stream and its id)."""


def row_seed(cfg: TrainConfig, row: dict[str, tf.Tensor] | None = None) -> tf.Tensor:
    """The ``int64[2]`` augmentation seed of one row: ``row[AUGMENT_SEED]``, set by the training
    pipeline so that its parallel map repeats per seed; without it (a row parsed outside that
    pipeline) a fresh one from a generator seeded by ``cfg.seed``."""
    import tensorflow as tf

    if row is not None and AUGMENT_SEED in row:
        return row[AUGMENT_SEED]
    return tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64, seed=cfg.seed)


def flip_boxes(boxes: tf.Tensor) -> tf.Tensor:
    """Mirror ``[..., 4]`` normalised ``x_min, y_min, x_max, y_max`` boxes left-right; all-zero
    boxes (no object) stay zero."""
    import tensorflow as tf

    x0, y0, x1, y1 = tf.unstack(boxes, axis=-1)
    flipped = tf.stack([1.0 - x1, y0, 1.0 - x0, y1], axis=-1)
    empty = tf.reduce_all(tf.equal(boxes, 0.0), axis=-1, keepdims=True)
    return tf.where(empty, boxes, flipped)


def flip_landmarks(points: tf.Tensor) -> tf.Tensor:
    """Mirror ``[10]`` normalised landmarks (x, y pairs) and swap left/right points."""
    import tensorflow as tf

    xy = tf.reshape(points, (5, 2))
    xy = tf.stack([1.0 - xy[:, 0], xy[:, 1]], axis=-1)
    return tf.reshape(tf.gather(xy, list(LANDMARK_FLIP_ORDER)), (10,))


def _shift_coords(coords: tf.Tensor, dx: tf.Tensor, dy: tf.Tensor, size: int, keep_zero: bool) -> tf.Tensor:
    import tensorflow as tf

    offset = tf.reshape(tf.stack([-dx, -dy]), (1, 2))
    xy = tf.reshape(coords, (-1, 2)) + tf.cast(offset, coords.dtype) / float(size)
    out = tf.reshape(tf.clip_by_value(xy, 0.0, 1.0), tf.shape(coords))
    if keep_zero:
        out = tf.where(tf.reduce_all(tf.equal(coords, 0.0)), coords, out)
    return out


def augment(
    image: tf.Tensor,
    seed: tf.Tensor,
    *,
    flip: bool,
    shift: float,
    color: float,
    boxes: tf.Tensor | None = None,
    landmarks: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
    """Random horizontal flip, shift and colour jitter of one square image, deterministic in ``seed``.

    Boxes (``[4]``, normalised, all zeros = none) and landmarks (``[10]``) move with the
    pixels: mirrored (left/right landmarks swapped) and shifted, clipped to [0, 1].

    Args:
        image: ``float32 (S, S, 3)`` in [0, 1].
        seed: ``int32/int64 [2]`` stateless seed (see ``row_seed``).
        flip: Mirror left-right with probability 1/2.
        shift: Largest shift as a fraction of the side; 0 disables. Borders are reflected, or
            black when boxes/landmarks are given (a reflection would copy the object).
        color: Brightness delta, and contrast/saturation range ``1 ± color``; 0 disables.
        boxes: Optional box moved with the image.
        landmarks: Optional landmarks moved with the image.

    Returns:
        ``(image, boxes, landmarks)``, the latter two ``None`` when not given.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    size = int(image.shape[0])
    if flip:
        do_flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
        image = tf.cond(do_flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        if boxes is not None:
            b = boxes
            boxes = tf.cond(do_flip, lambda: flip_boxes(b), lambda: b)
        if landmarks is not None:
            p = landmarks
            landmarks = tf.cond(do_flip, lambda: flip_landmarks(p), lambda: p)
    margin = int(round(shift * size))
    if margin > 0:
        margin = min(margin, size - 1)
        d = tf.random.stateless_uniform([2], seeds[1], -margin, margin + 1, dtype=tf.int32)
        dx, dy = d[0], d[1]
        # Reflection would mirror objects near the edge into ghost copies outside their box.
        mode = "CONSTANT" if boxes is not None or landmarks is not None else "REFLECT"
        padded = tf.pad(image, [[margin, margin], [margin, margin], [0, 0]], mode=mode)
        image = tf.slice(padded, tf.stack([margin + dy, margin + dx, 0]), [size, size, 3])
        if boxes is not None:
            boxes = _shift_coords(boxes, dx, dy, size, keep_zero=True)
        if landmarks is not None:
            landmarks = _shift_coords(landmarks, dx, dy, size, keep_zero=False)
    if color > 0:
        image = tf.image.stateless_random_brightness(image, color, seeds[2])
        image = tf.image.stateless_random_contrast(image, 1.0 - color, 1.0 + color, seeds[3])
        image = tf.image.stateless_random_saturation(image, max(0.0, 1.0 - color), 1.0 + color, seeds[4])
        image = tf.clip_by_value(image, 0.0, 1.0)
    image.set_shape((size, size, 3))
    return image, boxes, landmarks


def row_image(row: dict[str, tf.Tensor], meta: dict[str, Any], cfg: TrainConfig, training: bool) -> tf.Tensor:
    """The decoded image of a petastorm row, augmented when ``training`` (for tasks whose
    targets do not move with the image; the detector augments its boxes with it)."""
    image = decode_png(row["image"], meta["image_size"])
    if training:
        image, _, _ = augment_row(image, cfg, meta, seed=row_seed(cfg, row))
    return image


def keep_every_row(row: dict[str, tf.Tensor]) -> tf.Tensor:
    """``Task.keep_for_training`` of tasks that train on every row."""
    import tensorflow as tf

    return tf.constant(True)


def augment_row(
    image: tf.Tensor,
    cfg: TrainConfig,
    meta: dict[str, Any],
    boxes: tf.Tensor | None = None,
    landmarks: tf.Tensor | None = None,
    *,
    geometric: bool = True,
    seed: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
    """``augment`` with the strengths of ``cfg.augment_*``, the flip resolved in ``meta``
    (``augment_flip``) and the row's seed (``row_seed``; a fresh one when None)."""
    flip = bool(meta.get("augment_flip", resolve_flip(cfg, meta.get("table", "celeba"))))
    return augment(
        image,
        row_seed(cfg) if seed is None else seed,
        flip=flip and geometric,
        shift=cfg.augment_shift if geometric else 0.0,
        color=cfg.augment_color,
        boxes=boxes,
        landmarks=landmarks,
    )


# --------------------------------------------------------------------------- pandas side


def decode_column(frame: pd.DataFrame, size: int, column: str = "image", channels: int = 3) -> np.ndarray:
    """PNG bytes of ``frame[column]`` → ``float32 (N, size, size, channels)`` in [0, 1].

    Raises:
        ValueError: Naming the row id when an image is not ``size`` x ``size``.
    """
    from sparkvision.data.images import decode_array

    out = np.zeros((len(frame), size, size, channels), dtype=np.float32)
    ids = frame["id"].tolist() if "id" in frame else list(range(len(frame)))
    for i, data in enumerate(frame[column].tolist()):
        arr = decode_array(bytes(data))
        if arr.shape[:2] != (size, size):
            raise ValueError(
                f"row id={ids[i]}: expected {column} of {size}x{size}, found {arr.shape[1]}x{arr.shape[0]}"
            )
        if arr.shape[2] == 1 and channels == 3:
            arr = np.repeat(arr, 3, axis=2)
        out[i] = arr[..., :channels].astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
    return out


def stack_column(frame: pd.DataFrame, column: str, dtype: str = "float32") -> np.ndarray:
    """A column of equal-length arrays (or scalars) → one numpy array with a row per frame row."""
    values = frame[column].tolist()
    if not values:
        return np.zeros((0,), dtype=dtype)
    return np.stack([np.asarray(v, dtype=dtype) for v in values])


def predict_batches(fn: Any, x: np.ndarray, batch_size: int = 64) -> list[Any]:
    """Call ``fn`` on slices of ``x`` (to keep memory flat) and return the list of results."""
    return [fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
