"""``train`` end to end: petastorm shards, a real MLflow server, the VAE on the generated and
ingested CelebA fixture (32x32, z=16).

One 2-worker job on real Horovod (Gloo) on the session's local Spark is trained once for the
module and checked from several sides, and a resume continues it across both ranks. 1-worker
jobs run in-process (``InProcessBackend``): a resume there, and the check that a 1-worker job
repeats exactly, in-process as on Horovod on Spark.
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


@pytest.fixture(scope="module")
def train_cfg(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    store = tmp_path_factory.mktemp("store")
    return cfg.replace(**{"train.model": "vae", "train.workers": "2", "train.epochs": "2",
                          "train.steps_per_epoch": "10", "train.learning_rate": "0.002",
                          "train.experiment": f"train-test-{uuid.uuid4().hex[:8]}", "paths.store": str(store)})  # fmt: skip


@pytest.fixture(scope="module")
def trained(spark, mlflow_server: str, celeba_parquet: Path, train_cfg: Config) -> dict[str, Any]:
    from sparkvision.training import train

    return train(spark, train_cfg, str(celeba_parquet), resume=False)


def _client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(url)


def _steps(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_loss_falls_and_ranks_agree(trained: dict[str, Any]) -> None:
    loss = trained["history"]["loss"]
    assert len(loss) == 2 and loss[1] < loss[0]
    assert trained["metrics"]["loss"] == pytest.approx(loss[-1])
    assert trained["initial_epoch"] == 0 and trained["epochs_run"] == 2
    # The evaluated and registered checkpoint is the epoch of lowest inference-mode val_loss.
    val = trained["history"]["val_loss"]
    assert trained["best_epoch"] == int(np.argmin(val)) == int(trained["metrics"]["best_epoch"])
    assert trained["checkpoint"].endswith(f"epoch-{trained['best_epoch']:04d}/ckpt")


def test_one_run_with_params_epoch_metrics_and_artifacts(trained: dict[str, Any], mlflow_server: str,
                                                         train_cfg: Config, celeba_parquet: Path) -> None:  # fmt: skip
    import json

    client = _client(mlflow_server)
    exp = client.get_experiment_by_name(train_cfg.train.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [trained["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.batch_size"] == "8" and params["workers"] == "2"
    assert params["horovod_cycle_time_ms"] == "10", "auto on CPU workers"
    assert float(params["effective_lr"]) == pytest.approx(2 * train_cfg.train.learning_rate)
    version = publish.current(celeba_parquet)
    manifest = json.loads(version.location.join("manifest.json").read_text())
    assert run.data.tags["dataset.checksum"] == manifest["checksum"] == params["dataset.checksum"]
    assert run.data.tags["dataset.path"] == version.url and run.data.tags["dataset.version"] == version.version
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == manifest["checksum"][:36]
    assert json.loads(dataset_input.dataset.source)["path"] == version.url
    for key in ("loss", "r_loss", "kl_loss", "val_loss", "val_r_loss", "val_kl_loss", "train_eval_loss",
                "train_eval_r_loss", "images_per_s", "epoch_time_s", "lr"):  # fmt: skip
        assert [s for s, _ in _steps(client, run.info.run_id, key)] == [0, 1], key
    assert [v for _, v in _steps(client, run.info.run_id, "loss")] == pytest.approx(trained["history"]["loss"])
    assert {"test_loss", "test_recon_mse", "eval_val_loss"} <= set(run.data.metrics)
    assert run.data.metrics["test_loss"] == pytest.approx(trained["metrics"]["test_loss"])
    files = _artifacts(client, run.info.run_id)
    assert {"config.yaml", "dataset/manifest.json", "checkpoint/state.json", "pictures/curve_loss.png"} <= files
    assert any(f.startswith("pictures/") and "curve" not in f for f in files)
    config_text = Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text()
    assert config_text == train_cfg.to_yaml()


def test_registered_version_has_the_alias_and_predicts_like_the_keras_model(
    trained: dict[str, Any], mlflow_server: str, train_cfg: Config, celeba_parquet: Path
) -> None:
    import mlflow.pyfunc

    from sparkvision.models import get_task
    from sparkvision.training import data
    from sparkvision.training.checkpoints import Store
    from sparkvision.training.trainer import load_checkpoint

    client = _client(mlflow_server)
    name = trained["registered_model"]
    assert name == "sparkvision-vae" and trained["alias"] == "candidate"
    version = client.get_model_version_by_alias(name, "candidate")
    assert str(version.version) == trained["version"] and version.run_id == trained["run_id"]

    frame = data.read_frame(data.inspect_split(celeba_parquet, "test"), None, 8)
    task = get_task("vae")
    keras_model = load_checkpoint(train_cfg, trained["meta"], Store(trained["store"]), trained["checkpoint"])
    x, _ = task.arrays(frame, trained["meta"])
    expected = task.predict(keras_model, x, trained["meta"])
    served = mlflow.pyfunc.load_model(f"models:/{name}@candidate").predict(frame[["image"]])
    for column, values in expected.items():
        got = np.stack([np.asarray(v, np.float32) for v in served[column]])
        np.testing.assert_allclose(got.reshape(values.shape), values, rtol=1e-4, atol=1e-5, err_msg=column)


def test_resume_continues_the_same_run_at_the_next_epoch(
    spark, trained: dict[str, Any], mlflow_server: str, train_cfg: Config, celeba_parquet: Path
) -> None:
    import tensorflow as tf

    from sparkvision.training import train

    resumed = train(spark, train_cfg.replace(**{"train.epochs": "3"}), str(celeba_parquet), resume=True)
    assert resumed["run_id"] == trained["run_id"]
    assert resumed["initial_epoch"] == 2 and resumed["epochs_run"] == 1
    client = _client(mlflow_server)
    assert [s for s, _ in _steps(client, trained["run_id"], "loss")] == [0, 1, 2]
    assert [s for s, _ in _steps(client, trained["run_id"], "val_loss")] == [0, 1, 2]
    # Optimizer state came back: Adam's step counter continues from 2 epochs x 4 steps.
    reader = tf.train.load_checkpoint(f"{resumed['store']}/{resumed['checkpoint']}")
    iterations = [k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/_iterations")]
    assert iterations and int(reader.get_tensor(iterations[0])) == 3 * train_cfg.train.steps_per_epoch
    assert int(resumed["version"]) == int(trained["version"]) + 1
    assert client.get_model_version_by_alias("sparkvision-vae", "candidate").version == resumed["version"]


def test_too_few_row_groups_fail_before_any_run(spark, mlflow_server: str, celeba_parquet: Path,
                                                 train_cfg: Config) -> None:  # fmt: skip
    from sparkvision.training import train

    bad = train_cfg.replace(**{"train.workers": "3", "train.experiment": f"never-{uuid.uuid4().hex[:8]}"})
    with pytest.raises(ValueError, match=r"split=train.*2 Parquet row group\(s\).*3 workers"):
        train(spark, bad, str(celeba_parquet), resume=False)
    assert _client(mlflow_server).get_experiment_by_name(bad.train.experiment) is None


def test_in_process_backend_with_two_workers_fails_before_any_run(spark, in_process, mlflow_server: str,
                                                                  celeba_parquet: Path, train_cfg: Config) -> None:  # fmt: skip
    from sparkvision.training import train

    two = train_cfg.replace(**{"train.workers": "2", "train.experiment": f"never-{uuid.uuid4().hex[:8]}"})
    with pytest.raises(ValueError, match=r"train.workers=2: InProcessBackend runs at most 1 worker"):
        train(spark, two, str(celeba_parquet), resume=False, backend=in_process)
    assert _client(mlflow_server).get_experiment_by_name(two.train.experiment) is None


def test_in_process_resume_continues_the_run_and_the_optimizer(
    spark, in_process, mlflow_server: str, celeba_parquet: Path, train_cfg: Config, tmp_path: Path
) -> None:
    import tensorflow as tf

    from sparkvision.training import train
    from sparkvision.training.trainer import plan

    one = train_cfg.replace(**{"train.workers": "1", "train.epochs": "1", "train.steps_per_epoch": "4",
                               "train.pictures": "false", "train.registered_model_prefix": "inproc",
                               "train.experiment": f"inproc-{uuid.uuid4().hex[:8]}", "paths.store": str(tmp_path)})  # fmt: skip
    planned = plan(one, celeba_parquet)  # as the train command does: planned once, not again
    first = train(spark, one, str(celeba_parquet), resume=False, backend=in_process, planned=planned)
    resumed = train(spark, one.replace(**{"train.epochs": "2"}), str(celeba_parquet), resume=True, backend=in_process)
    assert resumed["run_id"] == first["run_id"] and resumed["initial_epoch"] == 1 and resumed["epochs_run"] == 1
    assert [s for s, _ in _steps(_client(mlflow_server), first["run_id"], "loss")] == [0, 1]
    reader = tf.train.load_checkpoint(f"{resumed['store']}/{resumed['checkpoint']}")
    iterations = [k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/_iterations")]
    assert iterations and int(reader.get_tensor(iterations[0])) == 2 * 4
    run = _client(mlflow_server).get_run(first["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["workers"] == "1"
    assert float(run.data.params["effective_lr"]) == pytest.approx(train_cfg.train.learning_rate)
    # the heartbeat: this process drove both segments, rank 0 beat after each epoch
    assert json.loads(run.data.tags["sparkvision.driver"])["pid"] == os.getpid()
    assert run.data.tags["sparkvision.last_epoch"] == "2"
    # scoring will validate new images as this dataset was ingested
    rules = planned.meta["image_rules"]
    assert rules == {
        "allowed_modes": list(one.ingest.allowed_modes),
        "min_side": one.ingest.min_side,
        "expected_size": [],
    }


def test_one_worker_runs_repeat_exactly_in_process_as_on_spark(
    spark, in_process, mlflow_server: str, celeba_parquet: Path, train_cfg: Config, tmp_path: Path
) -> None:
    """The same 1-worker job on Horovod on Spark and in this process: the same weights."""
    import tensorflow as tf

    from sparkvision.training import train

    one = train_cfg.replace(**{"train.workers": "1", "train.epochs": "1", "train.pictures": "false",
                               "train.registered_model_prefix": "repeat", "paths.store": str(tmp_path)})  # fmt: skip
    first = train(spark, one, str(celeba_parquet), resume=False)
    second = train(spark, one, str(celeba_parquet), resume=False, backend=in_process)
    assert first["run_id"] != second["run_id"]
    assert first["metrics"]["loss"] == second["metrics"]["loss"]
    a = tf.train.load_checkpoint(f"{first['store']}/{first['checkpoint']}")
    b = tf.train.load_checkpoint(f"{second['store']}/{second['checkpoint']}")
    names = [n for n in a.get_variable_to_shape_map() if n.startswith("model/") and "OPTIMIZER_SLOT" not in n]
    assert len(names) > 10
    for n in names:
        np.testing.assert_array_equal(a.get_tensor(n), b.get_tensor(n), err_msg=n)


@pytest.mark.parametrize(
    ("setting", "gpus", "environ", "expected"),
    [
        ("auto", 0, {}, 10.0),
        ("auto", 1, {}, 1.0),
        ("auto", 0, {"HOROVOD_CYCLE_TIME": "2.5"}, 2.5),
        (3.0, 0, {"HOROVOD_CYCLE_TIME": "2.5"}, 3.0),
    ],
)
def test_horovod_cycle_time_of_the_ranks(setting: Any, gpus: int, environ: dict[str, str], expected: float) -> None:
    from sparkvision.config import TrainConfig
    from sparkvision.training.trainer import _worker_env, horovod_cycle_time_ms

    cycle_ms = horovod_cycle_time_ms(TrainConfig(horovod_cycle_time_ms=setting, gpus_per_worker=gpus), environ)
    assert cycle_ms == expected
    assert float(_worker_env(cycle_ms)["HOROVOD_CYCLE_TIME"]) == expected


def test_a_bad_horovod_cycle_time_in_the_environment_is_named() -> None:
    from sparkvision.config import TrainConfig
    from sparkvision.training.trainer import horovod_cycle_time_ms

    with pytest.raises(ValueError, match=r"HOROVOD_CYCLE_TIME: expected milliseconds > 0, found 'fast'"):
        horovod_cycle_time_ms(TrainConfig(), {"HOROVOD_CYCLE_TIME": "fast"})
