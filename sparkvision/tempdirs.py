"""Temporary folders of this process, all under one per-process folder.

Every temporary folder the project makes (downloaded models, checkpoints being restored or
loaded, a training run's work files, a model being logged) lives in
``<tmp>/sparkvision/<pid>-<start ticks>/``: removed when the process exits normally, and swept
by the next process that makes one when its owner is gone (a driver killed with SIGKILL runs
no exit handler). The start time next to the pid keeps a reused pid from protecting a dead
owner's folder.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from sparkvision import procs

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d+)-(\d+|x)$")
_LOCK = threading.Lock()
_MINE: dict[int, Path] = {}


def base_dir() -> Path:
    """``<tmp>/sparkvision``: the parent of every process's folder."""
    return Path(tempfile.gettempdir()) / "sparkvision"


def process_dir() -> Path:
    """This process's folder (created, with a sweep of dead owners' folders, on first use)."""
    pid = os.getpid()
    with _LOCK:
        folder = _MINE.get(pid)  # keyed by pid: a forked child makes its own
        if folder is None or not folder.is_dir():
            sweep()
            ticks = procs.start_ticks(pid)
            folder = base_dir() / f"{pid}-{ticks if ticks is not None else 'x'}"
            folder.mkdir(parents=True, exist_ok=True)
            if pid not in _MINE:
                atexit.register(_remove, folder, pid)
            _MINE[pid] = folder
        return folder


def _remove(folder: Path, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def mkdtemp(prefix: str) -> Path:
    """A new folder ``prefix*`` in this process's folder (removed with it)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=process_dir()))


def temporary_directory(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """``tempfile.TemporaryDirectory`` inside this process's folder."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir=process_dir())


def sweep() -> list[Path]:
    """Remove the folders of processes that are gone; returns what was removed.

    Only folders named ``<pid>-<ticks>`` whose pid does not run (or runs as another process
    since) are removed; anything else under ``base_dir()`` is left alone.
    """
    root = base_dir()
    removed: list[Path] = []
    try:
        children = sorted(root.iterdir())
    except OSError:
        return removed
    for child in children:
        match = _NAME.match(child.name)
        if not match or not child.is_dir():
            continue
        pid, ticks = int(match.group(1)), match.group(2)
        if procs.is_alive(pid, None if ticks == "x" else int(ticks)):
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    if removed:
        log.info("removed %d temporary folder(s) of processes that are gone from %s", len(removed), root)
    return removed
