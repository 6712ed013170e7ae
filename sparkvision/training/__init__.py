"""Horovod-on-Spark training with checkpoints, resume and MLflow tracking (see ``trainer.train``);
``backend.InProcessBackend`` runs the same workers in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from sparkvision.config import Config


def train(spark: SparkSession, cfg: Config, data_dir: str, resume: bool = False, **options: Any) -> dict[str, Any]:
    """Train ``cfg.train.model`` on an ingested dataset; ``options`` (``backend``, ``planned``,
    ``tracking``) and the result as in ``sparkvision.training.trainer.train``, imported on first call."""
    from sparkvision.training.trainer import train as _train

    return _train(spark, cfg, data_dir, resume, **options)


__all__ = ["train"]
