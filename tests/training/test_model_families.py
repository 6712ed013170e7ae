"""Every model family trains end to end through ``train`` (2 Horovod workers, real MLflow):
one finished run with per-epoch metrics, the family's own test metrics, pictures, and a
registered version behind the alias."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from sparkvision.config import Config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fabric_parquet(spark, cfg: Config, fabric_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sparkvision.data.ingest import ingest

    out = tmp_path_factory.mktemp("fabric-parquet") / "fabric"
    ingest(spark, "mvtec", str(fabric_dir), str(out), cfg.ingest, workers=2)
    return out


FAMILIES = {
    # model: (dataset fixture, test metrics that must exist, metrics bounded in [0, 1])
    "attributes": ("celeba_parquet", ["test_mean_auroc", "test_mean_accuracy"], ["test_mean_accuracy"]),
    "detector": ("celeba_parquet", ["test_mean_iou", "test_pixel_mae"], ["test_mean_iou"]),
    "fabric_ae": ("fabric_parquet", ["test_image_auroc", "test_pixel_auroc", "eval_val_threshold"],
                  ["test_image_auroc", "test_pixel_auroc"]),
}  # fmt: skip


@pytest.mark.parametrize("model", sorted(FAMILIES))
def test_family_trains_evaluates_and_registers(
    model: str, request: pytest.FixtureRequest, spark, mlflow_server: str, cfg: Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    from mlflow import MlflowClient

    from sparkvision.training import train

    fixture, required, unit_interval = FAMILIES[model]
    data_dir: Path = request.getfixturevalue(fixture)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    run_cfg = cfg.replace(**{
        "train.model": model, "train.workers": "2", "train.epochs": "2", "train.steps_per_epoch": "4",
        "train.image_size": str(manifest["image_size"]), "train.experiment": f"families-{uuid.uuid4().hex[:8]}",
        "paths.store": str(tmp_path_factory.mktemp(f"store-{model}")),
    })  # fmt: skip
    result: dict[str, Any] = train(spark, run_cfg, str(data_dir), resume=False)

    client = MlflowClient(mlflow_server)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    for key in required:
        assert key in run.data.metrics, f"{model}: {key} not logged (have {sorted(run.data.metrics)})"
    for key in unit_interval:
        assert 0.0 <= run.data.metrics[key] <= 1.0, (key, run.data.metrics[key])
    assert any(a.path.startswith("pictures/") for a in client.list_artifacts(run.info.run_id, "pictures"))
    version = client.get_model_version_by_alias(f"sparkvision-{model}", "candidate")
    assert version.run_id == run.info.run_id and version.version == result["version"]
