"""A real standalone cluster on 127.0.0.1: spark-submit to it, then stop it by process group.

The tests share one cluster (starting it takes ~20 s on 2 cores); the last test stops it. The
jobs run as on a real cluster: the executors use the packed environment of ``make package``
(``--archives dist/sparkvision-env.tar.gz#env``), the driver (client mode) this venv, and the
workers inherit no ``PYTHONPATH`` from the test, so nothing reaches the executors from the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparkvision import cluster, procs
from sparkvision.config import PROJECT_ROOT, ClusterConfig
from sparkvision.data import publish
from sparkvision.spark import spark_home

pytestmark = pytest.mark.slow

WORKERS = 2

PROBE_JOB = """
import json, os, sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("probe").getOrCreate()
rows = spark.sparkContext.parallelize(range(100), 4).map(lambda x: (sys.executable, os.getpid(), x * x)).collect()
print("RESULT " + json.dumps({
    "master": spark.sparkContext.master,
    "total": sum(r[2] for r in rows),
    "executables": sorted({r[0] for r in rows}),
    "python_workers": len({r[1] for r in rows}),
}))
spark.stop()
"""

# Where the executors' Python and sparkvision come from, in Spark tasks and in Horovod ranks
# (launched with ``worker_python``, as the trainer does).
ARCHIVE_PROBE_JOB = """
import json, os, sys
from pyspark.sql import SparkSession


def where(_=None):
    import sparkvision
    return {"prefix": sys.prefix, "executable": sys.executable, "sparkvision": sparkvision.__file__,
            "cwd": os.getcwd(), "editable": [p for p in sys.path if "__editable__" in p]}


spark = SparkSession.builder.appName("archive-probe").getOrCreate()
tasks = spark.sparkContext.parallelize(range(2), 2).map(where).collect()
import horovod.spark
from sparkvision.spark import worker_python

ranks = horovod.spark.run(where, num_proc=2, use_gloo=True, executable=worker_python(spark), verbose=0)
print("RESULT " + json.dumps({"tasks": tasks, "ranks": ranks, "pyspark_python": worker_python(spark)}))
spark.stop()
"""


@pytest.fixture(scope="module")
def archive() -> Path:
    """``make package``'s environment archive, built once (cached by content hash across runs)."""
    venv = Path(sys.executable).parent.parent  # the venv's own path, not the resolved interpreter
    env = dict(os.environ, VENV=str(venv))
    result = subprocess.run(["bash", "scripts/package_env.sh"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert result.returncode == 0, f"make package failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return PROJECT_ROOT / "dist" / "sparkvision-env.tar.gz"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[cluster.ClusterInfo, Path]]:
    state = tmp_path_factory.mktemp("cluster")
    # The workers stand for other machines: they must not find sparkvision on this shell's PYTHONPATH.
    pythonpath = os.environ.pop("PYTHONPATH", None)
    try:
        info = cluster.up(ClusterConfig(workers=WORKERS, worker_cores=1, worker_memory="1g", start_timeout_s=180),
                          state)  # fmt: skip
    finally:
        if pythonpath is not None:
            os.environ["PYTHONPATH"] = pythonpath
    try:
        yield info, state
    finally:
        cluster.down(state)


def _submit(
    info: cluster.ClusterInfo, script: str | Path, *args: str, archive: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """spark-submit in client mode; executors run ``archive``'s Python (``./env/bin/python``) when
    given, else this venv's. Checks that the job ran as an application of the cluster's master
    (a job that quietly builds a ``local[*]`` session would pass every other check)."""
    apps_before = _completed_apps(info)
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1")
    for key in ("MLFLOW_TRACKING_URI", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        env.pop(key, None)
    python = ["--conf", f"spark.pyspark.python={sys.executable}"]
    if archive is not None:
        python = ["--archives", f"{archive}#env", "--conf", "spark.pyspark.python=./env/bin/python",
                  "--conf", f"spark.pyspark.driver.python={sys.executable}"]  # fmt: skip
    cmd = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master", info.master_url,
        "--driver-memory", "1g",
        "--conf", "spark.executor.cores=1",
        "--conf", "spark.executor.memory=512m",
        "--conf", f"spark.cores.max={WORKERS}",
        *python,
        "--conf", "spark.ui.enabled=false",
        str(script), *args,
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    # Spark's INFO lines bury the job's own error
    errors = "\n".join(x for x in result.stderr.splitlines() if " INFO " not in x)
    assert result.returncode == 0, (
        f"spark-submit {script} failed ({result.returncode}):\n{errors[-4000:]}\nstdout:\n{result.stdout[-4000:]}"
    )
    deadline = time.monotonic() + 30
    while _completed_apps(info) == apps_before and time.monotonic() < deadline:
        time.sleep(0.5)  # the master marks the application finished shortly after the driver stops
    assert _completed_apps(info) == apps_before + 1, f"{script} ran no application on {info.master_url}"
    return result


def _completed_apps(info: cluster.ClusterInfo) -> int:
    code, body = procs.http_get(f"{info.webui_url}/json/")
    assert code == 200, f"master web UI {info.webui_url}: HTTP {code}"
    return len(json.loads(body)["completedapps"])


def test_up_is_idempotent_and_reports_alive_workers(running: tuple[cluster.ClusterInfo, Path]) -> None:
    info, state = running
    assert info.master_url.startswith("spark://127.0.0.1:")
    assert len(info.pids) == WORKERS + 1
    assert cluster.up(ClusterConfig(workers=WORKERS), state).pids == info.pids
    status = cluster.status(state)
    assert status["running"] is True
    assert status["alive_workers"] == WORKERS
    assert [d["role"] for d in status["daemons"]] == ["master", "worker-0", "worker-1"]


def test_submitted_job_runs_on_the_workers_with_the_venv_python(
    running: tuple[cluster.ClusterInfo, Path], tmp_path: Path
) -> None:
    info, _ = running
    script = tmp_path / "probe.py"
    script.write_text(PROBE_JOB)
    out = _submit(info, script).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["master"] == info.master_url
    assert result["total"] == sum(x * x for x in range(100))
    assert result["executables"] == [sys.executable]


def test_packed_environment_runs_tasks_and_horovod_ranks_from_the_archive(
    running: tuple[cluster.ClusterInfo, Path], archive: Path, tmp_path: Path
) -> None:
    info, state = running
    script = tmp_path / "archive_probe.py"
    script.write_text(ARCHIVE_PROBE_JOB)
    out = _submit(info, script, archive=archive).stdout
    result = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT "))
    assert result["pyspark_python"] == "./env/bin/python"
    assert len(result["tasks"]) == 2 and len(result["ranks"]) == 2
    venv = Path(sys.prefix)
    for where in result["tasks"] + result["ranks"]:
        prefix = Path(where["prefix"])
        # <state>/work-<i>/<app>/<executor>/env: the archive as the executor unpacked it
        assert prefix.is_relative_to(state) and prefix.name == "env", where
        assert Path(where["cwd"]) == prefix.parent, where
        assert Path(where["sparkvision"]).resolve().is_relative_to(prefix.resolve()), where
        assert not Path(where["sparkvision"]).is_relative_to(PROJECT_ROOT), where
        assert not Path(where["executable"]).is_relative_to(venv), where
        assert where["editable"] == [], where


@pytest.fixture(scope="module")
def cluster_parquet(
    running: tuple[cluster.ClusterInfo, Path], archive: Path, celeba_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The generated CelebA folder ingested by ``jobs/ingest.py`` on the cluster (paths as ``file://`` URLs)."""
    output = tmp_path_factory.mktemp("cluster-parquet") / "celeba"
    args = ["--format", "celeba", "--input", celeba_dir.as_uri(), "--output", output.as_uri(), "--env", "test"]
    _submit(running[0], PROJECT_ROOT / "jobs" / "ingest.py", *args, archive=archive)
    return output


@pytest.fixture(scope="module")
def cluster_model(
    running: tuple[cluster.ClusterInfo, Path], archive: Path, cluster_parquet: Path, mlflow_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:  # fmt: skip
    """``jobs/train.py`` (VAE, 2 Horovod workers, test configuration) on the cluster; its registered model name."""
    store = tmp_path_factory.mktemp("cluster-store")
    args = ["--model", "vae", "--data", cluster_parquet.as_uri(), "--workers", str(WORKERS), "--env", "test",
            "--set", f"mlflow.tracking_uri={mlflow_server}", "--set", f"paths.store={store}",
            "--set", "train.registered_model_prefix=cluster"]  # fmt: skip
    _submit(running[0], PROJECT_ROOT / "jobs" / "train.py", *args, archive=archive)
    return "cluster-vae"


def test_ingest_job_on_the_cluster(celeba_dir: Path, cluster_parquet: Path) -> None:
    version = Path(publish.current(cluster_parquet).location.path)  # the committed version
    manifest = json.loads((version / "manifest.json").read_text())
    images = list((celeba_dir / "img_align_celeba").iterdir())
    assert manifest["image_files"] == len(images)
    assert manifest["source_images"] + manifest["quarantined"] == manifest["input_files"]
    assert manifest["output_rows"] > 0
    assert sum(manifest["splits"].values()) == manifest["output_rows"]
    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(f).num_rows for f in (version / "data").glob("split=*/*.parquet"))
    assert rows == manifest["output_rows"]


def test_train_job_on_the_cluster_registers_the_model(cfg, cluster_model: str, mlflow_server: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias(cluster_model, cfg.train.alias)
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["workers"] == str(WORKERS)
    assert {"loss", "val_loss"} <= set(run.data.metrics)


def test_score_job_on_the_cluster_writes_one_row_per_image(
    running: tuple[cluster.ClusterInfo, Path], archive: Path, cfg, cluster_model: str, mlflow_server: str,
    celeba_dir: Path, tmp_path: Path,
) -> None:  # fmt: skip
    from mlflow import MlflowClient

    images = celeba_dir / "img_align_celeba"
    output = tmp_path / "scores"
    args = ["--model-uri", f"models:/{cluster_model}@{cfg.train.alias}", "--input", images.as_uri(),
            "--output", output.as_uri(), "--env", "test", "--set", f"mlflow.tracking_uri={mlflow_server}"]  # fmt: skip
    _submit(running[0], PROJECT_ROOT / "jobs" / "score.py", *args, archive=archive)
    import pyarrow.parquet as pq

    committed = Path(publish.current(output).location.path)
    table = pq.read_table(committed)
    version = MlflowClient(mlflow_server).get_model_version_by_alias(cluster_model, cfg.train.alias)
    assert table.num_rows == len(list(images.iterdir()))
    assert set(table.column("model_version").to_pylist()) == {version.version}
    summary = json.loads((committed / "_summary.json").read_text())
    assert summary["inputs"] == table.num_rows


def test_down_stops_every_recorded_process(running: tuple[cluster.ClusterInfo, Path]) -> None:
    info, state = running
    assert cluster.down(state) == WORKERS + 1
    assert [pid for pid in info.pids if procs.is_alive(pid)] == []
    assert all(procs.group_members(pid) == [] for pid in info.pids)
    assert not procs.port_open("127.0.0.1", int(info.master_url.rsplit(":", 1)[1]))
    assert cluster.status(state)["running"] is False
    assert cluster.down(state) == 0
