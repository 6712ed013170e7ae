"""GPU scheduling without a GPU: Spark assigns the two addresses of a fake discovery script, and
the Horovod ranks and the scoring tasks each use the one assigned to their task.

``fixtures/gpu_probe.py`` runs in its own process (one SparkContext per process) on
``local-cluster[1,2,1024]``: one executor with 2 cores and 2 GPUs, one GPU per task, so the two
concurrent tasks get different addresses. (``local-cluster[2,1,...]`` would give two workers that
each discover and assign their own "0".) The CPU build of TensorFlow then finds no GPU and runs
anyway. Costs about 100 s on 2 shared cores: the cluster's start, a Horovod job, a scoring job.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sparkvision.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

PROBE = Path(__file__).parent / "fixtures" / "gpu_probe.py"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-probe") / "probe.json"
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1",
               PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p))  # fmt: skip
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, str(PROBE), str(out)], env=env, capture_output=True, text=True,
                          timeout=900, cwd=PROJECT_ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_the_session_built_by_sparkvision_schedules_one_gpu_per_task(probe: dict[str, Any]) -> None:
    conf = probe["conf"]
    assert conf["spark.task.resource.gpu.amount"] == "1"  # from train.gpus_per_worker=1
    assert conf["spark.executor.resource.gpu.amount"] == "2"  # spark.conf wins over the default of 1
    assert conf["spark.executor.resource.gpu.discoveryScript"].endswith("fixtures/fake_gpus.sh")


def test_each_rank_pins_the_gpu_spark_assigned_to_its_task(probe: dict[str, Any]) -> None:
    ranks = sorted(probe["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    assert sorted(tuple(r["gpus"]) for r in ranks) == [("0",), ("1",)]  # different, both of the script's
    for r in ranks:
        assert r["cuda_visible_devices"] == r["devices"]["cuda_visible_devices"] == r["gpus"][0]
        assert r["cuda_device_order"] == "PCI_BUS_ID"
        assert r["devices"]["assigned"] == r["gpus"]
        assert r["in_spark_task"] is False  # a child of the task: the address came from Horovod's task service
        assert r["tf_gpus"] == 0 and r["devices"]["gpus"] == []  # the CPU build finds none and runs
        assert Path(r["sparkvision"]).is_relative_to(PROJECT_ROOT)  # this checkout's code ran


def test_ranks_train_the_vae_under_mixed_float16_with_a_float32_loss(probe: dict[str, Any]) -> None:
    ranks = probe["ranks"]
    for r in ranks:
        assert r["policy"] == r["global_policy"] == "mixed_float16"
        assert r["conv_dtype"] == "float16"
        assert r["optimizer"] == "LossScaleOptimizerV3"
        assert r["loss_dtype"] == "float32"
        assert all(math.isfinite(v) for v in r["losses"])
        assert r["weights_changed"] and r["loss_scale"] < 2**15
    assert ranks[0]["weights_sum"] == pytest.approx(ranks[1]["weights_sum"], rel=1e-6)  # gradients averaged


def test_scoring_tasks_use_their_assigned_gpu_and_the_gpu_batch_size(probe: dict[str, Any]) -> None:
    rows = probe["scored"]
    assert sorted(r["path"] for r in rows) == sorted(f"img{i}" for i in range(16))
    assert all(r["error_code"] is None for r in rows)
    assert all(r["cuda_visible_devices"] == r["task_gpu"] for r in rows)
    assert {r["task_gpu"] for r in rows} == {"0", "1"}
    by_worker = {}
    for r in rows:
        by_worker.setdefault(r["pid"], set()).add(r["task_gpu"])
    assert all(len(gpus) == 1 for gpus in by_worker.values())
    assert {r["batch_rows"] for r in rows} == {4}  # score.gpu_batch_size, not batch_size 2
