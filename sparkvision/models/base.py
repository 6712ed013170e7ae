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

A Task builds networks, never optimizers: ``build`` returns an uncompiled model with the
loss and metrics it is trained with (``ModelSpec``), and the trainer compiles it with the one
optimizer of ``sparkvision.training.optim`` (learning rate scaled by the workers, Horovod
wrapper where there are several).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ModelSpec:
    """An uncompiled model and what it is compiled with, except the optimizer.

    ``loss`` None means the model computes its loss itself (custom ``train_step``/``test_step``
    returning named losses, like the VAE); such a model may expose a ``tape_wrapper``
    attribute that ``compile`` sets, so gradients can be averaged across workers.
    """

    model: tf.keras.Model
    loss: Any = None
    """A Keras loss (name, function or ``Loss``), or None when the model computes its own."""
    metrics: Sequence[Any] = ()
    weighted_metrics: Sequence[Any] | None = None
    """Metrics weighted by the rows' sample weights; ``[]`` says "none" (and silences Keras'
    warning when rows carry weights for the loss only)."""
    loss_weights: Any = None
    inference_model: tf.keras.Model | None = None
    """The network evaluation, registration and scoring use, sharing ``model``'s weights, when it
    differs from the one trained (the fabric family trains on crops and scores whole tiles); None:
    ``model``."""

    def compile(self, optimizer: Any, tape_wrapper: Any = None) -> tf.keras.Model:
        """Compile ``model`` with ``optimizer`` and this spec's loss and metrics; return it.

        Args:
            optimizer: A Keras optimizer (``sparkvision.training.optim.make_optimizer``).
            tape_wrapper: Wraps the ``tf.GradientTape`` of a model with its own ``train_step``
                (``hvd.DistributedGradientTape``); ignored by models without the attribute.

        Returns:
            The compiled ``model``.
        """
        kwargs: dict[str, Any] = {"optimizer": optimizer, "metrics": list(self.metrics) or None}
        if self.loss is not None:
            kwargs["loss"] = self.loss
        if self.weighted_metrics is not None:
            kwargs["weighted_metrics"] = list(self.weighted_metrics)
        if self.loss_weights is not None:
            kwargs["loss_weights"] = self.loss_weights
        self.model.compile(**kwargs)
        if tape_wrapper is not None and hasattr(self.model, "tape_wrapper"):
            self.model.tape_wrapper = tape_wrapper
        return self.model


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

        A family that trains on random crops sets ``meta["samples_per_epoch"]``: an epoch then
        draws at least that many (the trainer's steps per epoch), however few the rows.

        Raises:
            ValueError: naming the dataset and what was expected vs found (e.g. image size
                128 requested, 32 ingested; unknown attribute name with the nearest valid one).
        """
        ...

    def columns_for(self, table: str) -> tuple[str, ...]:
        """The columns of ``columns`` that exist in ``table`` (an ingested table kind)."""
        ...

    def fit_statistics(self, meta: Meta, train: pd.DataFrame, cfg: TrainConfig) -> Meta:
        """``meta`` plus what the loss needs from the train split (class or positive weights,
        a baseline); ``meta`` unchanged when the task needs nothing.

        The trainer calls it after ``prepare_meta`` with every train row's target columns
        (``columns_for(table)`` without ``image``), before any worker starts.
        """
        ...

    def build(self, cfg: TrainConfig, meta: Meta) -> ModelSpec:
        """An uncompiled, built model with its loss and metrics; the trainer adds the optimizer.

        Models with a custom ``train_step``/``test_step`` return named losses and leave
        ``ModelSpec.loss`` None.
        """
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
