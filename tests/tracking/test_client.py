"""``Tracking`` against the session's real MLflow server: experiments, runs, models, URIs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from sparkvision.config import Config
from sparkvision.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Tracking


def test_experiments_open_on_training_runs(tracking: Tracking) -> None:
    name = f"kind-{uuid.uuid4().hex[:6]}"
    first = tracking.experiment_id(name)
    assert (
        tracking.client.get_experiment(first).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    )
    assert tracking.experiment_id(name) == first

    # An experiment made elsewhere (no kind) is marked when the project uses it.
    other = tracking.client.create_experiment(f"made-elsewhere-{uuid.uuid4().hex[:6]}")
    assert EXPERIMENT_KIND_TAG not in tracking.client.get_experiment(other).tags
    assert tracking.experiment_id(tracking.client.get_experiment(other).name) == other
    assert tracking.client.get_experiment(other).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_run_lifecycle_params_metrics_artifacts(tracking: Tracking, tmp_path: Path) -> None:
    run_id = tracking.create_run("tracking-tests", "lifecycle", {"mlflow.source.type": "JOB"})
    params = {f"p{i:03d}": str(i) for i in range(130)}  # more than one batch
    tracking.log_params(run_id, params)
    tracking.set_tags(run_id, {"sparkvision.task": "vae"})
    for step, loss in enumerate([0.5, 0.25]):
        tracking.log_metrics(run_id, {"loss": loss, "val_loss": loss * 2}, step=step)
    tracking.log_metrics(run_id, {"loss": 0.2}, step=1)  # a re-logged step: the last value counts
    tracking.log_text(run_id, "hello", "notes/hello.txt")
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(b"png")
    tracking.log_artifacts(run_id, tmp_path / "pics", "pictures")
    tracking.finish_run(run_id, "FAILED")
    tracking.reopen_run(run_id)
    assert tracking.run(run_id).info.status == "RUNNING"
    tracking.finish_run(run_id)

    run = tracking.run(run_id)
    assert run.data.params == params and run.data.tags["sparkvision.task"] == "vae"
    assert run.info.status == "FINISHED"
    assert tracking.histories(run_id) == {"loss": [(0, 0.5), (1, 0.2)], "val_loss": [(0, 1.0), (1, 0.5)]}
    assert tracking.list_artifacts(run_id) == ["notes/hello.txt", "pictures/a.png"]
    assert tracking.download(run_id, "notes/hello.txt", tmp_path / "dl").read_text() == "hello"
    experiment = run.info.experiment_id
    assert tracking.run_url(run_id) == f"{tracking.uri}/#/experiments/{experiment}/runs/{run_id}"
    assert Tracking("sqlite:///x.db").run_url("abc") == "abc on sqlite:///x.db"


def test_histories_fetch_the_epoch_metrics_named_by_the_tag(tracking: Tracking) -> None:
    from sparkvision.training.tracking_log import EpochLogger

    run_id = tracking.create_run("tracking-tests", "epochs", {"mlflow.source.type": "JOB"})
    logger = EpochLogger(tracking.uri, run_id)
    for epoch, loss in enumerate([0.5, 0.3, 0.2]):
        logger.log(epoch, {"loss": loss, "lr": 0.01, "note": "not a number"})
    EpochLogger(tracking.uri, run_id).log(3, {"loss": 0.1, "val_loss": 0.4})  # a resumed segment adds a key
    tracking.log_metrics(run_id, {f"test_auroc_{i}": i / 100 for i in range(50)}, step=3)  # logged once
    assert tracking.run(run_id).data.tags["sparkvision.epoch_metrics"] == "loss,lr,val_loss"
    history = tracking.histories(run_id)
    assert history["loss"] == [(0, 0.5), (1, 0.3), (2, 0.2), (3, 0.1)]
    assert history["lr"] == [(e, 0.01) for e in range(3)]
    assert history["val_loss"] == [(3, 0.4)] and history["test_auroc_7"] == [(3, 0.07)] and len(history) == 53


def test_log_model_registers_tags_aliases_and_resolves(tracking: Tracking, cfg: Config, tmp_path: Path) -> None:
    import mlflow

    from sparkvision.models import get_task

    task = get_task("attributes")
    meta = task.prepare_meta({"table": "celeba", "image_size": cfg.train.image_size, "output": "t"}, cfg.train)
    model = task.build(cfg.train, meta).model
    name = f"tracking-test-{uuid.uuid4().hex[:6]}"
    before = mlflow.get_tracking_uri()
    run_id = tracking.create_run("tracking-tests", "model")
    ref = tracking.log_model(run_id, model, "attributes", meta, name, "candidate")
    assert mlflow.get_tracking_uri() == before, "the process-wide URI is restored"
    assert os.environ.get("MLFLOW_TRACKING_URI") == tracking.uri, "and the environment the session set"
    assert (ref.uri, ref.pinned_uri, ref.name, ref.run_id, ref.task) == (
        f"models:/{name}@candidate", f"models:/{name}/{ref.version}", name, run_id, "attributes")  # fmt: skip

    assert tracking.resolve(f"models:/{name}@candidate") == ref
    assert tracking.resolve(f"models:/{name}/{ref.version}").pinned_uri == ref.pinned_uri
    assert tracking.resolve(f"runs:/{run_id}/model").run_id == run_id
    assert tracking.resolve("/some/folder").pinned_uri == "/some/folder"
    local = tracking.download_model(ref, tmp_path / "model")
    assert (local / "MLmodel").is_file()

    from sparkvision.models.packaging import read_meta

    assert read_meta(local)["task"] == "attributes"

    second = tracking.log_model(run_id, model, "attributes", meta, name, "candidate")
    assert int(second.version) == int(ref.version) + 1
    assert tracking.resolve(f"models:/{name}@candidate").version == second.version


def test_logging_a_model_leaves_no_tracking_uri_behind(
    tracking: Tracking, cfg: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A pipeline runs several jobs in one process: after one logs a model, nothing may point the
    next one elsewhere (``mlflow.set_tracking_uri`` writes the environment variable too)."""
    import mlflow

    from sparkvision.models import get_task

    task = get_task("vae")
    meta = task.prepare_meta({"table": "celeba", "image_size": cfg.train.image_size, "output": "t"}, cfg.train)
    model = task.build(cfg.train, meta).model
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(None)  # nothing set, as in a fresh `sparkvision pipeline` process
    default = mlflow.get_tracking_uri()
    run_id = tracking.create_run("tracking-tests", "no-leak")
    ref = tracking.log_model(run_id, model, "vae", meta, f"leak-test-{uuid.uuid4().hex[:6]}", "candidate")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == default != tracking.uri
    # ... and the next job finds the model on this server, not in MLflow's default store.
    assert (tracking.download_model(tracking.resolve(ref.uri), tmp_path / "model") / "MLmodel").is_file()


def test_unknown_alias_is_the_registry_error(tracking: Tracking) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        tracking.resolve("models:/no-such-model@candidate")


def test_no_empty_uri() -> None:
    with pytest.raises(ValueError, match="expected a tracking URI"):
        Tracking("")
