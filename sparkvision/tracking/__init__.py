"""Everything MLflow: the project's tracking server and the ``Tracking`` object that talks to it.

* ``server``: start, stop and inspect the project's MLflow server (SQLite + artifact store, its
  own process group), and ``tracking_uri``: which server runs go to.
* ``client``: ``Tracking``, built once per command from the resolved configuration and passed
  down (runs, parameters, metrics, artifacts, model logging and registry aliases, model URIs).
"""

from sparkvision.tracking.client import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ModelRef, Tracking
from sparkvision.tracking.server import (
    Server,
    TrackingError,
    ensure_server,
    server_status,
    start_server,
    stop_server,
    tracking_uri,
    warn_if_unreachable,
)

__all__ = [
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "ModelRef",
    "Server",
    "Tracking",
    "TrackingError",
    "ensure_server",
    "server_status",
    "start_server",
    "stop_server",
    "tracking_uri",
    "warn_if_unreachable",
]
