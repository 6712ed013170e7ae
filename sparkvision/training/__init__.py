"""Horovod-on-Spark training with checkpoints, resume and MLflow tracking (see ``trainer.train``);
``backend.InProcessBackend`` runs the same workers in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from sparkvision.config import Config
    from sparkvision.tracking import Tracking
    from sparkvision.training.backend import Backend
    from sparkvision.training.trainer import Plan


def train(
    spark: SparkSession, cfg: Config, data_dir: str, resume: bool = False, backend: Backend | None = None,
    planned: Plan | None = None, tracking: Tracking | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train ``cfg.train.model`` on an ingested dataset; see ``sparkvision.training.trainer.train``."""
    from sparkvision.training.trainer import train as _train

    return _train(spark, cfg, data_dir, resume, backend=backend, planned=planned, tracking=tracking)


__all__ = ["train"]
