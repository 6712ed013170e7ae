"""The project's MLflow tracking server (SQLite + local artifact store) and which server runs go to.

``start_server`` runs ``python -m mlflow server`` in its own process group and records it in
``STATE/server.json``; ``stop_server`` stops that process group (the server's uvicorn workers
and job consumers included). ``tracking_uri`` answers "which server do runs go to":
``MLFLOW_TRACKING_URI``, then ``mlflow.tracking_uri``, then the project's running server.

Executors on other hosts cannot reach ``127.0.0.1``. The project's server binds loopback
unless ``mlflow.host`` names another address (it has no authentication: said once when it
starts); an existing server given as ``mlflow.tracking_uri`` is used as is and none is started.
``warn_if_unreachable`` tells the driver when the URI its ranks will log through is local to it.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sparkvision import procs
from sparkvision.config import Config, MlflowConfig

_log = logging.getLogger(__name__)

STATE_FILE = "server.json"
LOG_FILE = "server.log"
_WARNED: set[str] = set()
"""Tracking URIs ``warn_if_unreachable`` already warned about in this process."""


class TrackingError(RuntimeError):
    """No tracking server is configured or running, or the project's server failed to start."""


@dataclass(frozen=True)
class Server:
    """A running MLflow server started by :func:`start_server`."""

    url: str
    pid: int
    pgid: int
    port: int
    host: str
    state_dir: Path
    log: Path
    started_at: str


def start_server(cfg: MlflowConfig, state_dir: Path) -> Server:
    """Start the project's MLflow server, or return the one already running from ``state_dir``.

    The server stores runs and the model registry in ``STATE/mlflow.db`` (SQLite) and serves
    artifacts from ``STATE/artifacts`` through its HTTP proxy (``mlflow-artifacts:/``), so
    clients never touch the database file. Its output goes to ``STATE/server.log``.

    Args:
        cfg: The ``mlflow`` section (host, port (0: a free one), workers, start timeout).
        state_dir: Folder of the database, artifacts, log and ``server.json``.

    Returns:
        The running server.

    Raises:
        TrackingError: If the port is taken, or the server exits or does not answer ``/health``
            within ``cfg.start_timeout_s`` (the message holds the tail of its log).
    """
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir):
        running = _recorded_server(state_dir)
        if running is not None:
            return running
        port = cfg.port or procs.free_port(cfg.host)
        _check_bindable(cfg.host, port)
        log = state_dir / LOG_FILE
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{state_dir / 'mlflow.db'}",
            "--artifacts-destination", str(state_dir / "artifacts"),
            "--host", cfg.host,
            "--port", str(port),
            "--workers", str(cfg.workers),
        ]  # fmt: skip
        env = dict(os.environ)
        # The job runner serves GenAI jobs (trace scoring) this project does not use; it would
        # add seven huey consumer processes on a 2-core machine. Users can still enable it.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        env.pop("MLFLOW_TRACKING_URI", None)
        proc = procs.spawn(cmd, log, env=env, cwd=state_dir)
        url = f"http://{_client_host(cfg.host)}:{port}"
        try:
            procs.wait_for(lambda: _healthy(url), proc, f"MLflow server ({url})", cfg.start_timeout_s, log)
        except procs.ServiceError as exc:
            procs.stop_group(proc.pid, timeout_s=10)
            proc.poll()
            raise TrackingError(str(exc)) from None
        server = Server(
            url=url,
            pid=proc.pid,
            pgid=os.getpgid(proc.pid),
            port=port,
            host=cfg.host,
            state_dir=state_dir,
            log=log,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(server).items()}
        record["start_ticks"] = procs.start_ticks(proc.pid)
        procs.write_json(state_dir / STATE_FILE, record)
        if not _is_loopback(cfg.host):
            _log.warning("MLflow server %s listens on %s (mlflow.host) with no authentication: anyone who can "
                        "reach it can read, change and delete runs and models", url, cfg.host)  # fmt: skip
        return server


def stop_server(state_dir: Path, timeout_s: float = 20.0) -> bool:
    """Stop the server recorded in ``state_dir`` by its process group and forget it.

    Args:
        state_dir: The folder given to :func:`start_server`.
        timeout_s: Seconds between SIGTERM and SIGKILL.

    Returns:
        True when a running server was stopped, False when none was running.

    Raises:
        procs.ServiceError: If processes of the group survive SIGKILL.
    """
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        record = procs.read_json(state_dir / STATE_FILE)
        if record is None:
            return False
        stopped = False
        if _same_process(record) or not procs.is_alive(int(record["pid"])):
            # The leader may be gone while its workers still run; the group id stays ours then.
            stopped = procs.stop_group(int(record["pgid"]), timeout_s=timeout_s)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        return stopped


def server_status(state_dir: Path) -> dict[str, Any]:
    """What ``state_dir`` records about the server and whether it runs and answers.

    Returns:
        ``running`` (the recorded process lives), ``healthy`` (``/health`` answers), and when a
        server is recorded: ``url``, ``pid``, ``pgid``, ``port``, ``started_at``, ``log``,
        ``processes`` (live pids of its group); always ``state_dir``.
    """
    state_dir = Path(state_dir).resolve()
    record = procs.read_json(state_dir / STATE_FILE)
    status: dict[str, Any] = {"running": False, "healthy": False, "state_dir": str(state_dir)}
    if record is None:
        return status
    running = _same_process(record)
    status.update({k: record.get(k) for k in ("url", "pid", "pgid", "port", "started_at", "log")})
    status["running"] = running
    status["processes"] = procs.group_members(int(record["pgid"])) if running else []
    status["healthy"] = running and _healthy(str(record["url"]))
    return status


def tracking_uri(cfg: Config) -> str:
    """The tracking URI runs go to: ``MLFLOW_TRACKING_URI``, ``mlflow.tracking_uri``, or the project's server.

    Raises:
        TrackingError: If none is set and no server runs from ``paths.mlflow``.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    state = cfg.path("mlflow")
    status = server_status(state)
    if status["running"]:
        return str(status["url"])
    raise TrackingError(
        f"no MLflow tracking server: MLFLOW_TRACKING_URI is not set, mlflow.tracking_uri is empty and no "
        f"server is running from {state}; start one with `sparkvision mlflow start --env {cfg.env}` "
        f"or set mlflow.tracking_uri"
    )


def ensure_server(cfg: Config) -> str:
    """:func:`tracking_uri`, starting the project's server in ``paths.mlflow`` when none is configured."""
    try:
        return tracking_uri(cfg)
    except TrackingError:
        return start_server(cfg.mlflow, cfg.path("mlflow")).url


# --------------------------------------------------------------------------- helpers


def _recorded_server(state_dir: Path) -> Server | None:
    """The live, healthy server recorded in ``state_dir``; a dead record is cleaned up."""
    record = procs.read_json(state_dir / STATE_FILE)
    if record is None:
        return None
    if _same_process(record) and _wait_healthy(str(record["url"]), 10.0):
        return Server(
            url=str(record["url"]),
            pid=int(record["pid"]),
            pgid=int(record["pgid"]),
            port=int(record["port"]),
            host=str(record["host"]),
            state_dir=state_dir,
            log=Path(record["log"]),
            started_at=str(record["started_at"]),
        )
    if _same_process(record) or not procs.is_alive(int(record["pid"])):
        procs.stop_group(int(record["pgid"]), timeout_s=10)
    (state_dir / STATE_FILE).unlink()
    return None


def _same_process(record: dict[str, Any]) -> bool:
    ticks = record.get("start_ticks")
    return procs.is_alive(int(record["pid"]), int(ticks) if ticks is not None else None)


def _healthy(url: str) -> bool:
    try:
        status, body = procs.http_get(f"{url}/health")
    except OSError:
        return False
    return status == 200 and body.strip() == b"OK"


def _wait_healthy(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


def _check_bindable(host: str, port: int) -> None:
    """Fail before spawning when the server could not bind ``host:port``."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise TrackingError(
                    f"cannot start MLflow on {host}:{port}: the port is already in use by another process; "
                    f"set mlflow.port to a free port or 0 (pick one), e.g. --set mlflow.port=0"
                ) from None
            raise TrackingError(f"cannot start MLflow on {host}:{port}: mlflow.host cannot be bound: {exc}") from None


def _client_host(host: str) -> str:
    """The name clients use for a server bound to ``host``: for every interface, this machine's
    name (executors on other hosts reach it there), when it resolves; else ``host`` itself."""
    if host not in ("0.0.0.0", "", "::"):
        return host
    name = socket.gethostname()
    try:
        socket.gethostbyname(name)
    except OSError:
        return "127.0.0.1"
    return name


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_unreachable(uri: str, master: str) -> bool:
    """Warn (once per URI and process) when executors of ``master`` on other hosts cannot reach ``uri``.

    Horovod rank 0 logs epoch metrics through the URI the driver resolved; a loopback URL, or a
    local database or folder, is this machine's only. Nothing is said for a master whose
    executors run on this machine (``local[N]``, ``local-cluster``, ``spark://127.0.0.1:...``).

    Args:
        uri: The resolved tracking URI (``tracking_uri``).
        master: The Spark master URL (``SparkContext.master``).

    Returns:
        Whether the URI is local to this machine while the master is not (warned or not).
    """
    from urllib.parse import urlparse

    if master.startswith("local") or _is_loopback(urlparse(master).hostname or ""):
        return False
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        local = _is_loopback(parsed.hostname or "")
    else:
        # a folder or database of this machine; "databricks" (no scheme) names a workspace
        local = parsed.scheme in ("file", "sqlite") or (not parsed.scheme and uri != "databricks")
    if local and uri not in _WARNED:
        _WARNED.add(uri)
        _log.warning("MLflow tracking URI %s is local to the driver: executors of %s on other hosts cannot log to "
                    "it; set mlflow.tracking_uri (or MLFLOW_TRACKING_URI) to a server they reach, or mlflow.host to "
                    "an address of this machine they reach", uri, master)  # fmt: skip
    return local


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise start/stop on one state folder across processes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
