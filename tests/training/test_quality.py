"""Every model family learns: trained end to end through ``train`` (petastorm, real MLflow) on
generated data, each must beat a chance-level or do-nothing baseline on its held-out split by
a margin stated below, judged in inference mode.

Jobs are stated for 2 workers. Most run in-process (``InProcessBackend``) as the equivalent
1-worker job: the same images per step in one batch of twice the size, at the same scaled
learning rate (``_one_worker``). The attribute CNN and the 2-worker classifier run on Horovod
on Spark.

The margins are set so that an untrained model, or one whose inference-mode network is
broken (BatchNorm statistics that never settled), fails; the note of the model-quality issue
lists what each test reported for an untrained model. ``benchmarks/quality.py`` runs the same
families at full size against the project's goals.
"""

from __future__ import annotations

import json
import os
import uuid
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


def _drawn_mean(metrics: dict[str, float], prefix: str, attributes: tuple[str, ...]) -> float:
    return float(np.mean([metrics[f"{prefix}auroc_{a}"] for a in attributes if f"{prefix}auroc_{a}" in metrics]))


@pytest.fixture(scope="module")
def coarse_attributes_cnn(spark, mlflow_server: str, cfg: Config, faces_parquet: Path,
                          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # fmt: skip
    """The attribute CNN on the coarse attributes, on Horovod on Spark (also the judge of the VAE's vectors)."""
    from sparkvision.data.generators.celeba import COARSE_ATTRIBUTES

    return _train(spark, cfg, faces_parquet, tmp_path_factory.mktemp("quality-attributes"), **{
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


def test_detector_finds_the_face_better_than_the_mean_box(spark, in_process, mlflow_server: str, cfg: Config,
                                                          faces_parquet: Path, tmp_path: Path) -> None:  # fmt: skip
    result = _train(spark, cfg, faces_parquet, tmp_path, in_process, **{
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
def trained_vae(spark, in_process, mlflow_server: str, cfg: Config, faces_parquet: Path,
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # fmt: skip
    return _train(spark, cfg, faces_parquet, tmp_path_factory.mktemp("quality-vae"), in_process, **{
        "train.model": "vae", "train.epochs": "8", "train.steps_per_epoch": "16", "train.batch_size": "16",
        "train.learning_rate": "0.002", "train.latent_dim": "32", "train.bn_calibration_batches": "8"})  # fmt: skip


def test_vae_reconstructs_better_than_the_mean_image(trained_vae: dict[str, Any]) -> None:
    m = trained_vae["metrics"]
    # recon_mse_ratio = reconstruction MSE / MSE of the mean image; an untrained decoder (grey
    # 0.5 everywhere) is above 1.
    assert m["test_recon_mse_ratio"] <= 0.6, m


LATENT_FACES, LATENT_SIZE = 1200, 48
"""Faces of the VAE showcase test: at 48x48 glasses are frames and lenses around the eyes that a
short-trained VAE keeps and a judge sees (at 32x32 the judge barely does)."""
JUDGE_ATTRIBUTES = ("Smiling", "Eyeglasses", "Male", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
JUDGED = ("Smiling", "Eyeglasses")
"""Moved along their vectors; the others are what must stay put (the face stays the same person)."""
MUST_RISE = ("Eyeglasses",)
"""Judged rises asserted here. The smile needs more faces and steps than a test affords: with 960 train
faces and 800 steps its judged rise was +0.009 at 48x48 and +0.045 at 64x64 (Eyeglasses +0.51 and
+0.44); with 2,400-3,200 faces at 64x64 it is +0.3 (README "The VAE's attribute vectors")."""


@pytest.fixture(scope="module")
def latent_parquet(spark, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import dataclasses

    from sparkvision.data.generators.celeba import generate_celeba
    from sparkvision.data.ingest import ingest

    raw = tmp_path_factory.mktemp("quality-latent-faces")
    generate_celeba(raw, count=LATENT_FACES, seed=4, images_per_identity=8)
    out = tmp_path_factory.mktemp("quality-latent-parquet") / "celeba"
    ingest(spark, "celeba", str(raw), str(out), dataclasses.replace(cfg.ingest, image_size=LATENT_SIZE), workers=2)
    return out


@pytest.fixture(scope="module")
def latent_judge(spark, in_process, mlflow_server: str, cfg: Config, latent_parquet: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # fmt: skip
    """An attribute CNN trained independently of the VAE: the judge of what its vectors do."""
    return _train(spark, cfg, latent_parquet, tmp_path_factory.mktemp("quality-judge"), in_process, **{
        "train.model": "attributes", "train.attributes": json.dumps(list(JUDGE_ATTRIBUTES)),
        "train.epochs": "8", "train.steps_per_epoch": "30", "train.batch_size": "16",
        "train.learning_rate": "0.001", "train.bn_calibration_batches": "8"})  # fmt: skip


@pytest.fixture(scope="module")
def showcase_vae(spark, in_process, mlflow_server: str, cfg: Config, latent_parquet: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # fmt: skip
    """The specified VAE with the demo's recipe (reconstruction weighted 1e6, no dropout)."""
    return _train(spark, cfg, latent_parquet, tmp_path_factory.mktemp("quality-showcase-vae"), in_process, **{
        "train.model": "vae", "train.epochs": "8", "train.steps_per_epoch": "100", "train.batch_size": "16",
        "train.learning_rate": "0.001", "train.latent_dim": "64", "train.r_loss_factor": "1000000",
        "train.dropout": "0", "train.bn_calibration_batches": "8"})  # fmt: skip


def test_vae_attribute_vectors_move_held_out_faces(spark, cfg: Config, tracking, register_model,
                                                   latent_parquet: Path, showcase_vae: dict[str, Any],
                                                   latent_judge: dict[str, Any]) -> None:  # fmt: skip
    """``vae vectors`` over the train split; held-out test faces without glasses moved by +2 along the
    Eyeglasses vector must be judged by an independently trained attribute CNN to gain them (+0.51 measured;
    the same VAE untrained, registered with random weights, +0.000), while the judge's sex and hair colours
    stay within 0.15 (0.095 measured) and the smile vector never moves the judge the wrong way."""
    import dataclasses

    from sparkvision import latent
    from sparkvision.models import REGISTRY

    manifest = json.loads((Path(publish.current(latent_parquet).location.path) / "manifest.json").read_text())
    tcfg = dataclasses.replace(cfg.train, image_size=int(manifest["image_size"]), latent_dim=64, dropout=0.0)
    meta = REGISTRY["vae"].prepare_meta(manifest, tcfg)
    untrained = register_model(REGISTRY["vae"].build(tcfg, meta).model, "vae", meta,
                               f"quality-untrained-vae-{uuid.uuid4().hex[:6]}", "quality-latent").uri  # fmt: skip
    factors = [-2.0, 0.0, 2.0]
    judge, vae = (f"models:/{r['registered_model']}/{r['version']}" for r in (latent_judge, showcase_vae))
    trained, base = (latent.judge_vectors(spark, tracking, uri, judge, str(latent_parquet), JUDGE_ATTRIBUTES,
                                          factors, cfg.score, moved=JUDGED) for uri in (vae, untrained))  # fmt: skip
    print(f"judge test AUROC: { {a: round(latent_judge['metrics'][f'test_auroc_{a}'], 3) for a in JUDGED} }")
    print(f"trained: rises {trained['rise']}, others {trained['others']}; untrained: {base['rise']}")
    assert trained["counts"]["failed"] == 0 and trained["faces"] == 48, trained
    for name in JUDGED:
        assert abs(base["rise"][name]) < 0.02, base["rise"]  # the margins below tell the two apart
        assert trained["rise"][name] >= (0.25 if name in MUST_RISE else -0.02), trained["rise"]
        assert max(abs(v) for v in trained["others"][name].values()) <= 0.15, trained["others"]
    assert showcase_vae["metrics"]["test_recon_mse_ratio"] <= 0.35, showcase_vae["metrics"]


@pytest.mark.parametrize("workers", [1, 2])
def test_classifier_on_class_sorted_folders_generalises(workers: int, spark, in_process, mlflow_server: str,
                                                        cfg: Config, folder_parquet: Path, tmp_path: Path) -> None:  # fmt: skip
    """The folder set's paths sort by class; ingest mixes the classes over files, and the
    inference-mode network (BatchNorm recalibrated) scores what the training-mode one does.
    One worker in-process; two on Horovod on Spark, each rank with its own shards."""
    from mlflow import MlflowClient

    backend = in_process if workers == 1 else None
    result = _train(spark, cfg, folder_parquet, tmp_path, backend, **{
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


@pytest.fixture(scope="module")
def fabric_quality_parquet(spark, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec-layout fabric at 128 px (yarns about 4.5 px apart, as in the demo), 64 px tiles."""
    import dataclasses

    from sparkvision.data.generators.fabric import generate_mvtec
    from sparkvision.data.ingest import ingest

    raw = tmp_path_factory.mktemp("quality-fabric")
    generate_mvtec(raw, seed=1, train_count=10, test_count=3, image_size=128)
    out = tmp_path_factory.mktemp("quality-fabric-parquet") / "fabric"
    ingest_cfg = dataclasses.replace(cfg.ingest, tile_size=64, tile_stride=64, tile_resize=0)
    ingest(spark, "mvtec", str(raw), str(out), ingest_cfg, workers=2)
    return out


def test_fabric_model_flags_defective_images(spark, in_process, mlflow_server: str, cfg: Config,
                                             fabric_quality_parquet: Path, tmp_path: Path) -> None:  # fmt: skip
    result = _train(spark, cfg, fabric_quality_parquet, tmp_path, in_process, **{
        "train.model": "fabric_ae", "train.epochs": "5", "train.steps_per_epoch": "30", "train.batch_size": "16",
        "train.learning_rate": "0.001", "train.latent_dim": "32"})  # fmt: skip
    m = result["metrics"]
    # Holes and stains raise any reconstruction's error, so image- and tile-level figures do not
    # tell a trained model from an untrained one on this material (measured, same settings with
    # learning rate 1e-9: image AUROC 1.0, tile AUROC 0.917). Where the defect is does: untrained
    # pixel AUROC 0.791 and AUPRO 0.754, trained 0.969 and 0.945.
    assert m["test_pixel_auroc"] >= 0.90, m
    assert m["test_aupro"] >= 0.85, m
    assert m["test_tile_auroc"] >= 0.75, m
    assert m["test_mean_score_defect"] > m["test_mean_score_good"], m
