"""Shared fixtures: one local SparkSession, the test configuration, generated data sets,
and a real MLflow server on a free 127.0.0.1 port. Everything session-scoped is built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparkvision.config import Config, load_config


@pytest.fixture(scope="session")
def cfg() -> Config:
    """The test configuration layer (tiny images, few steps)."""
    return load_config("test")


@pytest.fixture(scope="session")
def spark(cfg: Config):
    """The one local SparkSession of the test session."""
    from sparkvision.spark import get_spark

    session = get_spark(cfg.spark)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def celeba_dir(tmp_path_factory: pytest.TempPathFactory, cfg: Config) -> Path:
    """A generated CelebA-format folder (48 images, 4 per identity)."""
    from sparkvision.data.generators.celeba import generate_celeba

    out = tmp_path_factory.mktemp("celeba")
    generate_celeba(out, count=cfg.generate.celeba_count, seed=0,
                    images_per_identity=cfg.generate.celeba_images_per_identity)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def fabric_dir(tmp_path_factory: pytest.TempPathFactory, cfg: Config) -> Path:
    """A generated MVTec-AD-format fabric category folder."""
    from sparkvision.data.generators.fabric import generate_mvtec

    out = tmp_path_factory.mktemp("fabric")
    g = cfg.generate
    generate_mvtec(out, seed=0, train_count=g.fabric_train_count, test_count=g.fabric_test_count,
                   image_size=g.fabric_image_size)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def celeba_parquet(spark, cfg: Config, celeba_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated CelebA folder ingested once with the test configuration (2 row groups per split).

    Shared read-only by the training, faces and scoring tests; copy before modifying."""
    from sparkvision.data.ingest import ingest

    out = tmp_path_factory.mktemp("celeba-parquet") / "celeba"
    ingest(spark, "celeba", str(celeba_dir), str(out), cfg.ingest, workers=2)
    return out


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow server (SQLite + artifact folder) on a free port; yields its URL and
    points MLFLOW_TRACKING_URI at it for the session. Stopped by process group at the end."""
    from sparkvision import tracking
    from sparkvision.config import MlflowConfig

    state = tmp_path_factory.mktemp("mlflow")
    server = tracking.start_server(MlflowConfig(port=0), state)  # port 0: the server picks a free one
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    try:
        yield server.url
    finally:
        tracking.stop_server(state)
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
