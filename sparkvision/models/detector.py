"""A YOLO-inspired single-object regressor: a small Conv+BN+ReLU+MaxPool stack and a dense head
with sigmoid outputs in [0, 1] trained with MAE on the face box or the five landmarks
(CelebA), or on the box of the largest defect (fabric, defective patches only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision.models import common, metrics
from sparkvision.models.base import ModelSpec

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

    from sparkvision.config import TrainConfig
    from sparkvision.models.base import Meta

BLOCK_FILTERS = (16, 32, 64, 128)
TARGET_SIZES = {"bbox": 4, "landmarks": 10}


def build_regressor(input_shape: tuple[int, int, int], n_outputs: int, dropout: float = 0.25) -> tf.keras.Model:
    """Conv+BN+ReLU+MaxPool blocks (16, 32, 64, 128; fewer for tiny inputs), Flatten (keeps
    where things are), Dense 128 and a sigmoid output named ``coords``."""
    import tensorflow as tf

    from sparkvision.models.layers import pooled_conv_stack

    inputs, x = pooled_conv_stack(input_shape, BLOCK_FILTERS)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = tf.keras.layers.Dense(128, activation="relu", name="head_dense")(x)
    x = tf.keras.layers.Dropout(dropout, name="head_dropout")(x)
    # Small initial weights start every coordinate near 0.5, away from the flat ends of the sigmoid.
    small = tf.keras.initializers.RandomNormal(stddev=0.01)
    outputs = tf.keras.layers.Dense(n_outputs, activation="sigmoid", kernel_initializer=small, name="coords",
                                    dtype="float32")(x)  # fmt: skip
    return tf.keras.Model(inputs, outputs, name="detector")


def shift_rows(
    x: np.ndarray, coords: np.ndarray, shift: float, target: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images moved by seeded whole-pixel shifts of up to ``shift`` of the side (black borders,
    as in training) and their normalised boxes/landmarks moved with them, clipped to [0, 1]."""
    n, size = len(x), int(x.shape[1])
    margin = max(1, int(round(shift * size)))
    d = np.random.default_rng(seed).integers(-margin, margin + 1, size=(n, 2))
    moved = np.zeros_like(x)
    out = np.asarray(coords, np.float32).reshape(n, -1, 2).copy()
    for i, (dx, dy) in enumerate(d):
        src_y, dst_y = slice(max(0, -dy), size - max(0, dy)), slice(max(0, dy), size - max(0, -dy))
        src_x, dst_x = slice(max(0, -dx), size - max(0, dx)), slice(max(0, dx), size - max(0, -dx))
        moved[i, dst_y, dst_x] = x[i, src_y, src_x]
        empty = target == "bbox" and not np.any(out[i])
        if not empty:
            out[i] = np.clip(out[i] + np.array([dx, dy], np.float32) / size, 0.0, 1.0)
    return moved, out.reshape(np.shape(coords))


class DetectorTask:
    """The box/landmark regressor as a ``Task``; see ``base.Task`` for the contract.

    Meta key ``target``: ``bbox`` or ``landmarks`` (``cfg.detector_target``). On fabric only
    defective patches (``label == 1``) are used, for training and in ``arrays``.
    """

    name = "detector"
    tables = ("celeba", "fabric")
    columns = ("image", "bbox", "landmarks", "label")

    def columns_for(self, table: str) -> tuple[str, ...]:
        """The columns of ``columns`` that exist in ``table``."""
        from sparkvision.data import schema

        present = {f.name for f in schema.TABLES[table]}
        return tuple(c for c in self.columns if c in present)

    def prepare_meta(self, manifest: dict[str, Any], cfg: TrainConfig) -> Meta:
        meta = common.base_meta(self.name, self.tables, manifest, cfg)
        if meta["table"] == "fabric" and cfg.detector_target != "bbox":
            raise ValueError(f"train.detector_target: fabric tables have only 'bbox', found '{cfg.detector_target}'")
        meta["target"] = cfg.detector_target
        meta["augment_shift"] = float(cfg.augment_shift)
        return meta

    def build(self, cfg: TrainConfig, meta: Meta) -> ModelSpec:
        size = meta["image_size"]
        return ModelSpec(build_regressor((size, size, 3), TARGET_SIZES[meta["target"]], cfg.dropout), loss="mae")

    def keep_for_training(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        import tensorflow as tf

        if "label" in row:
            return tf.equal(tf.cast(row["label"], tf.int32), 1)
        return tf.constant(True)

    def parse_row(self, row: dict[str, tf.Tensor], meta: Meta, cfg: TrainConfig, training: bool) -> tuple[Any, Any]:
        import tensorflow as tf

        target = meta["target"]
        image = common.decode_png(row["image"], meta["image_size"])
        coords = tf.reshape(tf.cast(row[target], tf.float32), (TARGET_SIZES[target],))
        if training:
            if target == "bbox":
                image, coords, _ = common.augment_row(image, cfg, meta, boxes=coords, seed=common.row_seed(cfg, row))
            else:
                image, _, coords = common.augment_row(
                    image, cfg, meta, landmarks=coords, seed=common.row_seed(cfg, row)
                )
        return image, coords

    def arrays(self, frame: pd.DataFrame, meta: Meta) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if meta["table"] == "fabric":
            frame = frame[frame["label"].astype(int) == 1]
        target = meta["target"]
        x = common.decode_column(frame, meta["image_size"])
        return x, {target: common.stack_column(frame, target).reshape(len(frame), TARGET_SIZES[target])}

    def _coords(self, model: tf.keras.Model, x: np.ndarray) -> np.ndarray:
        parts = common.predict_batches(lambda b: model(b, training=False).numpy(), np.asarray(x, np.float32))
        out = np.concatenate(parts) if parts else np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
        if out.shape[-1] == 4:  # four independent sigmoids can cross: report a valid box
            out = np.concatenate([np.minimum(out[:, :2], out[:, 2:]), np.maximum(out[:, :2], out[:, 2:])], axis=1)
        return out

    def fit_statistics(self, meta: Meta, train: pd.DataFrame, cfg: TrainConfig) -> Meta:
        """``meta`` plus ``mean_target``: the mean train box (or landmarks) of the rows the
        detector trains on, the baseline ``evaluate`` compares with."""
        target = meta["target"]
        if "label" in train and meta["table"] == "fabric":
            train = train[train["label"].astype(int) == 1]
        if target not in train or train.empty:
            return meta
        values = common.stack_column(train, target).reshape(len(train), TARGET_SIZES[target])
        return {**meta, "mean_target": [round(float(v), 6) for v in values.mean(axis=0)]}

    def evaluate(self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta) -> dict[str, float]:
        """MAE (and IoU or point error) on the rows as they are, and again as ``shifted_*`` on
        the same rows moved by seeded shifts of up to ``meta["augment_shift"]`` of the side
        (the range the model was trained for): aligned faces barely move, so only moved ones
        tell a regressor that finds the face from one that answers the average.

        With ``meta["mean_target"]`` each figure has a ``baseline_*`` twin, the same figure for
        always answering the mean train target, and ``mae_ratio`` = model MAE / baseline MAE
        (below 1: the model found where the object is).
        """
        target = meta["target"]
        if len(x) == 0:
            return {"count": 0.0}
        out = {"count": float(len(x)), **self._figures(model, x, y[target], meta, "")}
        shift = float(meta.get("augment_shift", 0.0))
        if shift > 0:
            moved, coords = shift_rows(x, y[target], shift, target, seed=0)
            out.update(self._figures(model, moved, coords, meta, "shifted_"))
        return out

    def _figures(self, model: tf.keras.Model, x: np.ndarray, truth: np.ndarray, meta: Meta,
                 prefix: str) -> dict[str, float]:  # fmt: skip
        target = meta["target"]
        size = meta["image_size"]
        pred = self._coords(model, x)
        out = {"mae": float(np.abs(pred - truth).mean())}
        out["pixel_mae"] = out["mae"] * size
        if target == "bbox":
            iou = metrics.box_iou(pred, truth)
            out.update(mean_iou=float(iou.mean()), iou_50=float((iou >= 0.5).mean()))
        else:
            dist = np.linalg.norm((pred - truth).reshape(len(x), -1, 2), axis=2)
            out["pixel_point_error"] = float(dist.mean() * size)
        if meta.get("mean_target") is not None:
            base = np.broadcast_to(np.asarray(meta["mean_target"], np.float32), truth.shape)
            out["baseline_mae"] = float(np.abs(base - truth).mean())
            out["mae_ratio"] = out["mae"] / max(out["baseline_mae"], 1e-12)
            if target == "bbox":
                out["baseline_mean_iou"] = float(metrics.box_iou(base, truth).mean())
        return {f"{prefix}{k}": v for k, v in out.items()}

    def pictures(
        self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta, out_dir: Path
    ) -> list[Path]:
        from sparkvision import pictures

        n = min(8, len(x))
        if n == 0:
            return []
        target = meta["target"]
        pred = self._coords(model, x[:n])
        truth = y[target][:n]
        if target == "bbox":
            iou = metrics.box_iou(pred, truth)
            drawn = [pictures.draw_boxes(x[i], [(truth[i], pictures.TRUE_COLOR), (pred[i], pictures.PRED_COLOR)])
                     for i in range(n)]  # fmt: skip
            captions = [f"IoU {v:.2f}" for v in iou]
        else:
            drawn = [pictures.draw_points(x[i], [(truth[i], pictures.TRUE_COLOR), (pred[i], pictures.PRED_COLOR)])
                     for i in range(n)]  # fmt: skip
            err = np.abs(pred - truth).mean(axis=1) * meta["image_size"]
            captions = [f"MAE {v:.1f}px" for v in err]
        return [pictures.save_grid([drawn], Path(out_dir) / f"detector_{target}.png", captions=[captions],
                                   title=f"{target}: true (green) vs predicted (red)", cell_inches=2.0)]  # fmt: skip

    def predict(self, model: tf.keras.Model, x: np.ndarray, meta: Meta) -> dict[str, np.ndarray]:
        target = meta["target"]
        coords = self._coords(model, x).astype(np.float32)
        return {target: coords, f"{target}_pixels": coords * np.float32(meta["image_size"])}

    def output_schema(self, meta: Meta) -> list[tuple[str, str]]:
        return [(meta["target"], "array<float>"), (f"{meta['target']}_pixels", "array<float>")]
