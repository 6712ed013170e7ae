"""Shared fixtures: one local SparkSession, the in-process training backend, the test
configuration, generated data sets, and a real MLflow server on a free 127.0.0.1 port.
Everything session-scoped is built once per test process (``make test`` runs two, see
DEVELOPERS.md)."""

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
    """The one local SparkSession of this test process."""
    from sparkvision.spark import get_spark

    session = get_spark(cfg.spark)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def in_process():
    """The in-process training backend: ``train(..., backend=in_process)`` runs the real
    workers in the test process as a world of one (``train.workers=1``): no Spark job, no
    Horovod start-up. Tests of what needs several ranks keep the default Horovod-on-Spark."""
    from sparkvision.training.backend import InProcessBackend

    return InProcessBackend()


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
def folder_dir(tmp_path_factory: pytest.TempPathFactory, cfg: Config) -> Path:
    """A class-per-folder data set, 4 classes x 40 images at the test image size (PNG and JPEG).

    Classes ``bars``, ``cross``, ``disc``, ``square`` (labels 0-3) each have their own colour
    and shape on a noisy background, with per-image jitter of position, size and brightness:
    learnable, but not trivially. Sorting the paths sorts by class, like most real folders."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    size = cfg.ingest.image_size
    rng = np.random.default_rng(0)
    colours = np.array([(220, 60, 50), (60, 200, 70), (60, 90, 230), (230, 210, 60)], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for label, name in enumerate(("bars", "cross", "disc", "square")):
        (root / name).mkdir()
        for i in range(40):
            cx, cy = rng.uniform(0.35, 0.65, size=2) * size
            r = rng.uniform(0.2, 0.3) * size
            dx, dy = np.abs(xx - cx), np.abs(yy - cy)
            shape = [
                (dx < r) & (dy < r) & ((yy // max(2, int(r / 2))) % 2 == 0),  # horizontal bars
                (dx < r) & (dy < r) & ((dx < r / 3) | (dy < r / 3)),  # plus sign
                dx**2 + dy**2 < r**2,  # disc
                (dx < r * 0.8) & (dy < r * 0.8),  # square
            ][label]
            img = rng.normal(110, 25, (size, size, 3)).astype(np.float32)
            img[shape] = colours[label] + rng.normal(0, 20, (int(shape.sum()), 3))
            img *= rng.uniform(0.75, 1.25)
            pixels = np.clip(img, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="session")
def folder_parquet(spark, cfg: Config, folder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``folder_dir`` ingested once with the test configuration (``workers=2``).

    Shared read-only by the ingest, input-pipeline and training tests; copy before modifying."""
    from sparkvision.data.ingest import ingest

    out = tmp_path_factory.mktemp("folder-parquet") / "folder"
    ingest(spark, "folder", str(folder_dir), str(out), cfg.ingest, workers=2)
    return out


@pytest.fixture(scope="session")
def every_format_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two class folders with one image per ``IMAGE_EXTENSIONS`` entry (``.tif`` in ``cat/``,
    upper-case names in ``dog/``), plus a text file that is no image.

    Pillow writes each file in the format its extension names."""
    import numpy as np
    from PIL import Image

    from sparkvision.data.images import IMAGE_EXTENSIONS

    root = tmp_path_factory.mktemp("every-format")
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir()
        for i, ext in enumerate(IMAGE_EXTENSIONS):
            img = Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
            img = img.convert("L") if ext == "pgm" else img
            img.save(root / cls / f"{i:02d}.{ext.upper() if cls == 'dog' else ext}")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


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


@pytest.fixture(scope="session")
def tracking(mlflow_server: str):
    """The session's MLflow server as the ``Tracking`` object commands pass down."""
    from sparkvision.tracking import Tracking

    return Tracking(mlflow_server)


@pytest.fixture(scope="session")
def register_model(tracking):
    """``register_model(model, task_name, meta, name, experiment, alias="candidate") -> ModelRef``: log a
    Keras model into a new run of ``experiment`` and register it as ``name@alias``."""

    def register(model, task_name: str, meta: dict, name: str, experiment: str, alias: str = "candidate"):
        run_id = tracking.create_run(experiment, f"{name}-test")
        ref = tracking.log_model(run_id, model, task_name, meta, name, alias)
        tracking.finish_run(run_id)
        return ref

    return register


@pytest.fixture(scope="session")
def race_writers():
    """``race_writers(job) -> (won, lost)``: ``job(0)`` and ``job(1)`` started together on two threads
    writing one output; what they returned, and the ``PublishConflict`` each loser raised."""
    import threading

    from sparkvision.data.publish import PublishConflict

    def race(job):
        outcomes: dict[int, object] = {}
        start = threading.Barrier(2)

        def writer(i: int) -> None:
            start.wait()
            try:
                outcomes[i] = job(i)
            except PublishConflict as exc:
                outcomes[i] = exc

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [o for o in outcomes.values() if not isinstance(o, PublishConflict)]
        lost = [o for o in outcomes.values() if isinstance(o, PublishConflict)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        return won, lost

    return race


@pytest.fixture(scope="session")
def fabric_models(spark, in_process, tracking, cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two versions of one registered fabric_ae model, trained through ``train`` (in-process) on one
    ingested MVTec category (128 px images cut into 32 px tiles): ``trained`` (120 steps) and
    ``untrained`` (one step at a learning rate of 1e-9). Neither keeps the ``candidate`` alias
    fixed: tests point it where they need. Keys: ``name``, ``raw`` (the category), ``data`` (the
    dataset), ``trained``/``untrained`` (``train`` results)."""
    import dataclasses
    import uuid

    from sparkvision.data.generators.fabric import generate_mvtec
    from sparkvision.data.ingest import ingest
    from sparkvision.training import train

    root = tmp_path_factory.mktemp("fabric-models")
    raw = generate_mvtec(root / "raw", seed=1, train_count=10, test_count=3, image_size=128)
    data = root / "parquet"
    ingest(spark, "mvtec", str(raw), str(data), dataclasses.replace(cfg.ingest, tile_size=32, tile_stride=32,
                                                                   tile_resize=0), workers=1)  # fmt: skip
    prefix = f"fabric-{uuid.uuid4().hex[:6]}"
    base = {"train.model": "fabric_ae", "train.workers": "1", "train.image_size": "32", "train.latent_dim": "32",
            "train.batch_size": "16", "train.registered_model_prefix": prefix, "train.experiment": prefix,
            "train.pictures": "false", "paths.store": str(root / "store"), "mlflow.tracking_uri": tracking.uri}  # fmt: skip
    untrained = train(spark, cfg.replace(**base, **{"train.epochs": "1", "train.steps_per_epoch": "1",
                                                    "train.learning_rate": "1e-9"}), str(data), backend=in_process)  # fmt: skip
    trained = train(spark, cfg.replace(**base, **{"train.epochs": "4", "train.steps_per_epoch": "30",
                                                  "train.learning_rate": "0.002"}), str(data), backend=in_process)  # fmt: skip
    return {"name": f"{prefix}-fabric_ae", "raw": raw, "data": data, "trained": trained, "untrained": untrained}
