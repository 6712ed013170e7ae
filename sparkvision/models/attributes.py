"""The attribute CNN: multi-label sigmoid over CelebA attributes (``Smiling`` alone is a smile
detector) or a softmax classifier over the classes of a class-per-folder table.

Two registry entries share this code: ``attributes`` (CelebA attributes, and folder classes
for older configurations) and ``classifier`` (class-per-folder tables only).

Imbalance: attributes are learnt with a binary cross-entropy whose positive terms are
weighted by each attribute's negative/positive ratio in the train split (``pos_weight``,
clipped to [1/20, 20]); folder classes with per-row weights ``n / (k * count(class))``
(``train.class_weights``). Decisions: the first ``evaluate`` (the validation split) picks
each attribute's probability threshold maximising balanced accuracy and stores it in
``meta["thresholds"]``; test metrics and scoring use those thresholds, not 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision.data import schema
from sparkvision.errors import did_you_mean
from sparkvision.models import common, metrics
from sparkvision.models.base import ModelSpec

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

    from sparkvision.config import TrainConfig
    from sparkvision.models.base import Meta

BLOCK_FILTERS = (32, 64, 128, 128)
SPATIAL_CHANNELS = 32
MAX_POS_WEIGHT = 20.0


def resolve_attributes(names: list[str] | tuple[str, ...]) -> list[str]:
    """The attribute names to learn: all 40 when ``names`` is empty, else ``names`` validated.

    Raises:
        ValueError: On an unknown name (with the nearest valid one) or a repeated name.
    """
    if not names:
        return list(schema.CELEBA_ATTRIBUTES)
    for name in names:
        if name not in schema.CELEBA_ATTRIBUTES:
            hint = did_you_mean(name, schema.CELEBA_ATTRIBUTES, "attributes")
            raise ValueError(f"unknown CelebA attribute in train.attributes '{name}'{hint}")
    if len(set(names)) != len(names):
        raise ValueError(f"train.attributes: expected distinct names, found {list(names)}")
    return list(names)


def build_classifier(
    input_shape: tuple[int, int, int], n_outputs: int, multi_label: bool, dropout: float = 0.25, width: float = 1.0
) -> tf.keras.Model:
    """Conv+BN+ReLU+MaxPool blocks (32, 64, 128, 128 times ``width``; fewer for tiny inputs), global average
    pooling, Dense 128 and a sigmoid (multi-label) or softmax output named ``probabilities``.

    The multi-label head also keeps where things are: a 1x1 convolution to ``SPATIAL_CHANNELS``
    channels of the last feature map, flattened beside the pooled features. A face attribute lives in
    one place (a smile at the mouth, glasses at the eyes); global pooling alone mixes the mouth with
    the hair."""
    import tensorflow as tf

    from sparkvision.models.layers import pooled_conv_stack

    inputs, features = pooled_conv_stack(input_shape, common.widened(BLOCK_FILTERS, width))
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(features)
    if multi_label:
        where = tf.keras.layers.Conv2D(SPATIAL_CHANNELS, 1, activation="relu", name="spatial_conv")(features)
        where = tf.keras.layers.Flatten(name="spatial_flatten")(where)
        x = tf.keras.layers.Concatenate(name="pool_and_spatial")([x, where])
    x = tf.keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = tf.keras.layers.Dense(128, activation="relu", name="head_dense")(x)
    outputs = tf.keras.layers.Dense(n_outputs, activation="sigmoid" if multi_label else "softmax",
                                    name="probabilities", dtype="float32")(x)  # fmt: skip
    return tf.keras.Model(inputs, outputs, name="attributes" if multi_label else "classifier")


class AttributesTask:
    """The attribute/class CNN as a ``Task``; see ``base.Task`` for the contract.

    Meta keys: ``multi_label``; ``attribute_names`` and ``attribute_indices`` (celeba) or
    ``class_names`` (folder, from the manifest's ``class_names``).
    """

    name = "attributes"
    tables = ("celeba", "folder")
    columns = ("image", "attributes", "label")

    def columns_for(self, table: str) -> tuple[str, ...]:
        """The columns of ``columns`` that exist in ``table``."""
        present = {f.name for f in schema.TABLES[table]}
        return tuple(c for c in self.columns if c in present)

    def prepare_meta(self, manifest: dict[str, Any], cfg: TrainConfig) -> Meta:
        meta = common.base_meta(self.name, self.tables, manifest, cfg)
        if meta["table"] == "celeba":
            names = resolve_attributes(tuple(cfg.attributes))
            meta.update(multi_label=True, attribute_names=names,
                        attribute_indices=[schema.CELEBA_ATTRIBUTES.index(n) for n in names])  # fmt: skip
            return meta
        if cfg.attributes:
            raise ValueError(f"train.attributes applies to CelebA tables only, found {list(cfg.attributes)} "
                             f"for a '{meta['table']}' table")  # fmt: skip
        classes = common.manifest_value(manifest, "class_names") or common.manifest_value(manifest, "classes")
        if not classes or len(classes) < 2:
            raise ValueError(f"dataset {manifest.get('output', '?')}: expected 'class_names' with at least 2 classes "
                             f"in the manifest, found {classes!r}")  # fmt: skip
        meta.update(multi_label=False, class_names=[str(c) for c in classes])
        return meta

    def fit_statistics(self, meta: Meta, train: pd.DataFrame, cfg: TrainConfig) -> Meta:
        """``meta`` plus what the loss needs from the train split's targets (``attributes`` or
        ``label`` columns of every train row): ``pos_weight`` per attribute, or
        ``class_counts`` and (``train.class_weights``) ``class_weights`` per class.

        Raises:
            ValueError: When a class of the folder table has no train row.
        """
        meta = dict(meta)
        if meta["multi_label"]:
            attrs = common.stack_column(train, "attributes").reshape(len(train), -1)[:, meta["attribute_indices"]]
            pos = (attrs > 0.5).sum(axis=0).astype(np.float64)
            neg = len(attrs) - pos
            weight = np.clip(neg / np.maximum(pos, 1.0), 1.0 / MAX_POS_WEIGHT, MAX_POS_WEIGHT)
            meta["pos_weight"] = [round(float(w), 4) for w in weight]
            return meta
        names = meta["class_names"]
        counts = np.bincount(train["label"].astype(int).to_numpy(), minlength=len(names))[: len(names)]
        meta["class_counts"] = [int(c) for c in counts]
        missing = [names[i] for i, c in enumerate(counts) if c == 0]
        if missing:
            raise ValueError(f"train split: expected rows of every class, found none of {missing}")
        if cfg.class_weights:
            weights = counts.sum() / (len(names) * counts)
            meta["class_weights"] = [round(float(w), 4) for w in weights]
        return meta

    def build(self, cfg: TrainConfig, meta: Meta) -> ModelSpec:
        import tensorflow as tf

        from sparkvision.models.layers import WeightedBinaryCrossentropy

        size = meta["image_size"]
        multi = bool(meta["multi_label"])
        n = len(meta["attribute_names"] if multi else meta["class_names"])
        model = build_classifier((size, size, 3), n, multi, cfg.dropout, float(meta.get("width", 1.0)))
        if multi:
            pos_weight = meta.get("pos_weight") or [1.0] * n
            return ModelSpec(model, loss=WeightedBinaryCrossentropy(pos_weight),
                             metrics=[tf.keras.metrics.BinaryAccuracy(name="accuracy")])  # fmt: skip
        # Rows carry class weights for the loss; accuracy stays a plain share of rows.
        return ModelSpec(model, loss="sparse_categorical_crossentropy",
                         metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                         weighted_metrics=[])  # fmt: skip

    def keep_for_training(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        return common.keep_every_row(row)

    def parse_row(self, row: dict[str, tf.Tensor], meta: Meta, cfg: TrainConfig, training: bool) -> tuple[Any, Any]:
        import tensorflow as tf

        image = common.row_image(row, meta, cfg, training)
        if meta["multi_label"]:
            target = tf.gather(tf.cast(row["attributes"], tf.float32), meta["attribute_indices"])
            target.set_shape((len(meta["attribute_indices"]),))
            return image, target
        target = tf.cast(row["label"], tf.int32)
        weights = meta.get("class_weights")
        if weights:
            return image, target, tf.gather(tf.constant(weights, tf.float32), target)
        return image, target

    def arrays(self, frame: pd.DataFrame, meta: Meta) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x = common.decode_column(frame, meta["image_size"])
        if meta["multi_label"]:
            attrs = common.stack_column(frame, "attributes").reshape(len(frame), -1)
            return x, {"attributes": attrs[:, meta["attribute_indices"]]}
        return x, {"label": common.stack_column(frame, "label", "int32").reshape(-1)}

    def _names(self, meta: Meta) -> list[str]:
        return list(meta["attribute_names"] if meta["multi_label"] else meta["class_names"])

    def _probabilities(self, model: tf.keras.Model, x: np.ndarray) -> np.ndarray:
        parts = common.predict_batches(lambda b: model(b, training=False).numpy(), np.asarray(x, np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)

    def evaluate(self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta) -> dict[str, float]:
        probs = self._probabilities(model, x)
        names = self._names(meta)
        out: dict[str, float] = {}
        if meta["multi_label"]:
            truth = y["attributes"] > 0.5
            if meta.get("thresholds") is None:
                meta["thresholds"] = [metrics.balanced_threshold(truth[:, j], probs[:, j]) for j in range(len(names))]
            pred = probs > np.asarray(meta["thresholds"])[None, :]
            for j, name in enumerate(names):
                out[f"accuracy_{name}"] = float(np.mean(pred[:, j] == truth[:, j]))
                out[f"balanced_accuracy_{name}"] = metrics.balanced_accuracy(truth[:, j], pred[:, j])
                out[f"auroc_{name}"] = metrics.auroc(truth[:, j], probs[:, j])
            out["mean_accuracy"] = metrics.nanmean([out[f"accuracy_{n}"] for n in names])
            out["mean_balanced_accuracy"] = metrics.nanmean([out[f"balanced_accuracy_{n}"] for n in names])
        else:
            labels = y["label"]
            pred_idx = probs.argmax(axis=1)
            out["accuracy"] = float(np.mean(pred_idx == labels))
            per_class = metrics.precision_recall_f1(labels, pred_idx, len(names))
            for j, name in enumerate(names):
                out[f"auroc_{name}"] = metrics.auroc(labels == j, probs[:, j])
                for key, values in per_class.items():
                    out[f"{key}_{name}"] = float(values[j])
            out["macro_f1"] = metrics.nanmean([float(v) for v in per_class["f1"]])
            out["balanced_accuracy"] = metrics.nanmean([float(v) for v in per_class["recall"]])
        out["mean_auroc"] = metrics.nanmean([out[f"auroc_{n}"] for n in names])
        return {k: v for k, v in out.items() if np.isfinite(v)}

    def pictures(
        self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta, out_dir: Path
    ) -> list[Path]:
        from sparkvision import pictures

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        probs = self._probabilities(model, x)
        names = self._names(meta)
        paths: list[Path] = []
        if meta["multi_label"]:
            truth = y["attributes"] > 0.5
            pred = probs > np.asarray(meta.get("thresholds") or [0.5] * len(names))[None, :]
            matrices = [metrics.confusion_matrix(truth[:, j], pred[:, j], 2) for j in range(len(names))]
            paths.append(pictures.save_confusion_matrices(matrices, names, [["no", "yes"]] * len(names),
                                                          out_dir / "attributes_confusion.png"))  # fmt: skip
            curves = [metrics.roc_curve(truth[:, j], probs[:, j])[:2] for j in range(len(names))]
            aucs = [metrics.auroc(truth[:, j], probs[:, j]) for j in range(len(names))]
            paths.append(pictures.save_roc_grid(curves, names, aucs, out_dir / "attributes_roc.png"))

            def caption(i: int) -> str:
                p = ",".join(n for n, v in zip(names, pred[i], strict=True) if v)[:40] or "-"
                t = ",".join(n for n, v in zip(names, truth[i], strict=True) if v)[:40] or "-"
                return f"pred {p}\ntrue {t}"
        else:
            labels = y["label"]
            pred_idx = probs.argmax(axis=1)
            matrix = metrics.confusion_matrix(labels, pred_idx, len(names))
            paths.append(pictures.save_confusion_matrices([matrix], ["classes"], [names],
                                                          out_dir / "classes_confusion.png"))  # fmt: skip
            table = out_dir / "classes_confusion.json"
            table.write_text(json.dumps({"classes": names, "rows_true_columns_predicted": matrix.tolist()}, indent=1))
            paths.append(table)

            def caption(i: int) -> str:
                return f"pred {names[pred_idx[i]]} ({probs[i, pred_idx[i]]:.2f})\ntrue {names[int(labels[i])]}"

        n = min(8, len(x))
        if n:
            paths.append(pictures.save_grid([list(x[:n])], out_dir / "attributes_examples.png",
                                            captions=[[caption(i) for i in range(n)]],
                                            title="predicted vs true", cell_inches=2.0))  # fmt: skip
        return paths

    def predict(self, model: tf.keras.Model, x: np.ndarray, meta: Meta) -> dict[str, np.ndarray]:
        probs = self._probabilities(model, x).astype(np.float32)
        names = np.asarray(self._names(meta), dtype=object)
        if meta["multi_label"]:
            thresholds = np.asarray(meta.get("thresholds") or [0.5] * len(names))
            predicted = np.empty(len(probs), dtype=object)
            for i, row in enumerate(probs):
                predicted[i] = [str(n) for n in names[row > thresholds]]
            return {"probabilities": probs, "predicted": predicted}
        idx = probs.argmax(axis=1).astype(np.int32)
        return {"probabilities": probs, "label": idx, "label_name": names[idx]}

    def output_schema(self, meta: Meta) -> list[tuple[str, str]]:
        if meta["multi_label"]:
            return [("probabilities", "array<float>"), ("predicted", "array<string>")]
        return [("probabilities", "array<float>"), ("label", "int"), ("label_name", "string")]


class ClassifierTask(AttributesTask):
    """``train.model: classifier``: the same CNN as a softmax classifier over the classes of a
    class-per-folder table (``attributes`` on a folder table trains the same model)."""

    name = "classifier"
    tables = ("folder",)
    columns = ("image", "label")
