"""Shared by the model-quality test files: ``train_checked`` trains through ``train`` and checks what
every family owes MLflow. The quality tests are split over files (``test_quality*.py``) so that
``make test``'s processes, which take whole files, share them out."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from sparkvision.config import Config
from sparkvision.data import publish


def _one_worker(cfg: Config) -> Config:
    """The 1-worker job equivalent to ``cfg``: each step sees all workers' batches at once, and
    ``learning_rate`` × workers is the rate the workers were scaled to."""
    n, t = cfg.train.workers, cfg.train
    return cfg.replace(**{"train.workers": "1", "train.batch_size": str(n * t.batch_size),
                          "train.learning_rate": repr(n * t.learning_rate)})  # fmt: skip


def _train(spark, cfg: Config, data_dir: Path, tmp: Path, backend: Any = None, **overrides: str) -> dict[str, Any]:
    """Train through ``train`` (``backend`` None: Horovod on Spark as stated; else the
    equivalent 1-worker job on ``backend``) and check what every family owes MLflow: one
    finished run with a metric per epoch, pictures, and the registered version behind the alias."""
    from mlflow import MlflowClient

    from sparkvision.training import train

    manifest = json.loads((Path(publish.current(data_dir).location.path) / "manifest.json").read_text())
    settings = {"train.workers": "2", "train.image_size": str(manifest["image_size"]),
                "train.experiment": f"quality-{uuid.uuid4().hex[:8]}", "paths.store": str(tmp / "store"),
                **overrides}  # fmt: skip
    run_cfg = cfg.replace(**settings)
    if backend is not None:
        run_cfg = _one_worker(run_cfg)
    result = train(spark, run_cfg, str(data_dir), resume=False, backend=backend)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    epochs = run_cfg.train.epochs
    for key in ("loss", "val_loss", "train_eval_loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(epochs)), key
    assert any(a.path.startswith("pictures/") for a in client.list_artifacts(run.info.run_id, "pictures"))
    version = client.get_model_version_by_alias(f"sparkvision-{run_cfg.train.model}", "candidate")
    assert version.run_id == run.info.run_id and version.version == result["version"]
    return result


@pytest.fixture(scope="session")
def train_checked():
    """``train_checked(spark, cfg, data_dir, tmp, backend=None, **overrides) -> train()'s result``: jobs are
    stated for 2 workers; with a ``backend`` (``in_process``) the equivalent 1-worker job runs instead."""
    return _train
