"""Heartbeats of training runs, and the sweep that marks runs whose driver was killed.

A training run carries, as MLflow run tags, who drives it (``sparkvision.driver``: host, pid
and the pid's start time, so a reused pid is not taken for the driver) and when it was last
known to be alive (``sparkvision.heartbeat``: Unix seconds, with ``sparkvision.last_epoch``),
updated by the driver when the run starts or resumes and by rank 0 at the end of every epoch.
A driver killed with SIGKILL cannot finish its run, which would stay RUNNING forever:
``clean_runs`` (called by the next ``train``, ``train --resume`` and ``sparkvision runs clean``)
marks every RUNNING run whose heartbeat is older than ``train.heartbeat_timeout_s`` and whose
driver process is gone as KILLED, naming the last finished epoch.

A driver on another host cannot be checked from here: its run is reported, never marked.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparkvision import procs

if TYPE_CHECKING:
    from sparkvision.tracking.client import Tracking

log = logging.getLogger(__name__)

DRIVER_TAG = "sparkvision.driver"
HEARTBEAT_TAG = "sparkvision.heartbeat"
LAST_EPOCH_TAG = "sparkvision.last_epoch"
KILLED_TAG = "sparkvision.killed"


@dataclass(frozen=True)
class Swept:
    """A RUNNING run looked at by ``clean_runs``.

    Attributes:
        run_id: The run.
        action: ``killed`` (marked KILLED), ``alive`` (heartbeat fresh or driver running) or
            ``unknown`` (stale, but its driver is on another host).
        last_epoch: The last epoch rank 0 finished (1-based), or None before the first one.
        age_s: Seconds since the last heartbeat.
        driver: ``host:pid`` of its driver.
    """

    run_id: str
    action: str
    last_epoch: int | None
    age_s: float
    driver: str


def driver_tags(now: float | None = None) -> dict[str, str]:
    """Tags naming this process as the run's driver, with a fresh heartbeat."""
    pid = os.getpid()
    driver = {"host": socket.gethostname(), "pid": pid, "ticks": procs.start_ticks(pid)}
    return {DRIVER_TAG: json.dumps(driver, sort_keys=True), HEARTBEAT_TAG: f"{now or time.time():.3f}"}


def beat(tracking: Tracking, run_id: str, epoch: int | None = None) -> None:
    """Refresh the heartbeat of ``run_id``; ``epoch``: the epoch just finished (0-based)."""
    tags = {HEARTBEAT_TAG: f"{time.time():.3f}"}
    if epoch is not None:
        tags[LAST_EPOCH_TAG] = str(int(epoch) + 1)
    tracking.set_tags(run_id, tags)


def driver_alive(driver: dict[str, object]) -> bool | None:
    """Whether the driver named by a ``DRIVER_TAG`` value runs: None when it is on another host."""
    if driver.get("host") != socket.gethostname():
        return None
    pid = driver.get("pid")
    ticks = driver.get("ticks")
    return isinstance(pid, int) and procs.is_alive(pid, ticks if isinstance(ticks, int) else None)


def clean_runs(
    tracking: Tracking, experiments: Sequence[str], timeout_s: float, now: float | None = None
) -> list[Swept]:
    """Mark RUNNING runs of ``experiments`` whose heartbeat is stale and driver gone as KILLED.

    Args:
        tracking: The MLflow server.
        experiments: Experiment names (unknown ones are skipped).
        timeout_s: A heartbeat older than this is stale (``train.heartbeat_timeout_s``).
        now: The current time (Unix seconds; default: the clock).

    Returns:
        Every RUNNING run with a driver tag, with what was done to it.
    """
    now = time.time() if now is None else now
    ids = []
    for name in experiments:
        exp = tracking.client.get_experiment_by_name(name)
        if exp is not None:
            ids.append(exp.experiment_id)
    if not ids:
        return []
    runs = tracking.client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=1000)
    swept = []
    for run in runs:
        tags = run.data.tags
        if DRIVER_TAG not in tags:
            continue
        try:
            driver = json.loads(tags[DRIVER_TAG])
            beat_at = float(tags.get(HEARTBEAT_TAG, run.info.start_time / 1000))
        except (ValueError, TypeError):
            continue
        last = int(tags[LAST_EPOCH_TAG]) if tags.get(LAST_EPOCH_TAG, "").isdigit() else None
        age = now - beat_at
        name = f"{driver.get('host')}:{driver.get('pid')}"
        alive = driver_alive(driver)
        if age <= timeout_s or alive:
            action = "alive"
        elif alive is None:
            action = "unknown"
            log.warning("run %s: no heartbeat for %.0f s, but its driver %s is on another host; not marked",
                        run.info.run_id, age, name)  # fmt: skip
        else:
            action = "killed"
            epoch = "before its first epoch" if last is None else f"after epoch {last}"
            tracking.set_tags(run.info.run_id, {KILLED_TAG: f"driver {name} gone, no heartbeat for {age:.0f} s, "
                                                            f"{epoch}; resume with train --resume"})  # fmt: skip
            tracking.finish_run(run.info.run_id, status="KILLED")
            log.warning("run %s: driver %s is gone (no heartbeat for %.0f s, %s): marked KILLED",
                        run.info.run_id, name, age, epoch)  # fmt: skip
        swept.append(Swept(run.info.run_id, action, last, round(age, 1), name))
    return swept
