"""Long-running service processes: start each in its own process group, record it, stop it by group.

The MLflow server and the Spark master/workers are started through :func:`spawn` and stopped
through :func:`stop_group`, which signals exactly the recorded process group. Nothing here
looks processes up by name: other people's servers share the machine.

Liveness ignores zombies: a process that has exited but is not yet reaped by its parent
holds no port, memory or CPU (on machines whose PID 1 reaps slowly, orphans linger as zombies
for a while).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

PROC = Path("/proc")


class ServiceError(RuntimeError):
    """A service did not start or stop; the message says which, why, and ends with its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(
    cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session (its own process group) with stdout+stderr to ``log_path``.

    Args:
        cmd: The command line.
        log_path: File receiving the output (appended; parents created).
        env: Full environment of the child; default this process's environment.
        cwd: Working directory of the child.

    Returns:
        The running process; its pid is also its process group id.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name, or None when the pid does not exist."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (identifies it against pid reuse)."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int, ticks: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, when ``ticks`` is given, is the same process."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return ticks is None or int(fields[19]) == ticks


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return sorted(members)


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` when it is our own child (no zombie left behind)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop_group(pgid: int, timeout_s: float = 20.0) -> bool:
    """Stop every process of group ``pgid``: SIGTERM, wait up to ``timeout_s``, then SIGKILL.

    Args:
        pgid: The process group id (the pid of the group's leader, started by :func:`spawn`).
        timeout_s: Seconds to wait after SIGTERM before SIGKILL.

    Returns:
        True when live processes were found and stopped, False when none was running.

    Raises:
        ServiceError: If processes of the group survive SIGKILL (their pids are listed).
    """
    if not group_members(pgid):
        _reap(pgid)
        return False
    _signal_group(pgid, signal.SIGTERM)
    if not _wait_until(lambda: not group_members(pgid), timeout_s, on_poll=lambda: _reap(pgid)):
        _signal_group(pgid, signal.SIGKILL)
        if not _wait_until(lambda: not group_members(pgid), 10.0, on_poll=lambda: _reap(pgid)):
            raise ServiceError(f"process group {pgid} survived SIGKILL: pids {group_members(pgid)}")
    _reap(pgid)
    return True


def _wait_until(done: Callable[[], bool], timeout_s: float, on_poll: Callable[[], None] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if on_poll:
            on_poll()
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; returns (status, body). Raises OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own loopback services
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_for(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes] | None,
    what: str,
    timeout_s: float,
    log_path: Path,
) -> None:
    """Poll ``ready()`` until it is true; fail early if ``proc`` exits.

    Raises:
        ServiceError: When ``proc`` exits first or ``timeout_s`` passes; the message holds the log tail.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{what} exited with code {proc.returncode} before it was ready; log {log_path}:\n{tail(log_path)}"
            )
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what} was not ready after {timeout_s:.0f} s; log {log_path}:\n{tail(log_path)}")
        time.sleep(0.5)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(data), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file does not exist.

    Raises:
        ServiceError: If the file is not a JSON object (names the file and the problem).
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServiceError(f"{path}:{exc.lineno}: invalid state file: {exc.msg}; remove it if no service runs") from exc
    if not isinstance(data, dict):
        raise ServiceError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
