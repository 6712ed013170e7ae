"""PNG decoding of rows, augmentation that moves boxes and landmarks with the pixels, and the
dataset facts every task reads from a manifest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sparkvision.config import Config
from sparkvision.data.images import encode_png
from sparkvision.models import common, get_task

SIZE = 32


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    return encode_png(Image.fromarray(arr))


def _marked_image(box_px: tuple[int, int, int, int]) -> np.ndarray:
    """Black image with a white rectangle ``[x0, y0, x1, y1)``."""
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    x0, y0, x1, y1 = box_px
    img[y0:y1, x0:x1] = 255
    return img


def _box_of(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(image[..., 0] > 0.5)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) / SIZE


def test_parse_row_decodes_png_bytes_into_the_training_example(cfg: Config) -> None:
    import tensorflow as tf

    img = _marked_image((4, 8, 12, 20))
    box = np.array([4, 8, 12, 20], np.float32) / SIZE
    row = {"image": tf.constant(_png(img)), "bbox": tf.constant(box), "label": tf.constant(1, tf.int32)}
    task = get_task("detector")
    meta = task.prepare_meta({"format": "celeba", "image_size": SIZE}, cfg.train)
    x, y = task.parse_row(row, meta, cfg.train, False)
    assert x.shape == (SIZE, SIZE, 3) and x.dtype == tf.float32
    np.testing.assert_allclose(x.numpy(), img / 255.0, atol=1e-6)
    np.testing.assert_allclose(y.numpy(), box)


def test_flip_boxes_mirrors_and_keeps_empty_boxes() -> None:
    import tensorflow as tf

    boxes = tf.constant([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(common.flip_boxes(boxes).numpy(), [[0.7, 0.2, 0.9, 0.4], [0, 0, 0, 0]], atol=1e-6)


def test_flip_landmarks_swaps_left_and_right() -> None:
    import tensorflow as tf

    # lefteye, righteye, nose, leftmouth, rightmouth
    pts = tf.constant([0.3, 0.4, 0.7, 0.4, 0.5, 0.6, 0.35, 0.8, 0.65, 0.8])
    flipped = common.flip_landmarks(pts).numpy().reshape(5, 2)
    np.testing.assert_allclose(flipped, [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], atol=1e-6)
    pts = tf.constant([0.2, 0.1, 0.6, 0.15, 0.4, 0.5, 0.25, 0.7, 0.55, 0.75])
    flipped = common.flip_landmarks(pts).numpy().reshape(5, 2)
    np.testing.assert_allclose(flipped[0], [1 - 0.6, 0.15], atol=1e-6)  # new left eye = mirrored right eye
    np.testing.assert_allclose(flipped[4], [1 - 0.25, 0.7], atol=1e-6)  # new right mouth = mirrored left mouth


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("flip", "shift"), [(True, 0.0), (False, 0.2), (True, 0.2)])
def test_augment_moves_the_box_with_the_pixels(seed: int, flip: bool, shift: float) -> None:
    import tensorflow as tf

    img = _marked_image((10, 6, 18, 16))
    box = tf.constant(np.array([10, 6, 18, 16], np.float32) / SIZE)
    out, new_box, _ = common.augment(tf.constant(img / 255.0, tf.float32), tf.constant([seed, 7]),
                                     flip=flip, shift=shift, color=0.0, boxes=box)  # fmt: skip
    np.testing.assert_allclose(new_box.numpy(), _box_of(out.numpy()), atol=1e-6)


def test_augment_is_deterministic_in_its_seed_and_varies_across_seeds() -> None:
    import tensorflow as tf

    img = tf.constant(np.random.default_rng(0).random((SIZE, SIZE, 3)), tf.float32)
    runs = [common.augment(img, tf.constant([s, 1]), flip=True, shift=0.1, color=0.2)[0].numpy() for s in (3, 3, 4, 5)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2]) or not np.allclose(runs[0], runs[3])
    assert all(0.0 <= r.min() and r.max() <= 1.0 for r in runs)


def test_augmented_landmarks_follow_the_flip(cfg: Config) -> None:
    import tensorflow as tf

    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[:, :4] = 255  # a bright band on the left edge shows whether the image was flipped
    pts = tf.constant([0.3, 0.4, 0.7, 0.4, 0.5, 0.6, 0.35, 0.8, 0.65, 0.8])
    flips = 0
    for seed in range(8):
        out, _, new = common.augment(tf.constant(img / 255.0, tf.float32), tf.constant([seed, 0]),
                                     flip=True, shift=0.0, color=0.0, landmarks=pts)  # fmt: skip
        flipped = out.numpy()[0, -1, 0] > 0.5
        flips += int(flipped)
        expected = common.flip_landmarks(pts) if flipped else pts
        np.testing.assert_allclose(new.numpy(), expected.numpy(), atol=1e-6)
    assert 0 < flips < 8


@pytest.mark.parametrize(
    ("manifest", "table", "crop", "flip"),
    [
        ({"format": "celeba", "image_size": 32}, "celeba", "center_square", True),
        ({"format": "aitex", "ingest": {"image_size": 32}}, "fabric", "none", False),
        ({"table": "folder", "config": {"image_size": 32, "crop": "none"}}, "folder", "none", False),
    ],
)
def test_base_meta_reads_table_size_and_crop(cfg: Config, manifest: dict, table: str, crop: str, flip: bool) -> None:
    meta = common.base_meta("t", ("celeba", "fabric", "folder"), manifest, cfg.train)
    assert meta == {"task": "t", "table": table, "image_size": 32, "crop": crop, "augment_flip": flip, "width": 1.0}
    # An explicit train.augment_flip wins over the table's default.
    assert common.base_meta("t", (table,), manifest, cfg.replace(**{"train.augment_flip": "true"}).train)[
        "augment_flip"
    ]


def test_width_is_refused_for_the_specified_networks(cfg: Config) -> None:
    narrow = cfg.replace(**{"train.width": "0.5"}).train
    manifest = {"format": "celeba", "image_size": 32}
    assert common.base_meta("attributes", ("celeba",), manifest, narrow)["width"] == 0.5
    with pytest.raises(ValueError, match="train.width=0.5: model 'vae' keeps the layers its talk specifies"):
        common.base_meta("vae", ("celeba",), manifest, narrow)


def test_base_meta_names_a_missing_format(cfg: Config) -> None:
    with pytest.raises(ValueError, match="'format' in"):
        common.base_meta("t", ("celeba",), {"output": "/x", "image_size": 32}, cfg.train)


def test_decode_column_names_the_row_with_the_wrong_size() -> None:
    import pandas as pd

    frame = pd.DataFrame({"id": ["a", "b"], "image": [_png(np.zeros((SIZE, SIZE, 3), np.uint8)),
                                                      _png(np.zeros((16, 16, 3), np.uint8))]})  # fmt: skip
    with pytest.raises(ValueError, match="row id=b: expected image of 32x32, found 16x16"):
        common.decode_column(frame, SIZE)


def test_training_pipeline_is_seeded(cfg: Config) -> None:
    import tensorflow as tf

    task = get_task("vae")
    train_cfg = dataclasses.replace(cfg.train, seed=11)
    meta = task.prepare_meta({"format": "celeba", "image_size": SIZE}, train_cfg)
    images = [_png((np.random.default_rng(i).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)) for i in range(4)]

    def run() -> np.ndarray:
        tf.random.set_seed(0)
        ds = tf.data.Dataset.from_tensor_slices({"image": tf.constant(images)})
        return np.stack([x.numpy() for x, _ in ds.map(lambda r: task.parse_row(r, meta, train_cfg, True))])

    np.testing.assert_array_equal(run(), run())
