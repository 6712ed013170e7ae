"""Storage URLs and versioned outputs end to end: ``file://`` URLs through ingest, train and score,
relative paths, two concurrent writers, and a re-ingest while a training job reads the old version."""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from sparkvision.config import Config
from sparkvision.data import publish


def _ingest(spark, cfg: Config, source: str, out: str, **ingest_keys: Any) -> dict[str, Any]:
    from sparkvision.data.ingest import ingest

    return ingest(spark, "celeba", source, out, dataclasses.replace(cfg.ingest, **ingest_keys), workers=1)


def test_file_urls_end_to_end_and_a_reingest_under_a_running_training_job(
    spark, cfg: Config, in_process, mlflow_server: str, tracking, celeba_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from sparkvision import commands
    from sparkvision.scoring import score
    from sparkvision.training import train
    from sparkvision.training.trainer import plan

    url = f"file://{tmp_path}/celeba-ds"
    first = _ingest(spark, cfg, f"file://{celeba_dir}", url)
    a = publish.current(url)
    assert first["output"] == str(tmp_path / "celeba-ds") and first["run"]["version"] == a.version
    assert a.checksum == first["checksum"] and Path(a.location.path, "manifest.json").is_file()

    one = cfg.replace(**{"train.model": "vae", "train.workers": "1", "train.epochs": "1", "train.steps_per_epoch": "4",
                         "train.pictures": "false", "train.registered_model_prefix": f"urls{uuid.uuid4().hex[:6]}",
                         "train.experiment": f"urls-{uuid.uuid4().hex[:8]}", "paths.store": str(tmp_path / "store")})  # fmt: skip
    planned = plan(one, url)
    assert planned.data_dir == a.url and planned.version == a.version
    result: dict[str, Any] = {}

    def run_training() -> None:
        try:
            result.update(train(spark, one, url, backend=in_process, planned=planned, tracking=tracking))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    job = threading.Thread(target=run_training)
    job.start()
    # Re-ingest into the same output while the job reads version A; keep only 1 version, but the age rule
    # (superseded less than an hour ago) must keep A's files for the running job.
    second = _ingest(spark, cfg, f"file://{celeba_dir}", url, keep_versions=1, keep_min_age_hours=1.0)
    job.join()
    assert "error" not in result, result.get("error")
    b = publish.current(url)
    assert b.version != a.version and second["checksum"] == first["checksum"]  # identical rerun, same checksum
    assert Path(a.location.path, "manifest.json").is_file() and list(Path(a.location.path, "data").rglob("*.parquet"))

    run = tracking.run(result["run_id"])
    (dataset_input,) = run.inputs.dataset_inputs
    assert json.loads(dataset_input.dataset.source)["path"] == a.url  # the version the job read, not B
    assert dataset_input.dataset.digest == first["checksum"][:36]
    assert run.data.tags["dataset.path"] == a.url and run.data.tags["dataset.version"] == a.version

    images = sorted((celeba_dir / "img_align_celeba").iterdir())
    s = score(spark, result["model_uri"], f"file://{celeba_dir}/img_align_celeba", f"file://{tmp_path}/scores",
              cfg.score, tracking=tracking)  # fmt: skip
    assert s["inputs"] == len(images) and s["rows"] == len(images)
    assert publish.current(tmp_path / "scores").version == s["version"]

    capsys.readouterr()
    assert commands.data(cfg, action="versions", output=url) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split()[:2] == [a.version, "previous"]
    assert listing[2].split()[:3] == ["*", b.version, "current"] and first["checksum"][:16] in listing[2]


def test_relative_paths_still_work(spark, cfg: Config, celeba_dir: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import os

    monkeypatch.chdir(tmp_path)
    m = _ingest(spark, cfg, os.path.relpath(celeba_dir, tmp_path), "rel/ds")
    assert m["output"] == str(tmp_path / "rel" / "ds")
    assert publish.current("rel/ds").location.path.startswith(str(tmp_path / "rel" / "ds" / "v-"))


def test_two_concurrent_ingests_one_wins_the_other_is_refused_nothing_lost(
    spark, cfg: Config, celeba_dir: Path, race_writers, tmp_path: Path
) -> None:
    out = str(tmp_path / "ds")
    won, lost = race_writers(
        lambda i: _ingest(spark, cfg, str(celeba_dir), out, image_size=cfg.ingest.image_size + 8 * i)
    )
    winner = won[0]["run"]["version"]
    message = str(lost[0])
    assert "\n" not in message and f"committed version {winner}" in message and "kept, uncommitted" in message
    assert publish.current(out).version == winner
    states = {v.name: v for v in publish.versions(out)}
    loser = next(name for name in states if name != winner)
    assert loser in message and states[loser].state == "uncommitted"
    assert states[loser].counts["rows"] == won[0]["output_rows"]  # the loser's complete version is on disk
    assert list(Path(states[loser].location.path, "data").rglob("*.parquet"))
