"""Every model family learns: trained end to end through ``train`` (petastorm, real MLflow) on
generated data, each must beat a chance-level or do-nothing baseline on its held-out split by
a margin stated below, judged in inference mode.

Jobs are stated for 2 workers. Most run in-process (``InProcessBackend``) as the equivalent
1-worker job: the same images per step in one batch of twice the size, at the same scaled
learning rate (``train_checked``, ``_one_worker``: conftest). The attribute CNN and the 2-worker classifier run on Horovod
on Spark.

The margins are set so that an untrained model, or one whose inference-mode network is
broken (BatchNorm statistics that never settled), fails; the note of the model-quality issue
lists what each test reported for an untrained model. ``benchmarks/quality.py`` runs the same
families at full size against the project's goals. The VAE showcase and the fabric model are in
``test_quality_latent.py`` and ``test_quality_fabric.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sparkvision.config import Config
from sparkvision.data import publish

pytestmark = pytest.mark.slow

FACES = 640
"""Generated faces for the quality tests (32x32 after ingest): enough rows for 8 identities'
worth of attributes per split without making ``make test`` slow."""


@pytest.fixture(scope="module")
def faces_parquet(spark, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sparkvision.data.generators.celeba import generate_celeba
    from sparkvision.data.ingest import ingest

    raw = tmp_path_factory.mktemp("quality-faces")
    generate_celeba(raw, count=FACES, seed=3, images_per_identity=4)
    out = tmp_path_factory.mktemp("quality-faces-parquet") / "celeba"
    ingest(spark, "celeba", str(raw), str(out), cfg.ingest, workers=2)
    return out


def _drawn_mean(metrics: dict[str, float], prefix: str, attributes: tuple[str, ...]) -> float:
    return float(np.mean([metrics[f"{prefix}auroc_{a}"] for a in attributes if f"{prefix}auroc_{a}" in metrics]))


@pytest.fixture(scope="module")
def coarse_attributes_cnn(spark, train_checked, mlflow_server: str, cfg: Config, faces_parquet: Path,
                          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # fmt: skip
    """The attribute CNN on the coarse attributes, on Horovod on Spark (also the judge of the VAE's vectors)."""
    from sparkvision.data.generators.celeba import COARSE_ATTRIBUTES

    return train_checked(spark, cfg, faces_parquet, tmp_path_factory.mktemp("quality-attributes"), **{
        "train.model": "attributes", "train.attributes": json.dumps(list(COARSE_ATTRIBUTES)),
        "train.epochs": "12", "train.steps_per_epoch": "16", "train.batch_size": "16",
        "train.learning_rate": "0.002", "train.bn_calibration_batches": "8"})  # fmt: skip


def test_attribute_cnn_beats_chance_on_coarse_attributes(coarse_attributes_cnn: dict[str, Any]) -> None:
    """On Horovod on Spark. Six epochs ended at 0.727 on an AMD EPYC machine (under the margin) and their
    1-worker equivalent at 0.745 on the machine of earlier sessions; ten ended at 0.7495 on an Intel Xeon
    with AMX (oneDNN's kernels differ by machine; the run repeats exactly on one), twelve at 0.795 there
    (best checkpoint epoch 11)."""
    from sparkvision.data.generators.celeba import COARSE_ATTRIBUTES

    m = coarse_attributes_cnn["metrics"]
    auroc = _drawn_mean(m, "test_", COARSE_ATTRIBUTES)
    # Chance is 0.5; an untrained CNN scores about 0.5 too.
    assert auroc >= 0.75, f"test mean AUROC over {COARSE_ATTRIBUTES}: {auroc:.3f} (metrics {m})"
    # Thresholds picked on val: balanced accuracy well above the 0.5 of a constant answer.
    assert m["test_mean_balanced_accuracy"] >= 0.65, m["test_mean_balanced_accuracy"]


def test_detector_finds_the_face_better_than_the_mean_box(spark, in_process, train_checked, mlflow_server: str, cfg: Config,
                                                          faces_parquet: Path, tmp_path: Path) -> None:  # fmt: skip
    result = train_checked(spark, cfg, faces_parquet, tmp_path, in_process, **{
        "train.model": "detector", "train.detector_target": "bbox", "train.epochs": "6",
        "train.steps_per_epoch": "16", "train.batch_size": "16", "train.learning_rate": "0.002",
        "train.augment_shift": "0.15", "train.bn_calibration_batches": "8"})  # fmt: skip
    m = result["metrics"]
    # Aligned faces barely move, so the mean box is already a good answer; on the test faces
    # moved by up to 15% of the side it is not. mae_ratio = model MAE / MAE of the mean box: an
    # untrained regressor answers 0.5 everywhere (ratio > 1, IoU 0).
    assert m["test_shifted_mae_ratio"] <= 0.7, m
    assert m["test_shifted_mean_iou"] >= m["test_shifted_baseline_mean_iou"] + 0.05, m


@pytest.fixture(scope="module")
def trained_vae(spark, in_process, train_checked, mlflow_server: str, cfg: Config, faces_parquet: Path,
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # fmt: skip
    return train_checked(spark, cfg, faces_parquet, tmp_path_factory.mktemp("quality-vae"), in_process, **{
        "train.model": "vae", "train.epochs": "8", "train.steps_per_epoch": "16", "train.batch_size": "16",
        "train.learning_rate": "0.002", "train.latent_dim": "32", "train.bn_calibration_batches": "8"})  # fmt: skip


def test_vae_reconstructs_better_than_the_mean_image(trained_vae: dict[str, Any]) -> None:
    m = trained_vae["metrics"]
    # recon_mse_ratio = reconstruction MSE / MSE of the mean image; an untrained decoder (grey
    # 0.5 everywhere) is above 1.
    assert m["test_recon_mse_ratio"] <= 0.6, m


@pytest.mark.parametrize("workers", [1, 2])
def test_classifier_on_class_sorted_folders_generalises(workers: int, spark, in_process, train_checked, mlflow_server: str,
                                                        cfg: Config, folder_parquet: Path, tmp_path: Path) -> None:  # fmt: skip
    """The folder set's paths sort by class; ingest mixes the classes over files, and the
    inference-mode network (BatchNorm recalibrated) scores what the training-mode one does.
    One worker in-process; two on Horovod on Spark, each rank with its own shards."""
    from mlflow import MlflowClient

    backend = in_process if workers == 1 else None
    result = train_checked(spark, cfg, folder_parquet, tmp_path, backend, **{
        "train.model": "classifier", "train.workers": str(workers), "train.epochs": "4",
        "train.steps_per_epoch": str(8 // workers), "train.batch_size": "16", "train.learning_rate": "0.002",
        "train.bn_calibration_batches": "4"})  # fmt: skip
    m = result["metrics"]
    assert m["test_accuracy"] >= 0.8, m  # 4 classes: chance 0.25
    # Inference mode on train rows (driver) against validation, and against the training-mode
    # accuracy of the last epoch (rank 0, augmented rows): no gap beyond a few rows' worth.
    assert abs(m["eval_train_accuracy"] - m["eval_val_accuracy"]) <= 0.15, m
    assert m["eval_train_accuracy"] >= m["accuracy"] - 0.1, m
    run = MlflowClient(mlflow_server).get_run(result["run_id"])
    names = result["meta"]["class_names"]
    for key in ("precision", "recall", "f1"):
        assert all(f"test_{key}_{c}" in run.data.metrics for c in names), key
    counts = result["meta"]["class_counts"]
    assert (
        sum(counts)
        == json.loads((Path(publish.current(folder_parquet).location.path) / "manifest.json").read_text())["splits"][
            "train"
        ]
    )
    assert min(counts) > 0 and len(counts) == len(names)
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(result["run_id"], "pictures")}
    assert "pictures/classes_confusion.json" in artifacts, artifacts
