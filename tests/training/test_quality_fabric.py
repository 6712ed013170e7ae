"""The fabric anomaly model learns where defects are (the helper ``train_checked``: conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkvision.config import Config
from sparkvision.data import publish

pytestmark = pytest.mark.slow


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


def test_fabric_model_flags_defective_images(spark, in_process, train_checked, mlflow_server: str, cfg: Config,
                                             fabric_quality_parquet: Path, tmp_path: Path) -> None:  # fmt: skip
    result = train_checked(spark, cfg, fabric_quality_parquet, tmp_path, in_process, **{
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


GRAVEL_TRAIN, GRAVEL_TEST, GRAVEL_SIDE = 24, 3, 128
"""Two dozen 128 px crops of a real gravel photo (scikit-image's, CC0) for training, three of each
painted defect type and of good gravel for testing (``texture_photos``: from rows never trained on)."""


@pytest.fixture(scope="module")
def gravel_parquet(spark, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import dataclasses

    import skimage

    from sparkvision.data.generators.texture_photos import generate_mvtec_from_photos
    from sparkvision.data.ingest import ingest

    raw = tmp_path_factory.mktemp("quality-gravel")
    generate_mvtec_from_photos(Path(skimage.data_dir) / "gravel.png", raw, seed=0, train_count=GRAVEL_TRAIN,
                               test_count=GRAVEL_TEST, crop=GRAVEL_SIDE, image_size=GRAVEL_SIDE)  # fmt: skip
    out = tmp_path_factory.mktemp("quality-gravel-parquet") / "fabric"
    ingest_cfg = dataclasses.replace(cfg.ingest, tile_size=GRAVEL_SIDE, tile_stride=GRAVEL_SIDE, tile_resize=0,
                                     min_row_groups=2)  # fmt: skip
    ingest(spark, "mvtec", str(raw), str(out), ingest_cfg, workers=2)
    return out


def test_fabric_model_learns_real_gravel_from_two_dozen_photos(spark, in_process, train_checked, mlflow_server: str,
                                                               cfg: Config, gravel_parquet: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    """24 photos of one image each: trained on random 32 px crops, ``patches_per_epoch`` of them an epoch
    (not one step of 24 rows), with simulated defects and the segmentation head; scored on whole images.
    An untrained network with the same meta, its thresholds chosen on val alike, is the baseline.

    Where the defects are tells the two apart: AUPRO 0.30 trained against 0.02 untrained, pixel AUROC
    0.72 against 0.22 (measured). Which images hold one does not yet (issue 31): the painted colours
    and dark holes stand out to a random network too (untrained image AUROC 1.00 on these 18 test
    images, trained 0.40; 0.60 after 4 epochs)."""
    import dataclasses

    from mlflow import MlflowClient

    from sparkvision.models import get_task
    from sparkvision.training import data

    result = train_checked(spark, cfg, gravel_parquet, tmp_path, in_process, **{
        "train.model": "fabric_ae", "train.epochs": "3", "train.steps_per_epoch": "0", "train.batch_size": "16",
        "train.patch_size": "32", "train.patches_per_epoch": "768", "train.simulated_defects": "0.5",
        "train.learning_rate": "0.001", "train.latent_dim": "32"})  # fmt: skip
    params = MlflowClient().get_run(result["run_id"]).data.params
    assert int(params["steps_per_epoch"]) == 768 // 32, params  # 2 workers of 16, however few the rows
    trained = result["metrics"]

    task = get_task("fabric_ae")
    meta = {**result["meta"], "calibration": None, "threshold": None, "pixel_threshold": None}
    tcfg = dataclasses.replace(cfg.train, image_size=GRAVEL_SIDE, latent_dim=32)
    untrained_model = task.build(tcfg, meta).inference_model  # whole images, as the trained one is scored
    for split in ("val", "test"):  # val chooses the thresholds, as after training
        info = data.inspect_split(publish.current(gravel_parquet).location.url, split)
        untrained = task.evaluate(untrained_model, *task.arrays(data.read_frame(info, None, info.rows), meta), meta)
    print(
        f"trained: image AUROC {trained['test_image_auroc']:.3f}, pixel AUROC {trained['test_pixel_auroc']:.3f}, "
        f"AUPRO {trained['test_aupro']:.3f}; untrained: {untrained['image_auroc']:.3f}, "
        f"{untrained['pixel_auroc']:.3f}, {untrained['aupro']:.3f}"
    )
    assert trained["test_aupro"] >= untrained["aupro"] + 0.15, (trained, untrained)
    assert trained["test_pixel_auroc"] >= untrained["pixel_auroc"] + 0.1, (trained, untrained)
