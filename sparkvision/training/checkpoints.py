"""Training checkpoints in a ``Store``: a local folder or any fsspec URL (``s3://``, ``gs://``, ...).

Layout under the store root of one registered model::

    ROOT/state.json                          the latest checkpoint: epoch, run id, meta, lr, ...
    ROOT/best.json                           the run's best checkpoint so far (lowest monitored value)
    ROOT/runs/<run_id>/epoch-0003/ckpt.*     tf.train.Checkpoint of model weights + optimizer

``state.json`` is written after the checkpoint files, so it never points at a partial one.
A new training run writes under its own run id and leaves older runs' files alone.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkvision import tempdirs

if TYPE_CHECKING:
    import fsspec
    import tensorflow as tf

STATE_FILE = "state.json"
BEST_FILE = "best.json"
KEEP_LAST = 2
"""Checkpoints kept per run besides the best one (older epochs are deleted after a newer one is complete)."""


@dataclass(frozen=True)
class CheckpointState:
    """What ``state.json`` records about the latest checkpoint."""

    epoch: int
    """0-based index of the last completed epoch; a resumed run starts at ``epoch + 1``."""
    run_id: str
    checkpoint: str
    """Path of the checkpoint prefix relative to the store root, e.g. ``runs/R/epoch-0003/ckpt``."""
    meta: dict[str, Any]
    lr: float
    """Learning rate in effect at the end of the epoch."""
    callbacks: dict[str, Any] = field(default_factory=dict)
    """State of stateful callbacks (learning-rate controller) to continue after a resume."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The epoch's (averaged) metrics."""


class Store:
    """A folder for checkpoints behind one interface for local paths and fsspec URLs.

    Args:
        root: A local folder or an fsspec URL; created on first write.
    """

    def __init__(self, root: str | Path) -> None:
        import fsspec

        self.root = str(root).rstrip("/")
        fs, path = fsspec.core.url_to_fs(self.root)
        self.fs: fsspec.AbstractFileSystem = fs
        self._path = path

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def url(self, rel: str = "") -> str:
        """The full path or URL of ``rel`` under the root (as users and MLflow see it)."""
        return f"{self.root}/{rel}" if rel else self.root

    def _abs(self, rel: str) -> str:
        return posixpath.join(self._path, rel) if rel else self._path

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` exists under the root."""
        return bool(self.fs.exists(self._abs(rel)))

    def read_text(self, rel: str) -> str:
        """Text of the file ``rel``."""
        with self.fs.open(self._abs(rel), "r") as f:
            return str(f.read())

    def write_text(self, rel: str, text: str) -> None:
        """Write ``text`` to ``rel`` through a temporary name and a move, so readers see old or new."""
        target = self._abs(rel)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp"
        with self.fs.open(tmp, "w") as f:
            f.write(text)
        self.fs.mv(tmp, target)

    def upload(self, local_dir: str | Path, rel: str) -> None:
        """Copy every file of ``local_dir`` into the folder ``rel``."""
        target = self._abs(rel)
        self.fs.makedirs(target, exist_ok=True)
        for file in sorted(Path(local_dir).iterdir()):
            if file.is_file():
                self.fs.put_file(str(file), posixpath.join(target, file.name))

    def download(self, rel: str, local_dir: str | Path) -> Path:
        """Copy every file of the folder ``rel`` into ``local_dir``; returns ``local_dir``."""
        local = Path(local_dir)
        local.mkdir(parents=True, exist_ok=True)
        for entry in self.fs.ls(self._abs(rel), detail=False):
            name = posixpath.basename(str(entry).rstrip("/"))
            self.fs.get_file(str(entry), str(local / name))
        return local

    def remove(self, rel: str) -> None:
        """Delete the folder or file ``rel`` (no error when absent)."""
        if self.exists(rel):
            self.fs.rm(self._abs(rel), recursive=True)

    def listdir(self, rel: str) -> list[str]:
        """Names directly under the folder ``rel`` (empty when absent)."""
        if not self.exists(rel):
            return []
        return sorted(posixpath.basename(str(p).rstrip("/")) for p in self.fs.ls(self._abs(rel), detail=False))

    # ------------------------------------------------------------------ checkpoints

    def latest(self) -> CheckpointState | None:
        """The state of the latest complete checkpoint, or None when there is none."""
        if not self.exists(STATE_FILE):
            return None
        data = json.loads(self.read_text(STATE_FILE))
        return CheckpointState(**data)

    def best(self, run_id: str) -> CheckpointState | None:
        """The best checkpoint of run ``run_id`` (``best.json``), or None when the run marked none."""
        if not self.exists(BEST_FILE):
            return None
        state = CheckpointState(**json.loads(self.read_text(BEST_FILE)))
        return state if state.run_id == run_id else None

    def save(self, checkpoint: tf.train.Checkpoint, state: CheckpointState, best: bool = False) -> CheckpointState:
        """Write ``checkpoint`` for ``state.epoch``, then ``state.json`` (and ``best.json`` when
        ``best``); prune older epochs of the run except the best one.

        Args:
            checkpoint: A ``tf.train.Checkpoint`` holding the model (and optimizer).
            state: The facts to record; its ``checkpoint`` field is filled in here.
            best: This checkpoint is the run's best so far.

        Returns:
            The state as written.
        """
        run_dir = f"runs/{state.run_id}"
        folder = f"{run_dir}/epoch-{state.epoch:04d}"
        with tempdirs.temporary_directory("sv-ckpt-") as tmp:
            checkpoint.write(str(Path(tmp) / "ckpt"))
            self.remove(folder)
            self.upload(tmp, folder)
        written = CheckpointState(**{**asdict(state), "checkpoint": f"{folder}/ckpt"})
        text = json.dumps(asdict(written), indent=2, sort_keys=True)
        self.write_text(STATE_FILE, text)
        if best:
            self.write_text(BEST_FILE, text)
        kept = self.best(state.run_id)
        keep = posixpath.basename(posixpath.dirname(kept.checkpoint)) if kept else None
        epochs = [name for name in self.listdir(run_dir) if name.startswith("epoch-")]
        for old in epochs[:-KEEP_LAST]:
            if old != keep:
                self.remove(f"{run_dir}/{old}")
        return written

    def restore(self, checkpoint: tf.train.Checkpoint, state: CheckpointState, local_dir: str | Path) -> None:
        """Load the checkpoint of ``state`` into ``checkpoint`` (weights and, if tracked, optimizer).

        Args:
            checkpoint: A ``tf.train.Checkpoint`` over already-built model and optimizer variables.
            state: From ``latest()``.
            local_dir: A scratch folder the files are copied to.

        Raises:
            FileNotFoundError: when the checkpoint files named by ``state.json`` are missing.
        """
        folder = posixpath.dirname(state.checkpoint)
        if not self.exists(folder):
            raise FileNotFoundError(
                f"{self.url(STATE_FILE)} names checkpoint {state.checkpoint} (epoch {state.epoch}), "
                f"but {self.url(folder)} does not exist"
            )
        local = self.download(folder, local_dir)
        status = checkpoint.read(str(local / posixpath.basename(state.checkpoint)))
        status.assert_existing_objects_matched()
