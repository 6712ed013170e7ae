"""The function each training rank runs: build, compile, restore, fit, checkpoint.

A ``backend.Backend`` calls ``run_worker(collective, job)`` once per rank: inside a Spark task
with Horovod (``SparkHorovodBackend``, which pickles it to the executors) or in the caller's
process as a world of one (``InProcessBackend``). The rank talks to the others only through
its ``collective.Collective``; everything heavy is imported inside the functions.
"""

from __future__ import annotations

import math
import os
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkvision import tempdirs
from sparkvision.config import TrainConfig
from sparkvision.training.data import SplitInfo

if TYPE_CHECKING:
    import tensorflow as tf

    from sparkvision.models import Task
    from sparkvision.training.callbacks import PlateauState
    from sparkvision.training.checkpoints import Store
    from sparkvision.training.collective import Collective


@dataclass(frozen=True)
class WorkerJob:
    """Everything a rank needs, and nothing else (picklable; built by the driver)."""

    tcfg: TrainConfig
    """The ``train`` section: the only configuration a rank reads."""
    meta: dict[str, Any]
    train: SplitInfo
    val: SplitInfo | None
    steps_per_epoch: int
    validation_steps: int
    store_root: str
    run_id: str
    tracking_uri: str
    resume: bool
    """Restore the store's latest checkpoint (weights, optimizer, epoch, schedule state)."""


def run_worker(collective: Collective, job: WorkerJob) -> dict[str, Any]:
    """Train on this rank's shards; rank 0 checkpoints every epoch and logs to MLflow.

    Args:
        collective: This rank's world (Horovod, or a world of one in the caller's process).
        job: The job description from the driver.

    Returns:
        On rank 0: ``{"rank", "checkpoint", "epoch", "best_checkpoint", "best_epoch", "history",
        "initial_epoch", "stopped_early", "devices"}`` with the store paths of the last and the
        best checkpoint (lowest monitored value); on other ranks ``{"rank", "history", "devices"}``.
        ``devices``: the rank's GPUs (``devices.configure_tensorflow``) and Keras dtype ``policy``.
    """
    import tensorflow as tf

    from sparkvision import devices
    from sparkvision.models import get_task
    from sparkvision.training.checkpoints import Store

    tcfg = job.tcfg
    used = configure_process(collective, tcfg)
    task = get_task(tcfg.model)
    with devices.precision(tcfg.mixed_precision) as policy:
        tf.keras.utils.set_random_seed(tcfg.seed)  # identical initial weights on every rank
        model = compiled_model(task, tcfg, job.meta, collective)
        store = Store(job.store_root)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        initial_epoch, plateau = _restore(job, store, model, checkpoint, collective.rank)
        history: dict[str, list[float]] = {}
        if initial_epoch < tcfg.epochs:
            history, plateau = _fit(collective, job, task, model, store, checkpoint, initial_epoch, plateau)
    result: dict[str, Any] = {"rank": collective.rank, "history": history, "devices": {**used, "policy": policy}}
    if collective.rank == 0:
        last = store.latest()
        best = store.best(job.run_id) or last
        result.update({"checkpoint": last.checkpoint if last else None, "epoch": last.epoch if last else -1,
                       "best_checkpoint": best.checkpoint if best else None,
                       "best_epoch": best.epoch if best else -1,
                       "initial_epoch": initial_epoch, "stopped_early": plateau.stopped_epoch >= 0})  # fmt: skip
    return result


def compiled_model(task: Task, tcfg: TrainConfig, meta: dict[str, Any], collective: Collective) -> tf.keras.Model:
    """The task's network compiled with ``optim.make_optimizer`` for ``collective.size`` ranks.

    Keras' default ``train_step`` averages gradients through the wrapped optimizer; a model
    with its own ``train_step`` and a ``tape_wrapper`` attribute (the VAE) gets the
    collective's tape wrapper, since it applies gradients itself.
    """
    from sparkvision.training.optim import make_optimizer

    optimizer = make_optimizer(tcfg, collective.size, collective.optimizer_wrapper())
    return task.build(tcfg, meta).compile(optimizer, tape_wrapper=collective.tape_wrapper())


def configure_process(collective: Collective, tcfg: TrainConfig) -> dict[str, Any]:
    """TensorFlow's log level, thread pools and GPUs (``devices.configure_tensorflow``: the ones
    Spark assigned to the rank's task, with memory growth), in a process of the rank's own only:
    they cannot change once the TensorFlow runtime of a caller's process is initialised.

    Returns:
        What ``devices.configure_tensorflow`` chose (``{}`` in a caller's process).
    """
    if not collective.owns_process:
        return {}
    import tensorflow as tf

    from sparkvision import devices

    tf.get_logger().setLevel(os.environ.get("SPARKVISION_WORKER_TF_LOG", "ERROR"))
    threads = max(1, (os.cpu_count() or 1) // max(1, collective.local_size))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return devices.configure_tensorflow(collective.gpus, tcfg.gpus_per_worker, collective.local_rank)


def _restore(job: WorkerJob, store: Store, model: Any, checkpoint: Any, rank: int) -> tuple[int, PlateauState]:
    """The first epoch to run and the schedule state: 0 and a fresh state, or on resume the
    epoch after the store's latest checkpoint, whose weights and optimizer are read back."""
    from sparkvision.training.callbacks import PlateauState

    if not job.resume:
        return 0, PlateauState()
    state = store.latest()
    if state is None:
        raise FileNotFoundError(f"resume requested but {store.url('state.json')} does not exist")
    model.optimizer.build(model.trainable_variables)
    with tempdirs.temporary_directory(f"sv-restore-{rank}-") as tmp:
        store.restore(checkpoint, state, tmp)
    return state.epoch + 1, PlateauState.from_dict(state.callbacks.get("plateau", {}))


def _fit(
    collective: Collective, job: WorkerJob, task: Task, model: Any, store: Store, checkpoint: Any,
    initial_epoch: int, plateau: PlateauState,
) -> tuple[dict[str, list[float]], PlateauState]:  # fmt: skip
    """``model.fit`` from ``initial_epoch`` with the rank's shards and callbacks; the history
    and the schedule state at the end."""
    import numpy as np
    import tensorflow as tf

    from sparkvision.training import callbacks as cb
    from sparkvision.training import data
    from sparkvision.training.checkpoints import CheckpointState

    tcfg, rank, size = job.tcfg, collective.rank, collective.size
    # Different augmentation and shuffling per rank and per resumed segment, repeatable per seed.
    stream_seed = tcfg.seed + 1000 * rank + 7919 * initial_epoch
    tf.keras.utils.set_random_seed(stream_seed)
    monitor = "val_loss" if job.val is not None else "train_eval_loss"  # inference mode either way
    schedule = cb.Schedule.from_config(tcfg, size, job.steps_per_epoch, monitor)
    best_before = store.best(job.run_id) if job.resume else None
    best_value = best_before.metrics.get(monitor, math.inf) if best_before else math.inf

    def make_state(epoch: int, logs: dict[str, Any]) -> CheckpointState:
        metrics = {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}
        return CheckpointState(epoch=epoch, run_id=job.run_id, checkpoint="", meta=job.meta,
                               lr=float(logs.get("lr", schedule.target_lr)),
                               callbacks={"plateau": controller.state.to_dict()}, metrics=metrics)  # fmt: skip

    with ExitStack() as stack:
        clock = data.InputClock()
        train_ds, evaluation = _datasets(stack, collective, job, task, stream_seed, clock)
        callbacks, controller = cb.callback_list(collective=collective, schedule=schedule, state=plateau,
                                                 images_per_epoch=job.steps_per_epoch * tcfg.batch_size * size,
                                                 store=store, checkpoint=checkpoint, make_state=make_state,
                                                 tracking_uri=job.tracking_uri, run_id=job.run_id,
                                                 evaluation=evaluation, epochs=tcfg.epochs, best=best_value,
                                                 clock=clock)  # fmt: skip
        fit = model.fit(train_ds, epochs=tcfg.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=job.steps_per_epoch, callbacks=callbacks, verbose=0)  # fmt: skip
    return {k: [float(v) for v in vs] for k, vs in fit.history.items()}, controller.state


def _datasets(
    stack: ExitStack, collective: Collective, job: WorkerJob, task: Task, stream_seed: int, clock: Any = None
) -> tuple[Any, Any]:
    """The rank's training dataset and its per-epoch inference-mode ``Evaluation``; the
    petastorm readers close with ``stack``."""
    import functools

    from sparkvision.training import callbacks as cb
    from sparkvision.training import data

    tcfg, rank, size = job.tcfg, collective.rank, collective.size
    columns = list(dict.fromkeys([*task.columns, "id"]))  # the id seeds each row's augmentation
    train_rows = stack.enter_context(data.rows(job.train, columns, rank=rank, size=size, seed=stream_seed))
    train_ds = data.training_dataset(train_rows, task, job.meta, tcfg, seed=stream_seed, clock=clock)
    # A fixed sample of this rank's training rows, without augmentation: BatchNorm
    # statistics are recomputed on it and it is scored in inference mode every epoch.
    calib_rows = stack.enter_context(data.rows(job.train, task.columns, rank=rank, size=size, seed=tcfg.seed))
    calibration = max(1, tcfg.bn_calibration_batches)
    calib_ds = data.validation_dataset(calib_rows, task, job.meta, tcfg, calibration)
    val_ds = None
    if job.val is not None:
        val_rows = stack.enter_context(data.rows(job.val, task.columns, rank=rank, size=size, seed=tcfg.seed))
        val_ds = data.validation_dataset(val_rows, task, job.meta, tcfg, job.validation_steps)
    average = functools.partial(collective.average, name="bn_recalibration")
    evaluation = cb.Evaluation(calibration=calib_ds, calibration_batches=tcfg.bn_calibration_batches,
                               validation=val_ds, validation_steps=job.validation_steps,
                               allreduce=average if size > 1 else None)  # fmt: skip
    return train_ds, evaluation
