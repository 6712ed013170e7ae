"""Registered models for the scoring tests: real Keras models from ``REGISTRY`` (random weights),
logged with ``Tracking.log_model`` to the session's MLflow server, aliased ``candidate``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from sparkvision.config import Config


def register(register_model, task_name: str, cfg: Config) -> dict[str, str]:
    """Build ``task_name`` at the test image size, log + register it; return uri, name, version, run id."""
    from sparkvision.models import REGISTRY

    task = REGISTRY[task_name]
    manifest = {"table": "celeba", "image_size": cfg.train.image_size, "output": "scoring-tests"}
    meta = task.prepare_meta(manifest, cfg.train)
    model = task.build(cfg.train, meta).model
    name = f"score-test-{task_name}-{uuid.uuid4().hex[:6]}"
    ref = register_model(model, task_name, meta, name, "scoring-tests")
    return {"uri": ref.uri, "name": name, "version": str(ref.version), "run_id": str(ref.run_id)}


@pytest.fixture(scope="session")
def attributes_model(register_model, cfg: Config) -> dict[str, str]:
    """The attribute CNN, registered (random weights)."""
    return register(register_model, "attributes", cfg)


@pytest.fixture(scope="session")
def vae_model(register_model, cfg: Config) -> dict[str, str]:
    """The VAE, registered (random weights)."""
    return register(register_model, "vae", cfg)


@pytest.fixture(scope="session")
def new_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mixed-format new faces (JPEG/PNG/grey/RGBA/EXIF-rotated), a truncated JPEG, an empty PNG and a text file."""
    from sparkvision.data.generators.celeba import generate_new_images

    out = tmp_path_factory.mktemp("new-images")
    paths = generate_new_images(out / "batch", count=9, seed=3)
    (out / "batch" / "sub").mkdir()
    paths[0].rename(out / "batch" / "sub" / paths[0].name)  # inputs are found recursively
    good = paths[1].read_bytes()
    (out / "batch" / "broken.jpg").write_bytes(good[: len(good) // 3] if paths[1].suffix == ".jpg" else b"\xff\xd8junk")
    (out / "batch" / "sub" / "empty.png").write_bytes(b"")
    (out / "batch" / "notes.txt").write_text("not an image: skipped by extension")
    return out / "batch"
