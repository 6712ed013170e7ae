"""What a training job records in MLflow: parameters, inputs, per-epoch metrics and curves.

The run is created on the driver; rank 0 of the Horovod job logs epoch metrics to it over
HTTP with ``EpochLogger`` (never touching the server's database file).
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkvision.config import Config
    from sparkvision.tracking import Tracking

CURVE_GROUPS: dict[str, tuple[str, ...]] = {
    "loss": ("loss", "val_loss"),
    "throughput": ("images_per_s",),
    "input_wait": ("input_wait_fraction",),
    "lr": ("lr",),
}
"""Training-curve pictures: file stem → metrics drawn (each with its ``val_`` twin when logged)."""


def train_params(cfg: Config, effective_lr: float, steps_per_epoch: int, validation_steps: int) -> dict[str, str]:
    """The flattened ``train`` section plus derived values, as MLflow parameters."""
    params: dict[str, str] = {}
    for key, value in cfg.to_dict()["train"].items():
        params[f"train.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    params.update({"workers": str(cfg.train.workers), "effective_lr": repr(effective_lr),
                   "steps_per_epoch": str(steps_per_epoch), "validation_steps": str(validation_steps),
                   "config_digest": cfg.digest(), "env": cfg.env})  # fmt: skip
    return params


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """The dataset's content checksum: ``manifest['checksum']``, else a hash of the manifest."""
    if manifest.get("checksum"):
        return str(manifest["checksum"])
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()


def git_commit(path: str | Path) -> str | None:
    """The commit checked out at ``path`` (with ``-dirty`` when changed), or None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def log_inputs(tracking: Tracking, run_id: str, cfg: Config, manifest: dict[str, Any], data_dir: str,
               params: Mapping[str, str], workdir: Path, version: str | None = None) -> None:  # fmt: skip
    """Log parameters, tags, the dataset input, ``config.yaml`` and ``manifest.json`` of a new run.

    The dataset version read is logged as an MLflow dataset input (source: the version's URL,
    digest: the manifest checksum), which the MLflow UI shows in the run's Dataset column.

    Args:
        tracking: The tracking server.
        run_id: The run just created.
        cfg: The resolved configuration.
        manifest: The dataset manifest.
        data_dir: URL of the dataset version actually read (``OUT/v-<id>``).
        params: From ``train_params``.
        workdir: A scratch folder for the files to upload.
        version: The version's name (``v-<id>``), None for an unversioned folder.
    """
    from sparkvision.config import PROJECT_ROOT

    checksum = manifest_checksum(manifest)
    tags = {"sparkvision.task": cfg.train.model, "dataset.path": str(data_dir), "dataset.checksum": checksum,
            "sparkvision.env": cfg.env}  # fmt: skip
    if version:
        tags["dataset.version"] = version
    commit = git_commit(PROJECT_ROOT)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    tracking.log_params(run_id, {**params, "dataset.path": str(data_dir), "dataset.checksum": checksum})
    tracking.set_tags(run_id, tags)
    name = f"{manifest.get('format', 'dataset')}@{version}" if version else str(manifest.get("format", "dataset"))
    tracking.log_input(run_id, source=str(data_dir), digest=checksum, name=name, context="training",
                       profile={k: manifest[k] for k in ("output_rows", "splits") if k in manifest})  # fmt: skip
    (workdir / "config.yaml").write_text(cfg.to_yaml())
    (workdir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    tracking.log_artifact(run_id, workdir / "config.yaml")
    tracking.log_artifact(run_id, workdir / "manifest.json", "dataset")


class EpochLogger:
    """Logs epoch metrics of one run from a Horovod rank over HTTP.

    Args:
        tracking_uri: URL of the MLflow server.
        run_id: The run created by the driver.
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from sparkvision.tracking import Tracking

        self.tracking = Tracking(tracking_uri)
        self.run_id = run_id
        self.keys: set[str] | None = None  # the keys in the run's EPOCH_METRICS_TAG, read at the first epoch

    def log(self, epoch: int, logs: Mapping[str, Any]) -> None:
        """Log every finite numeric entry of ``logs`` at ``step=epoch`` and refresh the run's heartbeat."""
        metrics = {}
        for key, value in logs.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                metrics[key] = number
        if metrics:
            self.tracking.log_metrics(self.run_id, metrics, step=int(epoch))
            self._tag_keys(metrics)
        from sparkvision.tracking import liveness

        liveness.beat(self.tracking, self.run_id, epoch)

    def _tag_keys(self, metrics: Mapping[str, float]) -> None:
        """Add new keys to the run's ``EPOCH_METRICS_TAG`` (a resumed run keeps the earlier ones)."""
        from sparkvision.tracking.client import EPOCH_METRICS_TAG

        if self.keys is None:
            tagged = self.tracking.run(self.run_id).data.tags.get(EPOCH_METRICS_TAG, "")
            self.keys = set(filter(None, tagged.split(",")))
        if not set(metrics) <= self.keys:
            self.keys |= set(metrics)
            self.tracking.set_tags(self.run_id, {EPOCH_METRICS_TAG: ",".join(sorted(self.keys))})


def plot_curves(history: Mapping[str, list[tuple[int, float]]], out_dir: Path) -> list[Path]:
    """Training-curve PNGs (loss terms, throughput, learning rate) from metric histories.

    Args:
        history: From ``Tracking.histories``.
        out_dir: Folder to write ``curve_<group>.png`` files into.

    Returns:
        The files written (groups with no logged metric are skipped).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    loss_terms = tuple(k for k in sorted(history) if k.endswith("loss") and not k.startswith(("val_", "test_")))
    groups = {**CURVE_GROUPS, "loss": loss_terms or CURVE_GROUPS["loss"]}
    written = []
    for stem, keys in groups.items():
        series = [k for key in keys for k in (key, f"val_{key}") if len(history.get(k, [])) > 0]
        series = list(dict.fromkeys(series))
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in series:
            steps, values = zip(*history[key], strict=True)
            ax.plot(steps, values, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(stem)
        if stem == "loss" and all(v > 0 for key in series for _, v in history[key]):
            ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"curve_{stem}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written
