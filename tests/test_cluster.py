"""A real standalone cluster on 127.0.0.1: spark-submit to it, then stop it by process group.

The tests share one cluster (starting it takes ~20 s on 2 cores); the last test stops it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[cluster.ClusterInfo, Path]]:
    state = tmp_path_factory.mktemp("cluster")
    info = cluster.up(ClusterConfig(workers=WORKERS, worker_cores=1, worker_memory="1g", start_timeout_s=180), state)
    try:
        yield info, state
    finally:
        cluster.down(state)


def _submit(master_url: str, script: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1"
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master", master_url,
        "--driver-memory", "1g",
        "--conf", "spark.executor.cores=1",
        "--conf", "spark.executor.memory=512m",
        "--conf", f"spark.cores.max={WORKERS}",
        "--conf", f"spark.pyspark.python={sys.executable}",
        "--conf", "spark.ui.enabled=false",
        str(script), *args,
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"spark-submit failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


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
    out = _submit(info.master_url, script).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["master"] == info.master_url
    assert result["total"] == sum(x * x for x in range(100))
    assert result["executables"] == [sys.executable]


def test_ingest_job_on_the_cluster(running: tuple[cluster.ClusterInfo, Path], celeba_dir: Path, tmp_path: Path) -> None:
    info, _ = running
    output = tmp_path / "parquet" / "celeba"
    args = ["--format", "celeba", "--input", str(celeba_dir), "--output", str(output), "--env", "test"]
    _submit(info.master_url, PROJECT_ROOT / "jobs" / "ingest.py", *args)
    output = Path(publish.current(output).location.path)  # the committed version
    manifest = json.loads((output / "manifest.json").read_text())
    images = list((celeba_dir / "img_align_celeba").iterdir())
    assert manifest["image_files"] == len(images)
    assert manifest["source_images"] + manifest["quarantined"] == manifest["input_files"]
    assert manifest["output_rows"] > 0
    assert sum(manifest["splits"].values()) == manifest["output_rows"]
    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(f).num_rows for f in (output / "data").glob("split=*/*.parquet"))
    assert rows == manifest["output_rows"]


def test_down_stops_every_recorded_process(running: tuple[cluster.ClusterInfo, Path]) -> None:
    info, state = running
    assert cluster.down(state) == WORKERS + 1
    assert [pid for pid in info.pids if procs.is_alive(pid)] == []
    assert all(procs.group_members(pid) == [] for pid in info.pids)
    assert not procs.port_open("127.0.0.1", int(info.master_url.rsplit(":", 1)[1]))
    assert cluster.status(state)["running"] is False
    assert cluster.down(state) == 0
