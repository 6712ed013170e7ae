"""Batch scoring with a registered model: ``score(spark, model_uri, input, output, cfg, incremental)``."""

from __future__ import annotations

from sparkvision.scoring.batch import score

__all__ = ["score"]
