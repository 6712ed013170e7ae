"""Keras callbacks run on every Horovod rank (rank-0-only ones say so).

Order matters: the inference-mode evaluation (BatchNorm recalibration, ``train_eval_*``,
``val_*``) runs first at each epoch end, then Horovod's ``MetricAverageCallback``, so every
later callback sees the metrics averaged over ranks, and all ranks then take the same
decisions (lower the rate, stop early, keep the best checkpoint). ``callback_list`` builds
the list in that order; the rank's ``Collective`` supplies the Horovod callbacks (none in a
world of one process).

TensorFlow is imported inside functions; the classes are built by ``make_classes`` on the
worker, so importing this module stays cheap on the driver.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import tensorflow as tf

    from sparkvision.config import TrainConfig
    from sparkvision.tracking import Tracking
    from sparkvision.training.checkpoints import CheckpointState, Store
    from sparkvision.training.collective import Collective


@dataclass
class PlateauState:
    """State of warm-up, reduce-on-plateau and early stopping, saved in each checkpoint."""

    scale: float = 1.0
    """Product of all plateau reductions so far."""
    best: float = math.inf
    plateau_wait: int = 0
    stop_wait: int = 0
    stopped_epoch: int = -1

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (``inf`` as None)."""
        return {"scale": self.scale, "best": None if math.isinf(self.best) else self.best,
                "plateau_wait": self.plateau_wait, "stop_wait": self.stop_wait,
                "stopped_epoch": self.stopped_epoch}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlateauState:
        """Inverse of ``to_dict``."""
        best = data.get("best")
        return cls(scale=float(data.get("scale", 1.0)), best=math.inf if best is None else float(best),
                   plateau_wait=int(data.get("plateau_wait", 0)), stop_wait=int(data.get("stop_wait", 0)),
                   stopped_epoch=int(data.get("stopped_epoch", -1)))  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    """The learning-rate policy: linear warm-up to ``target_lr``, then constant or cosine, and
    plateau reductions.

    ``target_lr`` is already scaled by the number of workers. During the first
    ``warmup_epochs`` the rate rises linearly per step from ``target_lr / warmup_steps`` to
    ``target_lr`` (so 1 worker warms up too). ``kind`` ``cosine`` then lowers it per step along a
    half cosine to 0 at the end of ``epochs`` (Loshchilov and Hutter, SGDR, without restarts):
    the late small steps settle what a constant rate keeps shaking, such as a regressed box
    edge under an L1 loss. ``patience`` 0 disables reduce-on-plateau, ``stop_patience`` 0
    disables early stopping.
    """

    target_lr: float
    warmup_epochs: int
    steps_per_epoch: int
    monitor: str
    patience: int = 0
    factor: float = 0.5
    stop_patience: int = 0
    min_delta: float = field(default=0.0)
    kind: Literal["constant", "cosine"] = "constant"
    epochs: int = 0
    """Epochs of the whole run (the cosine reaches 0 at their end); 0 with ``constant``."""

    @classmethod
    def from_config(cls, tcfg: TrainConfig, size: int, steps_per_epoch: int, monitor: str) -> Schedule:
        """The policy of the ``train`` section for ``size`` workers; ``target_lr`` is
        ``optim.scaled_learning_rate``, the rate the optimizer is made with."""
        from sparkvision.training.optim import scaled_learning_rate

        return cls(target_lr=scaled_learning_rate(tcfg, size), warmup_epochs=tcfg.warmup_epochs,
                   steps_per_epoch=steps_per_epoch, monitor=monitor, patience=tcfg.reduce_lr_patience,
                   factor=tcfg.reduce_lr_factor, stop_patience=tcfg.early_stopping_patience,
                   kind=tcfg.lr_schedule, epochs=tcfg.epochs)  # fmt: skip

    def lr(self, epoch: int, batch: int, scale: float) -> float:
        """The rate for ``batch`` of ``epoch`` given the plateau ``scale``."""
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        step = epoch * self.steps_per_epoch + batch
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        decay = 1.0
        if self.kind == "cosine" and step >= warmup_steps:
            total = max(1, self.epochs * self.steps_per_epoch - warmup_steps)
            decay = 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / total)))
        return self.target_lr * warm * decay * scale

    def update(self, state: PlateauState, epoch: int, value: float | None) -> PlateauState:
        """The state after an epoch whose monitored value is ``value`` (None: not reported)."""
        if value is None or math.isnan(value):
            return state
        s = PlateauState(**vars(state))
        if value < s.best - self.min_delta:
            s.best, s.plateau_wait, s.stop_wait = value, 0, 0
            return s
        s.plateau_wait += 1
        s.stop_wait += 1
        if self.patience and s.plateau_wait >= self.patience:
            s.scale *= self.factor
            s.plateau_wait = 0
        if self.stop_patience and s.stop_wait >= self.stop_patience:
            s.stopped_epoch = epoch
        return s


def make_classes() -> dict[str, type]:
    """The callback classes (built here so TensorFlow is imported only on the worker)."""
    import tensorflow as tf

    class LearningRateController(tf.keras.callbacks.Callback):
        """Sets the optimizer's rate per step (warm-up) and per epoch (plateau); stops early.

        Adds ``lr`` (the rate in effect at the end of the epoch) to the epoch logs.
        """

        def __init__(self, schedule: Schedule, state: PlateauState) -> None:
            super().__init__()
            self.schedule = schedule
            self.state = state
            self._epoch = 0

        def _set(self, value: float) -> None:
            self.model.optimizer.learning_rate.assign(value)

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._epoch = epoch
            self._set(self.schedule.lr(epoch, 0, self.state.scale))

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if rate_changes_per_step(self.schedule, self._epoch):
                self._set(self.schedule.lr(self._epoch, batch, self.state.scale))

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs if logs is not None else {}
            logs["lr"] = float(self.model.optimizer.learning_rate.numpy())
            value = logs.get(self.schedule.monitor)
            self.state = self.schedule.update(self.state, epoch, None if value is None else float(value))
            if self.state.stopped_epoch == epoch:
                self.model.stop_training = True

    class EpochTimer(tf.keras.callbacks.Callback):
        """Adds to the epoch logs ``epoch_time_s`` (whole epoch, with validation), ``images_per_s``
        (training images of all ranks per second of training), ``images_per_s_per_rank`` (this
        rank's) and, with a ``clock`` (``data.InputClock``), ``input_wait_fraction``: the share of
        this rank's training-step time spent waiting for its input pipeline (near 0: the model is
        the bottleneck; near 1: decoding or reading starves it)."""

        def __init__(self, images_per_epoch: int, size: int = 1, clock: Any | None = None) -> None:
            super().__init__()
            self.images_per_epoch = images_per_epoch
            self.size = max(1, size)
            self.clock = clock
            self._start = 0.0
            self._train_end: float | None = None
            self._batch_start = 0.0
            self._step_s = 0.0
            self._wait_s = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._start = time.perf_counter()
            self._train_end = None
            self._step_s = self._wait_s = 0.0

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self._batch_start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self._train_end = time.perf_counter()  # evaluation after the last batch is not training
            self._step_s += self._train_end - self._batch_start
            if self.clock is not None and self.clock.last >= self._batch_start:
                self._wait_s += self.clock.last - self._batch_start

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs if logs is not None else {}
            end = time.perf_counter()
            train_time = max((self._train_end or end) - self._start, 1e-9)
            logs["epoch_time_s"] = end - self._start
            logs["images_per_s"] = self.images_per_epoch / train_time
            logs["images_per_s_per_rank"] = self.images_per_epoch / self.size / train_time
            if self.clock is not None:
                logs["input_wait_fraction"] = self._wait_s / self._step_s if self._step_s > 0 else 0.0

    class InferenceModeEvaluation(tf.keras.callbacks.Callback):
        """Every rank, first at the end of each epoch: recompute BatchNorm statistics over a
        fixed sample of training rows (inference preprocessing, averaged over ranks), then
        evaluate that sample and the validation batches in inference mode.

        Adds ``train_eval_<metric>`` (the training sample, inference mode: compare with the
        training-mode ``<metric>``) and ``val_<metric>`` to the epoch logs, so everything
        later callbacks compare (plateau, early stopping, best checkpoint) is what scoring sees.
        """

        def __init__(self, evaluation: Evaluation) -> None:
            super().__init__()
            self.evaluation = evaluation

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            from sparkvision.models.layers import recalibrate_batchnorm

            logs = logs if logs is not None else {}
            e = self.evaluation
            start = time.perf_counter()
            if e.calibration_batches > 0:
                recalibrate_batchnorm(self.model, e.calibration, max_batches=e.calibration_batches,
                                      allreduce=e.allreduce)  # fmt: skip
            sample = self.model.evaluate(e.calibration, steps=max(1, e.calibration_batches), verbose=0,
                                         return_dict=True)  # fmt: skip
            logs.update({f"train_eval_{k}": float(v) for k, v in sample.items()})
            if e.validation is not None:
                val = self.model.evaluate(e.validation, steps=e.validation_steps, verbose=0, return_dict=True)
                logs.update({f"val_{k}": float(v) for k, v in val.items()})
            logs["eval_time_s"] = time.perf_counter() - start

    class CheckpointWriter(tf.keras.callbacks.Callback):
        """Rank 0 only: writes weights + optimizer and ``state.json`` to the store every epoch,
        and marks the checkpoint best (``best.json``) when ``monitor`` is lower than ever in the run."""

        def __init__(self, store: Store, checkpoint: tf.train.Checkpoint, make_state: Callable[[int, dict], CheckpointState], monitor: str, best: float = math.inf) -> None:  # fmt: skip
            super().__init__()
            self.store = store
            self.checkpoint = checkpoint
            self.make_state = make_state
            self.monitor = monitor
            self.best = best
            self.last: CheckpointState | None = None

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = dict(logs or {})
            value = logs.get(self.monitor)
            improved = value is not None and math.isfinite(float(value)) and float(value) < self.best
            if improved:
                self.best = float(value)
            self.last = self.store.save(self.checkpoint, self.make_state(epoch, logs), best=improved)

    class EpochPrinter(tf.keras.callbacks.Callback):
        """Rank 0 only: one line per epoch with the metrics a user compares."""

        def __init__(self, epochs: int) -> None:
            super().__init__()
            self.epochs = epochs

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            print(epoch_line(epoch, self.epochs, dict(logs or {})), flush=True)

    class MlflowEpochLogger(tf.keras.callbacks.Callback):
        """Rank 0 only: logs every numeric epoch metric to the run over HTTP, ``step=epoch``."""

        def __init__(self, tracking_uri: str, run_id: str) -> None:
            super().__init__()
            from sparkvision.training.tracking_log import EpochLogger

            self.logger = EpochLogger(tracking_uri, run_id)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.logger.log(epoch, dict(logs or {}))

    return {
        "LearningRateController": LearningRateController,
        "EpochTimer": EpochTimer,
        "InferenceModeEvaluation": InferenceModeEvaluation,
        "CheckpointWriter": CheckpointWriter,
        "EpochPrinter": EpochPrinter,
        "MlflowEpochLogger": MlflowEpochLogger,
    }


@dataclass(frozen=True)
class Evaluation:
    """What ``InferenceModeEvaluation`` reads: datasets of ``(x, y[, w])`` batches without
    augmentation, repeated identically every epoch."""

    calibration: Any
    """A fixed sample of this rank's training rows (BatchNorm statistics, ``train_eval_*``)."""
    calibration_batches: int
    """Batches of ``calibration`` used; 0 keeps Keras' moving averages (no recalibration)."""
    validation: Any | None
    validation_steps: int
    allreduce: Callable[[Any], Any] | None = None
    """Averages a tensor over ranks (``Collective.average``); None in one process."""


EPOCH_LINE_KEYS = ("loss", "train_eval_loss", "val_loss", "accuracy", "train_eval_accuracy", "val_accuracy",
                   "r_loss", "kl_loss", "val_r_loss", "val_kl_loss", "nca_loss", "lr")  # fmt: skip


def epoch_line(epoch: int, epochs: int, logs: dict[str, Any]) -> str:
    """``epoch 3/10: loss 0.1234 val_loss 0.2345 ... (12.3 s, 2.1 s evaluating, 250 img/s, input wait 4%)``."""
    parts = [f"{k} {float(logs[k]):.4g}" for k in EPOCH_LINE_KEYS if k in logs]
    timing = ""
    if "epoch_time_s" in logs:
        wait = f", input wait {float(logs['input_wait_fraction']):.0%}" if "input_wait_fraction" in logs else ""
        evaluation = f", {float(logs['eval_time_s']):.1f} s evaluating" if "eval_time_s" in logs else ""
        timing = (f" ({float(logs['epoch_time_s']):.1f} s{evaluation}, {float(logs.get('images_per_s', 0.0)):.0f} "
                  f"img/s{wait})")  # fmt: skip
    return f"epoch {epoch + 1}/{epochs}: " + " ".join(parts) + timing


def rate_changes_per_step(schedule: Schedule, epoch: int) -> bool:
    """Whether the rate changes per step in ``epoch`` (the warm-up, and every epoch of a cosine)."""
    return epoch < schedule.warmup_epochs or schedule.kind == "cosine"


def callback_list(
    *,
    collective: Collective,
    schedule: Schedule,
    state: PlateauState,
    images_per_epoch: int,
    store: Store,
    checkpoint: tf.train.Checkpoint,
    make_state: Callable[[int, dict], CheckpointState],
    tracking_uri: str,
    run_id: str,
    evaluation: Evaluation,
    epochs: int,
    best: float = math.inf,
    clock: Any | None = None,
) -> tuple[list[tf.keras.callbacks.Callback], Any]:
    """All callbacks of a rank, in the order they must run, and the learning-rate controller.

    Args:
        collective: The rank's world: its start and metric-averaging callbacks; checkpoints
            and MLflow logging happen on rank 0 only.
        schedule: Learning-rate policy.
        state: Plateau/early-stopping state to start from (restored on resume).
        images_per_epoch: Training images of all ranks per epoch (for ``images_per_s``).
        store: Checkpoint store of the registered model.
        checkpoint: ``tf.train.Checkpoint`` over the model and optimizer.
        make_state: Builds the ``CheckpointState`` to record after an epoch.
        tracking_uri: MLflow server URL.
        run_id: The training run.
        evaluation: Datasets of the inference-mode evaluation that opens every epoch end.
        epochs: Epochs of the job (for the printed lines).
        best: Lowest monitored value of earlier epochs of the run (a resume continues it).
        clock: The training dataset's ``data.InputClock`` (``input_wait_fraction``), or None.

    Returns:
        The callbacks for ``fit`` and the ``LearningRateController`` among them (its
        ``state`` is what a checkpoint records).
    """
    classes = make_classes()
    controller = classes["LearningRateController"](schedule, state)
    callbacks: list[Any] = [
        *collective.start_callbacks(),
        classes["InferenceModeEvaluation"](evaluation),  # before averaging: its metrics are averaged too
        *collective.metric_callbacks(),
        classes["EpochTimer"](images_per_epoch, collective.size, clock),
        controller,
    ]
    if collective.rank == 0:
        callbacks.append(classes["CheckpointWriter"](store, checkpoint, make_state, schedule.monitor, best))
        if os.environ.get(EPOCH_LINES_ENV) != "driver":  # else EpochProgress prints them on the driver
            callbacks.append(classes["EpochPrinter"](epochs))
        callbacks.append(classes["MlflowEpochLogger"](tracking_uri, run_id))
    return callbacks, controller


EPOCH_LINES_ENV = "SPARKVISION_EPOCH_LINES"
"""``driver``: rank 0 does not print its epoch lines, ``EpochProgress`` prints them on the driver."""


class EpochProgress:
    """Prints each epoch's line on the driver as soon as rank 0 has logged the epoch to the run.

    Horovod on Spark hands a rank's output to the driver only when its pipe fills or the rank ends,
    so lines printed by rank 0 arrive together at the end; the run's metrics arrive live over HTTP.
    A context manager: a thread polls the run's ``epoch_time_s`` every ``interval`` seconds and prints
    ``callbacks.epoch_line`` for every epoch it has not printed; leaving prints the rest.

    Args:
        tracking: The run's server.
        run_id: The training run.
        epochs: Epochs of the job (``train.epochs``).
        interval: Seconds between polls.
    """

    def __init__(self, tracking: Tracking, run_id: str, epochs: int, interval: float = 2.0) -> None:
        self.tracking, self.run_id, self.epochs, self.interval = tracking, run_id, epochs, interval
        self._printed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="epoch-progress", daemon=True)

    def __enter__(self) -> EpochProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.poll()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """Print the epochs logged since the last poll; a server hiccup is logged, never raised."""
        try:
            client = self.tracking.client
            steps = sorted({int(m.step) for m in client.get_metric_history(self.run_id, "epoch_time_s")})
            new = [s for s in steps if s not in self._printed]
            if not new:
                return
            logs: dict[int, dict[str, float]] = {s: {} for s in new}
            for key in (*EPOCH_LINE_KEYS, "epoch_time_s", "eval_time_s", "images_per_s", "input_wait_fraction"):
                for m in client.get_metric_history(self.run_id, key):
                    if int(m.step) in logs:
                        logs[int(m.step)][key] = float(m.value)
        except Exception as exc:  # progress lines are a courtesy: training goes on
            log.debug("epoch progress of run %s: %s", self.run_id, exc)
            return
        for step in new:
            print(epoch_line(step, self.epochs, logs[step]), flush=True)
            self._printed.add(step)
