"""Fabric anomaly detection: a convolutional autoencoder trained only on defect-free patches.

Anomaly score = mean squared reconstruction error of the patch; heatmap = per-pixel squared
error (mean over channels) smoothed with a box filter. The first ``evaluate`` call (on the
validation split) picks the image threshold (and a pixel threshold for the defect box) as the
``anomaly_quantile`` quantile of that split's defect-free scores and stores them in meta;
later calls (the test split) keep them. Set ``meta["threshold"] = None`` to choose again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision.models import common, metrics

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

    from sparkvision.config import TrainConfig
    from sparkvision.models.base import Meta

ENCODER_FILTERS = (32, 64, 128, 128)


def build_autoencoder(input_shape: tuple[int, int, int], latent_dim: int) -> tf.keras.Model:
    """Four stride-2 Conv+BN+LeakyReLU blocks, a Dense ``bottleneck`` of ``latent_dim``, and the
    mirror image with Conv2DTranspose back to a sigmoid image; output named ``reconstruction``."""
    import tensorflow as tf

    from sparkvision.models.layers import conv_block

    common.check_divisible("fabric_ae", input_shape[0], 16)
    side = input_shape[0] // 16
    inputs = tf.keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, filters in enumerate(ENCODER_FILTERS):
        x = conv_block(x, filters, f"encoder_{i}", strides=2, activation="leaky_relu")
    x = tf.keras.layers.Flatten(name="encoder_flatten")(x)
    x = tf.keras.layers.Dense(latent_dim, name="bottleneck")(x)
    x = tf.keras.layers.Dense(side * side * ENCODER_FILTERS[-1], name="decoder_dense")(x)
    x = tf.keras.layers.Reshape((side, side, ENCODER_FILTERS[-1]), name="decoder_reshape")(x)
    for i, filters in enumerate(reversed(ENCODER_FILTERS[:-1])):
        x = conv_block(x, filters, f"decoder_{i}", strides=2, transpose=True, activation="leaky_relu")
    x = tf.keras.layers.Conv2DTranspose(input_shape[2], 3, strides=2, padding="same", name="decoder_output_conv")(x)
    outputs = tf.keras.layers.Activation("sigmoid", name="reconstruction")(x)
    return tf.keras.Model(inputs, outputs, name="fabric_ae")


def smoothing_size(image_size: int) -> int:
    """Odd box-filter side used to smooth heatmaps: about 1/16 of the image, at least 3."""
    return max(3, image_size // 16) | 1


def score_and_heatmaps(model: tf.keras.Model, x: np.ndarray, smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image anomaly score (mean squared error) and smoothed per-pixel error maps ``(N, H, W)``."""
    from scipy import ndimage

    x = np.asarray(x, np.float32)
    if len(x) == 0:
        return np.zeros(0, np.float32), np.zeros((0, *x.shape[1:3]), np.float32)
    recon = np.concatenate(common.predict_batches(lambda b: model(b, training=False).numpy(), x))
    err = np.mean((x - recon) ** 2, axis=3)
    heat = ndimage.uniform_filter(err, size=(1, smooth, smooth), mode="nearest")
    return err.mean(axis=(1, 2)).astype(np.float32), heat.astype(np.float32)


class FabricAeTask:
    """The fabric autoencoder as a ``Task``; see ``base.Task`` for the contract.

    Meta keys: ``latent_dim``, ``anomaly_quantile``, ``smooth``, and after ``evaluate``
    ``threshold`` (image score) and ``pixel_threshold`` (heatmap); ``predict`` needs both.
    """

    name = "fabric_ae"
    tables = ("fabric",)
    columns = ("image", "label")

    def columns_for(self, table: str) -> tuple[str, ...]:
        """The columns the input pipeline reads from ``table``."""
        return self.columns

    def prepare_meta(self, manifest: dict[str, Any], cfg: TrainConfig) -> Meta:
        meta = common.base_meta(self.name, self.tables, manifest, cfg)
        common.check_divisible(self.name, meta["image_size"], 16)
        meta.update(latent_dim=cfg.latent_dim, anomaly_quantile=cfg.anomaly_quantile,
                    smooth=smoothing_size(meta["image_size"]), threshold=None, pixel_threshold=None)  # fmt: skip
        return meta

    def build(self, cfg: TrainConfig, meta: Meta) -> tf.keras.Model:
        import tensorflow as tf

        size = meta["image_size"]
        model = build_autoencoder((size, size, 3), meta.get("latent_dim", cfg.latent_dim))
        model.compile(optimizer=tf.keras.optimizers.Adam(cfg.learning_rate), loss="mse")
        return model

    def keep_for_training(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        import tensorflow as tf

        return tf.equal(tf.cast(row["label"], tf.int32), 0)

    def parse_row(self, row: dict[str, tf.Tensor], meta: Meta, cfg: TrainConfig, training: bool) -> tuple[Any, Any]:
        image = common.row_image(row, meta, cfg, training)
        return image, image

    def arrays(self, frame: pd.DataFrame, meta: Meta) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        size = meta["image_size"]
        x = common.decode_column(frame, size)
        y = {"label": common.stack_column(frame, "label", "int32").reshape(-1)}
        if "mask" in frame:
            y["mask"] = (common.decode_column(frame, size, column="mask", channels=1)[..., 0] > 0.5).astype(np.uint8)
        if "bbox" in frame:
            y["bbox"] = common.stack_column(frame, "bbox").reshape(len(frame), 4)
        return x, y

    def evaluate(self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta) -> dict[str, float]:
        scores, heat = score_and_heatmaps(model, x, meta["smooth"])
        labels = y["label"].astype(int)
        good = labels == 0
        q = float(meta["anomaly_quantile"])
        if meta.get("threshold") is None:
            if not good.any():
                raise ValueError("fabric_ae evaluate: expected defect-free rows (label 0) to choose the threshold")
            meta["threshold"] = float(np.quantile(scores[good], q))
            meta["pixel_threshold"] = float(np.quantile(heat[good], q))
        pred = scores > meta["threshold"]
        out = {
            "threshold": meta["threshold"],
            "pixel_threshold": meta["pixel_threshold"],
            "image_auroc": metrics.auroc(labels, scores),
            "accuracy": float(np.mean(pred == (labels == 1))),
            "false_positive_rate": float(pred[good].mean()) if good.any() else float("nan"),
            "recall": float(pred[~good].mean()) if (~good).any() else float("nan"),
            "mean_score_good": float(scores[good].mean()) if good.any() else float("nan"),
            "mean_score_defect": float(scores[~good].mean()) if (~good).any() else float("nan"),
        }
        if "mask" in y:
            out["pixel_auroc"] = metrics.auroc(y["mask"], heat)
        return {k: v for k, v in out.items() if np.isfinite(v)}

    def pictures(
        self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta, out_dir: Path
    ) -> list[Path]:
        from sparkvision import pictures

        defective = np.flatnonzero(y["label"] == 1)[:6]
        if len(defective) == 0:
            defective = np.arange(min(6, len(x)))
        if len(defective) == 0:
            return []
        scores, heat = score_and_heatmaps(model, x[defective], meta["smooth"])
        vmax = max(float(np.quantile(heat, 0.999)), meta.get("pixel_threshold") or 0.0)
        rows = [list(x[defective]), [pictures.overlay(x[i], h, vmax) for i, h in zip(defective, heat, strict=True)]]
        titles = ["patch", "error heatmap"]
        if "mask" in y:
            rows.append([y["mask"][i].astype(np.float32) for i in defective])
            titles.append("true mask")
        captions = [[f"score {s:.4f}" for s in scores]] + [[""] * len(defective)] * (len(rows) - 1)
        return [pictures.save_grid(rows, Path(out_dir) / "fabric_heatmaps.png", row_titles=titles, captions=captions,
                                   title=f"threshold {meta.get('threshold') or float('nan'):.4f}")]  # fmt: skip

    def predict(self, model: tf.keras.Model, x: np.ndarray, meta: Meta) -> dict[str, np.ndarray]:
        if meta.get("threshold") is None or meta.get("pixel_threshold") is None:
            raise ValueError("fabric_ae meta has no 'threshold': run evaluate on the validation split before scoring")
        scores, heat = score_and_heatmaps(model, x, meta["smooth"])
        is_defect = scores > meta["threshold"]
        boxes = np.zeros((len(scores), 4), np.float32)
        for i in np.flatnonzero(is_defect):
            boxes[i] = metrics.largest_region_box(heat[i] > meta["pixel_threshold"])
        return {"anomaly_score": scores, "is_defect": is_defect, "defect_bbox": boxes}

    def output_schema(self, meta: Meta) -> list[tuple[str, str]]:
        return [("anomaly_score", "float"), ("is_defect", "boolean"), ("defect_bbox", "array<float>")]
