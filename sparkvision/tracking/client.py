"""``Tracking``: the one way this project talks to MLflow.

Built once per command from the resolved configuration (``Tracking.from_config``) and passed
down to whatever logs or resolves models: the trainer, scoring, face identification, reports.
It holds the server's URI and one ``MlflowClient``; nothing in the project sets the process's
``MLFLOW_TRACKING_URI``, and MLflow's process-wide ("fluent") URI is set only for the one call
that needs it (logging a model) and restored afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from sparkvision.config import Config

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Makes the MLflow UI open the project's experiments on their training runs, not the GenAI overview."""
TASK_TAG = "task"
"""Model-version tag naming the model family (``sparkvision.models.REGISTRY`` key)."""
EPOCH_METRICS_TAG = "sparkvision.epoch_metrics"
"""Run tag: the comma-separated keys logged every epoch. ``Tracking.histories`` fetches the history
of these only (one request per key); the run's other metrics are logged once, after training."""
_BATCH = 100
DIGEST_CHARS = 36
"""MLflow's limit on a dataset digest (``MAX_DATASET_DIGEST_SIZE``): checksums are logged by this prefix."""

_ALIAS_URI = re.compile(r"models:/([^/@]+)@([^/]+)")
_VERSION_URI = re.compile(r"models:/([^/@]+)/(\d+)")
_RUN_URI = re.compile(r"runs:/([^/]+)/")


@dataclass(frozen=True)
class ModelRef:
    """A model URI pinned to what it names.

    Attributes:
        uri: The URI as given (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN/PATH``, a path).
        pinned_uri: The URI of exactly this version (``models:/NAME/VERSION`` for registry URIs).
        name: Registered model name, or None outside the registry.
        version: Registered version, or None.
        run_id: The run that logged the model, or None when unknown.
        task: The model family from the version's ``task`` tag, or None when untagged.
    """

    uri: str
    pinned_uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    task: str | None = None


class Tracking:
    """One MLflow tracking server (and its model registry).

    Args:
        uri: The tracking URI (``http://...``, ``sqlite:///...``, a folder).
    """

    def __init__(self, uri: str) -> None:
        if not uri:
            raise ValueError("Tracking: expected a tracking URI, found an empty one")
        self.uri = uri

    def __repr__(self) -> str:
        return f"Tracking({self.uri!r})"

    @classmethod
    def from_config(cls, cfg: Config, start: bool = False) -> Tracking:
        """The server of ``cfg`` (``MLFLOW_TRACKING_URI``, ``mlflow.tracking_uri``, the project's running one).

        Args:
            cfg: The resolved configuration.
            start: Start the project's server in ``paths.mlflow`` when none is configured or running.

        Raises:
            TrackingError: When no server is configured or running and ``start`` is False.
        """
        from sparkvision.tracking.server import ensure_server, tracking_uri

        return cls(ensure_server(cfg) if start else tracking_uri(cfg))

    @cached_property
    def client(self) -> MlflowClient:
        """The ``MlflowClient`` of this server (created on first use)."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # ------------------------------------------------------------------ runs

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when missing, marked as a model-training experiment."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id

    def create_run(self, experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> str:
        """A new RUNNING run in ``experiment`` (created when missing); returns its id."""
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=dict(tags or {}))
        return str(run.info.run_id)

    def reopen_run(self, run_id: str) -> None:
        """Mark a finished or failed run RUNNING again (a resumed job continues its run)."""
        self.client.update_run(run_id, status="RUNNING")

    def finish_run(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run with ``status`` (``FINISHED``, ``FAILED``, ``KILLED``)."""
        self.client.set_terminated(run_id, status=status)

    def run(self, run_id: str) -> Any:
        """The MLflow ``Run`` (raises ``MlflowException`` when the server does not know it)."""
        return self.client.get_run(run_id)

    def run_url(self, run_id: str) -> str:
        """The MLflow UI page of a run, or ``RUN on URI`` when the server is not an HTTP one."""
        if not self.uri.startswith(("http://", "https://")):
            return f"{run_id} on {self.uri}"
        experiment = self.run(run_id).info.experiment_id
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"

    def experiment_url(self, name: str) -> str:
        """The MLflow UI's Training runs page of experiment ``name``.

        The server's bare address opens MLflow 3's GenAI home page whatever the experiment's tags
        say; ``#/experiments/<id>/runs`` opens the runs table. Without such an experiment: the
        server's address; on a server that is not an HTTP one: its URI.
        """
        if not self.uri.startswith(("http://", "https://")):
            return self.uri
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            return self.uri
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment.experiment_id}/runs"

    # ------------------------------------------------------------------ logging

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """Log parameters in batches (MLflow takes 100 per call; values cut at 6,000 characters)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[start : start + _BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set run tags (one call)."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        """Log numeric metrics at ``step`` with one timestamp, in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key=k, value=float(v), timestamp=now, step=int(step)) for k, v in sorted(metrics.items())]
        for start in range(0, len(items), _BATCH * 10):
            self.client.log_batch(run_id, metrics=items[start : start + _BATCH * 10])

    def log_input(self, run_id: str, source: str, digest: str, name: str, context: str = "training",
                  profile: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        """Log a dataset the run read, shown in the MLflow UI's Dataset column.

        Args:
            run_id: The run.
            source: URL of the exact dataset version read (a Spark/Parquet source).
            digest: Its content checksum; MLflow keeps at most 36 characters (the prefix is logged).
            name: Dataset name shown in the UI.
            context: The input's ``mlflow.data.context`` tag (``training``, ``evaluation``).
            profile: Small JSON-able facts (row counts).
        """
        from mlflow.data.spark_dataset_source import SparkDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        src = SparkDatasetSource(path=source)
        dataset = Dataset(name=name, digest=digest[:DIGEST_CHARS], source_type=src._get_source_type(),
                          source=src.to_json(), profile=json.dumps(dict(profile)) if profile else None)  # fmt: skip
        self.client.log_inputs(run_id, [DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Write ``text`` as the artifact ``artifact_file``."""
        self.client.log_text(run_id, text, artifact_file)

    def log_artifact(self, run_id: str, path: str | Path, artifact_dir: str | None = None) -> None:
        """Upload one file into ``artifact_dir`` of the run."""
        self.client.log_artifact(run_id, str(path), artifact_dir)

    def log_artifacts(self, run_id: str, folder: str | Path, artifact_dir: str | None = None) -> None:
        """Upload a folder's files into ``artifact_dir`` of the run."""
        self.client.log_artifacts(run_id, str(folder), artifact_dir)

    def list_artifacts(self, run_id: str, path: str = "") -> list[str]:
        """Every artifact file under ``path`` of the run (recursive), sorted."""
        out: list[str] = []
        for info in self.client.list_artifacts(run_id, path or None):
            out.extend(self.list_artifacts(run_id, info.path) if info.is_dir else [info.path])
        return sorted(out)

    def download(self, run_id: str, artifact_path: str, dst: str | Path) -> Path:
        """Download a run artifact (file or folder) into ``dst``; returns its local path."""
        import mlflow

        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                        dst_path=str(dst), tracking_uri=self.uri))  # fmt: skip

    def histories(self, run_id: str) -> dict[str, list[tuple[int, float]]]:
        """Every metric of the run as ``(step, value)`` pairs sorted by step (last value per step).

        A run tagged with ``EPOCH_METRICS_TAG`` (rank 0 tags its training runs) has the history of
        those keys fetched, one request each; its other metrics are logged once and come from the run
        itself (an attributes run logs about 360 of them, where a request per key cost seconds).
        """
        run = self.run(run_id)
        tagged = run.data.tags.get(EPOCH_METRICS_TAG)
        epoch_keys = set(tagged.split(",")) if tagged else set(run.data.metrics)
        latest = {m.key: m for m in getattr(run.data, "_metric_objs", None) or []}  # with their steps
        out: dict[str, list[tuple[int, float]]] = {}
        for key in run.data.metrics:
            if key in latest and key not in epoch_keys:
                out[key] = [(int(latest[key].step), float(latest[key].value))]
            else:
                by_step: dict[int, float] = {}
                for m in sorted(self.client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)):
                    by_step[int(m.step)] = float(m.value)
                out[key] = sorted(by_step.items())
        return out

    # ------------------------------------------------------------------ models

    def log_model(
        self,
        run_id: str,
        model: Any,
        task_name: str,
        meta: Mapping[str, Any],
        registered_name: str,
        alias: str,
        examples: list[bytes] | None = None,
    ) -> ModelRef:
        """Log a Keras model of ``task_name`` as a ``VisionModel`` into ``run_id``, register it, set ``alias``.

        Returns:
            The new registered version (``pinned_uri`` ``models:/NAME/VERSION``).
        """
        import mlflow

        from sparkvision.models.packaging import log_vision_model

        with self._process_uri(), _registry_notices():
            # start_run(run_id=...) refuses a run outside the process's active experiment, which a
            # notebook or an earlier job may have set to another one.
            mlflow.set_experiment(experiment_id=self.run(run_id).info.experiment_id)
            with mlflow.start_run(run_id=run_id):
                info = log_vision_model(model, task_name, dict(meta), registered_model_name=registered_name,
                                        input_example_images=examples)  # fmt: skip
        version = str(info.registered_model_version)
        self.client.set_model_version_tag(registered_name, version, TASK_TAG, task_name)
        self.set_alias(registered_name, alias, version)
        return ModelRef(f"models:/{registered_name}@{alias}", f"models:/{registered_name}/{version}",
                        registered_name, version, run_id, task_name)  # fmt: skip

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``name@alias`` at ``version`` (the registered model is created when missing)."""
        self.client.set_registered_model_alias(name, alias, version)

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        """Set tags on one registered model version (one call per tag; the registry has no batch)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags of one registered model version."""
        return dict(self.client.get_model_version(name, version).tags or {})

    def alias_ref(self, name: str, alias: str) -> ModelRef | None:
        """``resolve("models:/NAME@ALIAS")``, or None when the model has no such alias (or does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.resolve(f"models:/{name}@{alias}")
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                return None
            raise

    def resolve(self, model_uri: str) -> ModelRef:
        """Pin a model URI: ``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` through the registry
        (one call), ``runs:/RUN/PATH`` to its run; anything else (a folder, an artifact URL) as is.

        Raises:
            mlflow.exceptions.MlflowException: Unknown name, alias or version (the registry's message).
        """
        if m := _ALIAS_URI.fullmatch(model_uri):
            mv = self.client.get_model_version_by_alias(m.group(1), m.group(2))
        elif m := _VERSION_URI.fullmatch(model_uri):
            mv = self.client.get_model_version(m.group(1), m.group(2))
        elif m := _RUN_URI.match(model_uri):
            return ModelRef(model_uri, model_uri, run_id=m.group(1))
        else:
            return ModelRef(model_uri, model_uri)
        return ModelRef(model_uri, f"models:/{mv.name}/{mv.version}", mv.name, str(mv.version), mv.run_id,
                        (mv.tags or {}).get(TASK_TAG))  # fmt: skip

    def download_model(self, ref: ModelRef, dst: str | Path) -> Path:
        """Download the pinned model into ``dst``; returns the folder holding its ``MLmodel``.

        A registry version is fetched from its storage location: MLflow resolves a ``models:/``
        URI with a client of the process-wide registry, whatever ``registry_uri`` it is given.
        """
        import mlflow

        Path(dst).mkdir(parents=True, exist_ok=True)
        source = ref.pinned_uri
        if ref.name is not None and ref.version is not None:
            source = self.client.get_model_version_download_uri(ref.name, ref.version)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                        tracking_uri=self.uri))  # fmt: skip

    @contextmanager
    def _process_uri(self) -> Iterator[None]:
        """MLflow's process-wide tracking URI set to this server for one block, then put back.

        ``mlflow.set_tracking_uri`` also writes the ``MLFLOW_TRACKING_URI`` environment variable
        (for subprocesses), so both are restored exactly: a job that logs a model must not leave
        the next job of the same process (a pipeline's next step) pointed anywhere new.
        """
        import mlflow
        from mlflow.environment_variables import MLFLOW_TRACKING_URI

        env_before = MLFLOW_TRACKING_URI.get_raw()
        uri_before = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        try:
            yield
        finally:
            # None: back to MLflow resolving the URI itself (environment, then its default).
            mlflow.set_tracking_uri(None if env_before is None else uri_before)  # type: ignore[arg-type]
            if env_before is None:
                MLFLOW_TRACKING_URI.unset()
            else:
                MLFLOW_TRACKING_URI.set(env_before)


@contextmanager
def _registry_notices() -> Iterator[None]:
    """MLflow's registry prints ("Registered model ... already exists", "Created version ...")
    to stderr; the caller reports the version itself, so they are logged at DEBUG instead."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.debug("mlflow: %s", line)
