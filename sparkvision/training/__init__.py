"""Horovod-on-Spark training with checkpoints, resume and MLflow tracking (see ``trainer.train``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from sparkvision.config import Config


def train(spark: SparkSession, cfg: Config, data_dir: str, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg.train.model`` on an ingested dataset; see ``sparkvision.training.trainer.train``."""
    from sparkvision.training.trainer import train as _train

    return _train(spark, cfg, data_dir, resume)


__all__ = ["train"]
