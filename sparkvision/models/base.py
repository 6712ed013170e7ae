"""The interface every model family implements: one ``Task`` per entry of ``REGISTRY``.

A Task is everything model-specific, so the trainer, the scorer and the reports stay
generic: which ingested table it trains on, how a Parquet row becomes ``(x, y)``, the
Keras builder, evaluation, pictures and the columns it writes when scoring.

Data flow (all images arrive as the PNG bytes of the ``image`` column):

* training (on Horovod workers): petastorm rows → ``keep_for_training`` filter →
  ``parse_row`` → shuffle/batch → ``model.fit``;
* evaluation and pictures (on the driver, rank-0 model): a pandas DataFrame of the val/test
  split → ``arrays`` → ``evaluate`` / ``pictures``;
* scoring (pyfunc on executors): preprocessed float images → ``predict`` → output columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from sparkvision.config import TrainConfig

Meta = dict[str, Any]
"""JSON-serialisable facts about the trained model (image size, class names, attribute
indices, anomaly threshold, ...). Stored with the model in MLflow, so scoring needs nothing
else."""


class Task(Protocol):
    """One model family: its data, its network, its evaluation and its scoring outputs."""

    name: str
    """Registry key, e.g. ``"vae"``; also the suffix of the registered model name."""
    tables: tuple[str, ...]
    """Ingested table kinds it can train on (``"celeba"``, ``"fabric"``, ``"folder"``)."""
    columns: tuple[str, ...]
    """Parquet columns the input pipeline reads (always includes ``"image"``)."""

    def prepare_meta(self, manifest: dict[str, Any], cfg: TrainConfig) -> Meta:
        """Check that the dataset fits the task and return the model's meta.

        Raises:
            ValueError: naming the dataset and what was expected vs found (e.g. image size
                128 requested, 32 ingested; unknown attribute name with the nearest valid one).
        """
        ...

    # Optional: ``fit_statistics(meta, train_targets: pd.DataFrame, cfg) -> Meta`` adds what the
    # loss needs from the train split's target columns (class weights, positive weights);
    # the trainer calls it after ``prepare_meta`` when a task defines it.

    def build(self, cfg: TrainConfig, meta: Meta) -> tf.keras.Model:
        """A compiled model (custom ``train_step``/``test_step`` returning named losses where needed)."""
        ...

    def keep_for_training(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        """Scalar ``tf.bool``: whether a train-split row is used (fabric_ae: defect-free only)."""
        ...

    def parse_row(self, row: dict[str, tf.Tensor], meta: Meta, cfg: TrainConfig, training: bool) -> tuple[Any, Any]:
        """One petastorm row (tensors keyed by column) → ``(x, y)`` for ``fit``, with augmentation when training."""
        ...

    def arrays(self, frame: pd.DataFrame, meta: Meta) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rows of an ingested split (pandas) → float32 images in [0,1] and named numpy targets."""
        ...

    def evaluate(self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta) -> dict[str, float]:
        """Metrics on held-out data (may update ``meta``, e.g. the anomaly threshold chosen on val)."""
        ...

    def pictures(
        self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta, out_dir: Path
    ) -> list[Path]:
        """Write PNG pictures people look at (reconstructions, boxes, heatmaps, ...); return their paths."""
        ...

    def predict(self, model: tf.keras.Model, x: np.ndarray, meta: Meta) -> dict[str, np.ndarray]:
        """Scoring outputs for a batch of float images: column name → array with one row per image."""
        ...

    def output_schema(self, meta: Meta) -> list[tuple[str, str]]:
        """``(column, Spark DDL type)`` of what ``predict`` returns, e.g. ``("mu", "array<float>")``."""
        ...
