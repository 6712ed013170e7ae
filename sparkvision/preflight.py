"""Checks of a command's inputs that run before any SparkSession exists.

Each check returns the value to use or raises ``UserError`` naming the argument, what was
expected and what was found, so a mistyped path costs a second instead of a Spark start-up and
a traceback.

Data paths (``--input``, ``--output``, ``--data``, ``--gallery``) are local paths (relative ones
too) or filesystem URLs (``file://``, ``hdfs://``, ``s3a://``, ``gs://``, ``abfss://``; see
``sparkvision.storage``): they are returned as given, after their scheme is known and their
filesystem answers. Paths of local files the driver writes itself (``generate --out``,
``report --out``) stay local-only (``local_path``).
"""

from __future__ import annotations

import glob
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from sparkvision import storage
from sparkvision.errors import UserError

if TYPE_CHECKING:
    from sparkvision.config import Config
    from sparkvision.tracking import Tracking

MANIFEST = "manifest.json"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GLOB = re.compile(r"[*?\[{]")


def local_path(flag: str, value: str) -> str:
    """``value`` as a local path: plain paths as given, ``file:///abs`` as ``/abs``.

    Raises:
        UserError: Empty, malformed, or a URL of another scheme (``s3://``, ``hdfs://``, ...).
    """
    if not value or not value.strip():
        raise UserError(f"{flag}: expected a path, found an empty value")
    if "\0" in value:
        raise UserError(f"{flag} {value!r}: expected a path, found a NUL character in it")
    m = _URL.match(value)
    if not value.lower().startswith("file:"):
        if m is None:
            return value
        raise UserError(
            f"{flag} {value}: expected a local path or a file:// URL, found a '{m.group(1).lower()}://' URL "
            f"(remote filesystems are not supported for {flag} yet)"
        )
    parts = urllib.parse.urlsplit(value)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise UserError(f"{flag} {value}: expected a file URL of an absolute path (file:///abs/path), found {value!r}")
    return urllib.parse.unquote(parts.path)


def location(flag: str, value: str) -> str:
    """A data path or URL whose scheme is known and whose filesystem answers (it need not exist).

    Returns:
        ``value`` as given (a relative path stays relative).

    Raises:
        UserError: Empty, an unknown scheme, or a filesystem that cannot be reached (naming the
            path, the scheme and what it needs).
    """
    if not value or not value.strip():
        raise UserError(f"{flag}: expected a path, found an empty value")
    if "\0" in value:
        raise UserError(f"{flag} {value!r}: expected a path, found a NUL character in it")
    try:
        storage.check(value)
    except storage.StorageError as exc:
        raise UserError(f"{flag} {exc}") from exc
    return value


def existing_path(flag: str, value: str, what: str = "an existing file or folder") -> str:
    """A file or folder (local or at a URL) that exists.

    Raises:
        UserError: As ``location``, or nothing is at the path.
    """
    if not storage.location(location(flag, value)).exists():
        raise UserError(f"{flag} {value}: expected {what}, found no such file or directory")
    return value


def existing_dir(flag: str, value: str, what: str = "a folder") -> str:
    """A folder (local or at a URL) that exists.

    Raises:
        UserError: As ``existing_path``, or the path is a file.
    """
    existing_path(flag, value, what)
    if not storage.location(value).is_dir():
        raise UserError(f"{flag} {value}: expected {what}, found a file")
    return value


def images(flag: str, value: str) -> str:
    """A folder or file of images, an ingested dataset, or a glob (local globs must match a path).

    Raises:
        UserError: As ``existing_path``, or a local glob matches nothing.
    """
    location(flag, value)
    if _GLOB.search(value):
        where = storage.location(value)
        if (
            where.is_local
            and not glob.glob(where.path, recursive=True)
            and not glob.glob(_brace_free(where.path), recursive=True)
        ):
            raise UserError(f"{flag} {value}: expected a glob matching image files, found no match")
        return value
    return existing_path(flag, value, "a folder or file of images, or an ingested dataset")


def dataset(flag: str, value: str, what: str = "an ingested dataset", made_by: str = "sparkvision ingest") -> str:
    """A published output holding ``manifest.json`` (an ingested dataset, or a faces gallery).

    ``value`` may be the output (its pointer, or the old symlink layout, is resolved) or one of
    its version folders.

    Raises:
        UserError: As ``existing_dir``, or no version with ``manifest.json`` is there.
    """
    from sparkvision.data import publish

    existing_dir(flag, value, f"{what} folder")
    try:
        current = publish.resolve(value)
    except FileNotFoundError as exc:
        raise UserError(f"{flag} {exc}") from exc
    if current is None or not current.location.join(MANIFEST).is_file():
        raise UserError(
            f"{flag} {value}: expected {what} (a folder with {publish.POINTER} or {MANIFEST}, written by "
            f"`{made_by}`), found a folder without {publish.POINTER} or {MANIFEST}"
        )
    return value


def tracking_server(cfg: Config, uri: str = "") -> Tracking:
    """The MLflow server runs go to (``uri`` when given), checked to answer when it is an HTTP server.

    Raises:
        TrackingError: No server is configured and none runs from ``paths.mlflow``.
        UserError: The HTTP server does not answer ``/health``.
    """
    from sparkvision.tracking import Tracking

    tracking = Tracking(uri) if uri else Tracking.from_config(cfg)
    reachable(tracking.uri)
    return tracking


def reachable(uri: str) -> None:
    """Fail fast when an ``http(s)://`` tracking server does not answer (MLflow's client retries for minutes).

    Raises:
        UserError: Naming the URI and what answered instead.
    """
    if not uri.startswith(("http://", "https://")):
        return
    from sparkvision.procs import http_get

    health = f"{uri.rstrip('/')}/health"
    hint = "start one with `sparkvision mlflow start` or set mlflow.tracking_uri / MLFLOW_TRACKING_URI"
    try:
        status, body = http_get(health, timeout=5.0)
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"MLflow server {uri}: expected an answer from {health}, found none ({reason}); {hint}"
        ) from exc
    if status != 200:
        raise UserError(f"MLflow server {uri}: expected {health} to answer 200 OK, found HTTP {status}; {hint}")


def model_uri(flag: str, uri: str, cfg: Config) -> Tracking | None:
    """Check that ``uri`` names a model that exists; returns the tracking server it needs (None for a folder).

    ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` are looked up in the registry,
    ``runs:/RUN/PATH`` must name a run; a local folder must hold an ``MLmodel`` file.

    Raises:
        UserError: Unknown name, alias, version or run, or a folder that is not an MLflow model.
        TrackingError: A registry URI but no tracking server.
    """
    if not uri:
        raise UserError(f"{flag}: expected a model URI (models:/NAME@ALIAS), found an empty value")
    if uri.startswith("models:/"):
        tracking = tracking_server(cfg)
        _registered(flag, uri, tracking)
        return tracking
    if uri.startswith("runs:/"):
        tracking = tracking_server(cfg)
        run(flag, uri.removeprefix("runs:/").split("/", 1)[0], tracking)
        return tracking
    if _URL.match(uri) and not uri.lower().startswith("file:"):
        return None  # an artifact URL (s3://, ...): MLflow downloads it and reports its own errors
    folder = existing_dir(flag, uri, "an MLflow model folder")
    if not (Path(folder) / "MLmodel").is_file():
        raise UserError(f"{flag} {uri}: expected an MLflow model folder (with an MLmodel file), found none")
    return None


def _registered(flag: str, uri: str, tracking: Tracking) -> None:
    from mlflow.exceptions import MlflowException

    if not re.fullmatch(r"models:/[^/@]+(@[^/]+|/\d+)", uri):
        raise UserError(f"{flag} {uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION, found {uri!r}")
    try:
        tracking.resolve(uri)
    except MlflowException as exc:
        raise UserError(
            f"{flag} {uri}: expected a registered model version on {tracking.uri}, found none: {exc.message}"
        ) from exc


def run(flag: str, run_id: str, tracking: Tracking) -> None:
    """Check that ``run_id`` is a run on the tracking server.

    Raises:
        UserError: The server does not know the run.
    """
    from mlflow.exceptions import MlflowException

    try:
        tracking.run(run_id)
    except MlflowException as exc:
        raise UserError(f"{flag} {run_id}: expected a run on {tracking.uri}, found none: {exc.message}") from exc


def _brace_free(pattern: str) -> str:
    """``{a,b}`` alternatives (which Spark globs allow) widened to ``*`` for Python's glob."""
    return re.sub(r"\{[^}]*\}", "*", pattern)
