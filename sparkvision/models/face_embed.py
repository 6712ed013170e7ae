"""The face embedding CNN: identity labels (CelebA ``identity_CelebA.txt``) → a metric-learned,
L2-normalised embedding for face identification (``sparkvision faces``), beside the VAE's ``mu``.

Network: inputs larger than ``MAX_SIDE`` are average-pooled down to it (identity lives in face
geometry and colours, which survive; it keeps a 128px model fast on CPUs), then Conv+BN+ReLU+
MaxPool blocks (32, 64, 128, 128; fewer on small inputs, down to a 4x4 map), Flatten (the map
keeps where the eyes, mouth and face edge are), Dropout, Dense ``embedding_dim`` and BatchNorm.
Loss: a large-margin cosine softmax (CosFace, ``layers.FaceEmbedder``) over the train split's
identities; CelebA splits are identity-disjoint, so val and test identities are never trained
on and their figures are those of new people.

Meta keys: ``identities`` (sorted identity numbers of the train split = the head's classes),
``embedding_dim``, ``margin``, ``scale``, ``gallery_images``, ``eval_far``.
Evaluation of a split: every other identity is enrolled (first ``gallery_images`` images as its
gallery, the rest as probes), the others are impostors: ``rank1``, ``tar`` at ``far`` (see
``metrics.open_set_identification``), plus the batch losses of ``FaceEmbedder``.
"""

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

BLOCK_FILTERS = (32, 64, 128, 128)
MAX_SIDE = 64
"""Inputs above this side are average-pooled to it before the first convolution."""
EVAL_GALLERY_IMAGES = 2
"""Gallery images per enrolled identity in the Task's evaluation."""
EVAL_FAR = 0.01
"""False-accept rate of the Task's ``tar`` figure."""


def build_backbone(input_shape: tuple[int, int, int], embedding_dim: int, dropout: float = 0.25,
                   width: float = 1.0) -> tf.keras.Model:  # fmt: skip
    """Image → un-normalised ``embedding`` (float32): optional average pooling to ``MAX_SIDE``,
    Conv blocks (``BLOCK_FILTERS`` times ``width``), Flatten, Dropout, Dense and BatchNorm (see the
    module docstring)."""
    import math

    import tensorflow as tf

    from sparkvision.models.layers import conv_block

    inputs = tf.keras.Input(shape=input_shape, name="image")
    x = inputs
    side = input_shape[0]
    if side > MAX_SIDE:
        factor = side // MAX_SIDE
        x = tf.keras.layers.AveragePooling2D(factor, name="downscale")(x)
        side //= factor
    n_blocks = max(1, min(len(BLOCK_FILTERS), int(math.log2(max(side, 2))) - 2))
    for i, filters in enumerate(common.widened(BLOCK_FILTERS, width)[:n_blocks]):
        x = conv_block(x, filters, f"block_{i}", pool=True)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    x = tf.keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = tf.keras.layers.Dense(embedding_dim, use_bias=False, name="embedding_dense")(x)
    x = tf.keras.layers.BatchNormalization(name="embedding_bn", dtype="float32")(x)
    return tf.keras.Model(inputs, x, name="backbone")


def build_face_embedder(
    input_shape: tuple[int, int, int], n_classes: int, embedding_dim: int = 128, dropout: float = 0.25,
    scale: float = 30.0, margin: float = 0.25, width: float = 1.0,
) -> tf.keras.Model:  # fmt: skip
    """An uncompiled, built ``layers.FaceEmbedder`` with ``n_classes`` training identities."""
    from sparkvision.models.layers import FaceEmbedder

    backbone = build_backbone(input_shape, embedding_dim, dropout, width)
    model = FaceEmbedder(backbone, n_classes, scale=scale, margin=margin)
    model.build((None, *input_shape))
    return model


def embed(model: tf.keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Unit embeddings of images (inference mode), ``float32 (N, d)``."""
    parts = common.predict_batches(lambda b: model(b, training=False).numpy(), np.asarray(x, np.float32), batch_size)
    return np.concatenate(parts) if parts else np.zeros((0, int(model.backbone.outputs[0].shape[-1])), np.float32)


class FaceEmbedTask:
    """The face embedding CNN as a ``Task``; see ``base.Task`` for the contract."""

    name = "face_embed"
    tables = ("celeba",)
    columns = ("image", "identity")

    def columns_for(self, table: str) -> tuple[str, ...]:
        """``("image", "identity")``: CelebA tables have both."""
        return self.columns

    def prepare_meta(self, manifest: dict[str, Any], cfg: TrainConfig) -> Meta:
        meta = common.base_meta(self.name, self.tables, manifest, cfg)
        meta.update(embedding_dim=cfg.embedding_dim, margin=cfg.face_margin, scale=cfg.face_scale,
                    gallery_images=EVAL_GALLERY_IMAGES, eval_far=EVAL_FAR)  # fmt: skip
        return meta

    def fit_statistics(self, meta: Meta, train: pd.DataFrame, cfg: TrainConfig) -> Meta:
        """``meta`` plus ``identities``: the sorted identity numbers of the train split (the classes).

        Raises:
            ValueError: Fewer than 2 identities, or every identity has a single image (nothing
                to pull together).
        """
        ids = train["identity"].astype(np.int64).to_numpy()
        values, counts = np.unique(ids, return_counts=True)
        if len(values) < 2 or counts.max() < 2:
            raise ValueError(f"train split: face_embed needs at least 2 identities and one with 2 or more images, "
                             f"found {len(values)} identities, at most {int(counts.max(initial=0))} image(s) each")  # fmt: skip
        return {**meta, "identities": [int(v) for v in values]}

    def build(self, cfg: TrainConfig, meta: Meta) -> ModelSpec:
        """The model computes its own losses (``train_step``) and takes a ``tape_wrapper``."""
        size = meta["image_size"]
        model = build_face_embedder((size, size, 3), len(meta["identities"]), int(meta["embedding_dim"]), cfg.dropout,
                                    float(meta["scale"]), float(meta["margin"]), float(meta.get("width", 1.0)))  # fmt: skip
        return ModelSpec(model)

    def keep_for_training(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        return common.keep_every_row(row)

    def parse_row(self, row: dict[str, tf.Tensor], meta: Meta, cfg: TrainConfig, training: bool) -> tuple[Any, Any]:
        """``(image, [identity, class index])``; the class index is -1 for an identity not trained on."""
        import tensorflow as tf

        image = common.row_image(row, meta, cfg, training)
        classes = tf.constant(meta["identities"], tf.int32)
        identity = tf.reshape(tf.cast(row["identity"], tf.int32), (1,))
        pos = tf.minimum(tf.searchsorted(classes, identity), len(meta["identities"]) - 1)
        label = tf.where(tf.gather(classes, pos) == identity, tf.cast(pos, tf.int32), -1)
        target = tf.concat([identity, label], axis=0)
        target.set_shape((2,))
        return image, target

    def arrays(self, frame: pd.DataFrame, meta: Meta) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x = common.decode_column(frame, meta["image_size"])
        return x, {"identity": common.stack_column(frame, "identity", "int64").reshape(-1)}

    def evaluate(self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta) -> dict[str, float]:
        e = embed(model, x)
        ids = y["identity"]
        figures = metrics.open_set_identification(e, ids, metrics.alternate_identities(ids),
                                                  gallery_images=int(meta.get("gallery_images", EVAL_GALLERY_IMAGES)),
                                                  far=float(meta.get("eval_far", EVAL_FAR)))  # fmt: skip
        out = {"rank1": figures["rank1"], "tar_at_far": figures["tar"], "far": figures["far"],
               "threshold": figures["threshold"], "identities": figures["identities"]}  # fmt: skip
        # Same-identity vs other-identity cosine over all pairs of the split.
        sims = e @ e.T
        same = ids[:, None] == ids[None, :]
        off = ~np.eye(len(ids), dtype=bool)
        if (same & off).any() and (~same).any():
            out["genuine_cosine"] = float(sims[same & off].mean())
            out["impostor_cosine"] = float(sims[~same].mean())
            out["verification_auroc"] = metrics.auroc(same[off], sims[off])
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}

    def pictures(
        self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta, out_dir: Path
    ) -> list[Path]:
        """``face_embed_neighbours.png``: each of the first images beside its nearest other image."""
        from sparkvision import pictures

        n = len(x)
        if n < 3:
            return []
        e = embed(model, x)
        sims = e @ e.T - 2.0 * np.eye(n)
        nearest = sims.argmax(axis=1)
        k = min(8, n)
        ids = y["identity"]
        captions = [[f"id {int(ids[i])}" for i in range(k)],
                    [f"id {int(ids[nearest[i]])} cos {sims[i, nearest[i]]:.2f}" for i in range(k)]]  # fmt: skip
        path = pictures.save_grid([list(x[:k]), [x[j] for j in nearest[:k]]], Path(out_dir) / "face_embed_neighbours.png",
                                  row_titles=["image", "nearest"], captions=captions,
                                  title="nearest neighbour in the embedding")  # fmt: skip
        return [path]

    def predict(self, model: tf.keras.Model, x: np.ndarray, meta: Meta) -> dict[str, np.ndarray]:
        return {"embedding": embed(model, x).astype(np.float32)}

    def output_schema(self, meta: Meta) -> list[tuple[str, str]]:
        return [("embedding", "array<float>")]
