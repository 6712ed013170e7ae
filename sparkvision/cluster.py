"""A Spark standalone cluster (one master, N workers) on this machine, for ``spark-submit`` tests.

The pip ``pyspark`` package has no ``sbin/start-master.sh``; the daemons are started with
``$SPARK_HOME/bin/spark-class``, each in its own process group, and recorded in
``STATE/cluster.json``. ``down`` stops exactly those process groups.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sparkvision import procs
from sparkvision.config import ClusterConfig
from sparkvision.spark import spark_home

STATE_FILE = "cluster.json"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    """The cluster did not come up; the message names the daemon and ends with its log tail."""


@dataclass(frozen=True)
class ClusterInfo:
    """A running standalone cluster: where to submit, where to look, which processes it is."""

    master_url: str
    webui_url: str
    pids: tuple[int, ...] = field(default=())
    state_dir: Path | None = None


def up(cfg: ClusterConfig, state_dir: Path) -> ClusterInfo:
    """Start a master and ``cfg.workers`` workers on ``cfg.host``, or return the running cluster.

    Args:
        cfg: The ``cluster`` section (host, master port (0: free), workers, cores, memory, timeout).
        state_dir: Folder of ``cluster.json``, the daemons' logs and the workers' work dirs.

    Returns:
        The master URL (``spark://host:port``), its web UI and the daemons' pids.

    Raises:
        ClusterError: If a daemon exits, or the workers are not ALIVE at the master within
            ``cfg.start_timeout_s`` (everything started is stopped again).
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    record = procs.read_json(state_dir / STATE_FILE)
    if record is not None:
        if _all_alive(record) and _alive_workers(record["webui_url"]) >= len(record["processes"]) - 1:
            return _info(record, state_dir)
        down(state_dir)

    spark_class, env = _daemon_env(cfg)
    master_port = cfg.master_port or procs.free_port(cfg.host)
    webui_port = procs.free_port(cfg.host)
    launch = _Launcher(spark_class, env, state_dir, _new_record(cfg, spark_class, master_port, webui_port))
    try:
        master = _start_master(cfg, launch, master_port, webui_port)
        _start_workers(cfg, launch, master)
    except procs.ServiceError as exc:
        down(state_dir)
        raise ClusterError(str(exc)) from None
    return _info(launch.record, state_dir)


def _daemon_env(cfg: ClusterConfig) -> tuple[Path, dict[str, str]]:
    """``spark-class`` of ``SPARK_HOME`` and the daemons' environment.

    Sets no ``PYSPARK_PYTHON``: each application chooses its executors' Python (``spark.pyspark.python``,
    e.g. ``./env/bin/python`` of an ``--archives`` environment, or the driver's venv by default).
    """
    home = spark_home()
    spark_class = home / "bin" / "spark-class"
    if not spark_class.exists():
        raise ClusterError(f"no {spark_class}: SPARK_HOME ({home}) must hold a Spark distribution or pip pyspark")
    env = dict(os.environ)
    env.update(SPARK_HOME=str(home), SPARK_LOCAL_IP=cfg.host)
    env.setdefault("SPARK_DAEMON_MEMORY", "512m")  # the daemons only schedule; executors get worker_memory
    return spark_class, env


def _new_record(cfg: ClusterConfig, spark_class: Path, master_port: int, webui_port: int) -> dict[str, Any]:
    """The ``cluster.json`` of a cluster about to start (no processes yet)."""
    return {
        "master_url": f"spark://{cfg.host}:{master_port}",
        "webui_url": f"http://{cfg.host}:{webui_port}",
        "host": cfg.host,
        "spark_home": str(spark_class.parent.parent),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "processes": [],
    }


@dataclass
class _Launcher:
    """Starts ``spark-class`` daemons in their own process groups and records each at once."""

    spark_class: Path
    env: dict[str, str]
    state_dir: Path
    record: dict[str, Any]

    def __call__(self, role: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.state_dir / f"{role}.log"
        proc = procs.spawn([str(self.spark_class), *args], log, env=self.env, cwd=self.state_dir)
        self.record["processes"].append(
            {
                "role": role,
                "pid": proc.pid,
                "pgid": proc.pid,
                "start_ticks": procs.start_ticks(proc.pid),
                "log": str(log),
            }
        )
        # recorded at once: down() can stop a half-started cluster
        procs.write_json(self.state_dir / STATE_FILE, self.record)
        return proc


def _start_master(cfg: ClusterConfig, launch: _Launcher, master_port: int, webui_port: int) -> subprocess.Popen[bytes]:
    """Start the master and wait until its web UI reports it ALIVE."""
    webui_url = launch.record["webui_url"]
    master = launch("master", [MASTER_CLASS, "--host", cfg.host, "--port", str(master_port),
                               "--webui-port", str(webui_port)])  # fmt: skip
    procs.wait_for(
        lambda: _master_json(webui_url).get("status") == "ALIVE",
        master, f"Spark master {launch.record['master_url']}", cfg.start_timeout_s, launch.state_dir / "master.log",
    )  # fmt: skip
    return master


def _start_workers(cfg: ClusterConfig, launch: _Launcher, master: subprocess.Popen[bytes]) -> None:
    """Start ``cfg.workers`` workers and wait until the master counts them all ALIVE."""
    master_url, webui_url, state_dir = launch.record["master_url"], launch.record["webui_url"], launch.state_dir
    workers = []
    for i in range(cfg.workers):
        work_dir = state_dir / f"work-{i}"
        work_dir.mkdir(exist_ok=True)
        args = [WORKER_CLASS, master_url, "--host", cfg.host, "--cores", str(cfg.worker_cores),
                "--memory", cfg.worker_memory, "--webui-port", str(procs.free_port(cfg.host)),
                "--work-dir", str(work_dir)]  # fmt: skip
        workers.append(launch(f"worker-{i}", args))

    def workers_alive() -> bool:
        for i, worker in enumerate(workers):
            if worker.poll() is not None:
                log = state_dir / f"worker-{i}.log"
                raise procs.ServiceError(
                    f"Spark worker {i} exited with code {worker.returncode}; log {log}:\n{procs.tail(log)}"
                )
        return _alive_workers(webui_url) >= cfg.workers

    procs.wait_for(
        workers_alive, master, f"{cfg.workers} Spark worker(s) ALIVE at {master_url}",
        cfg.start_timeout_s, state_dir / "worker-0.log",
    )  # fmt: skip


def down(state_dir: Path) -> int:
    """Stop the daemons recorded in ``state_dir`` (workers first) by process group; forget the cluster.

    Returns:
        How many process groups were running and were stopped.
    """
    state_dir = Path(state_dir).resolve()
    record = procs.read_json(state_dir / STATE_FILE)
    if record is None:
        return 0
    stopped = 0
    for entry in sorted(record["processes"], key=lambda p: p["role"] == "master"):
        pid, ticks = int(entry["pid"]), entry.get("start_ticks")
        if procs.is_alive(pid) and not procs.is_alive(pid, ticks):
            continue  # the pid now belongs to an unrelated process: leave it alone
        stopped += procs.stop_group(int(entry["pgid"]), timeout_s=20)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def status(state_dir: Path) -> dict[str, Any]:
    """What ``state_dir`` records and what runs: ``running`` (every daemon alive), ``master_url``,
    ``webui_url``, ``alive_workers`` (as the master reports them) and each daemon's pid and state."""
    state_dir = Path(state_dir).resolve()
    record = procs.read_json(state_dir / STATE_FILE)
    if record is None:
        return {"running": False, "state_dir": str(state_dir)}
    daemons = [
        {
            "role": p["role"],
            "pid": p["pid"],
            "alive": procs.is_alive(int(p["pid"]), p.get("start_ticks")),
            "log": p["log"],
        }
        for p in record["processes"]
    ]
    return {
        "running": bool(daemons) and all(d["alive"] for d in daemons),
        "master_url": record["master_url"],
        "webui_url": record["webui_url"],
        "alive_workers": _alive_workers(record["webui_url"]),
        "daemons": daemons,
        "state_dir": str(state_dir),
    }


# --------------------------------------------------------------------------- helpers


def _master_json(webui_url: str) -> dict[str, Any]:
    try:
        code, body = procs.http_get(f"{webui_url}/json/")
    except OSError:
        return {}
    return json.loads(body) if code == 200 else {}


def _alive_workers(webui_url: str) -> int:
    return sum(1 for w in _master_json(webui_url).get("workers", []) if w.get("state") == "ALIVE")


def _all_alive(record: dict[str, Any]) -> bool:
    return bool(record["processes"]) and all(
        procs.is_alive(int(p["pid"]), p.get("start_ticks")) for p in record["processes"]
    )


def _info(record: dict[str, Any], state_dir: Path) -> ClusterInfo:
    return ClusterInfo(
        master_url=record["master_url"],
        webui_url=record["webui_url"],
        pids=tuple(int(p["pid"]) for p in record["processes"]),
        state_dir=state_dir,
    )
