"""The function each Horovod rank runs inside a Spark task: build, restore, fit, checkpoint.

``run_worker`` is pickled to the executors by ``horovod.spark.run``; everything heavy is
imported inside it.
"""

from __future__ import annotations

import math
import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from sparkvision.config import Config
from sparkvision.training.data import SplitInfo


@dataclass(frozen=True)
class WorkerJob:
    """Everything a rank needs (picklable; built by the driver)."""

    cfg: Config
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


def run_worker(job: WorkerJob) -> dict[str, Any]:
    """Train on this rank's shards; rank 0 checkpoints every epoch and logs to MLflow.

    Args:
        job: The job description from the driver.

    Returns:
        On rank 0: ``{"rank", "checkpoint", "epoch", "best_checkpoint", "best_epoch", "history",
        "initial_epoch", "stopped_early"}`` with the store paths of the last and the best
        checkpoint (lowest monitored value); on other ranks ``{"rank", "history"}``.
    """
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import numpy as np
    import tensorflow as tf

    from sparkvision.models import get_task
    from sparkvision.training import callbacks as cb
    from sparkvision.training import data
    from sparkvision.training.checkpoints import CheckpointState, Store

    tf.get_logger().setLevel(os.environ.get("SPARKVISION_WORKER_TF_LOG", "ERROR"))
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    threads = max(1, (os.cpu_count() or 1) // max(1, hvd.local_size()))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)

    tcfg = job.cfg.train
    task = get_task(tcfg.model)
    tf.keras.utils.set_random_seed(tcfg.seed)  # identical initial weights on every rank
    model = task.build(tcfg, job.meta)
    target_lr = tcfg.learning_rate * size
    optimizer = hvd.DistributedOptimizer(tf.keras.optimizers.Adam(learning_rate=target_lr))
    distribute(model, optimizer, hvd_tf.DistributedGradientTape)

    store = Store(job.store_root)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    initial_epoch, plateau = 0, cb.PlateauState()
    if job.resume:
        state = store.latest()
        if state is None:
            raise FileNotFoundError(f"resume requested but {store.url('state.json')} does not exist")
        optimizer.build(model.trainable_variables)
        with tempfile.TemporaryDirectory(prefix=f"sv-restore-{rank}-") as tmp:
            store.restore(checkpoint, state, tmp)
        initial_epoch = state.epoch + 1
        plateau = cb.PlateauState.from_dict(state.callbacks.get("plateau", {}))
    # Different augmentation and shuffling per rank and per resumed segment, repeatable per seed.
    stream_seed = tcfg.seed + 1000 * rank + 7919 * initial_epoch
    tf.keras.utils.set_random_seed(stream_seed)

    monitor = "val_loss" if job.val is not None else "train_eval_loss"  # inference mode either way
    schedule = cb.Schedule(target_lr=target_lr, warmup_epochs=tcfg.warmup_epochs,
                           steps_per_epoch=job.steps_per_epoch, monitor=monitor,
                           patience=tcfg.reduce_lr_patience, factor=tcfg.reduce_lr_factor,
                           stop_patience=tcfg.early_stopping_patience)  # fmt: skip

    def make_state(epoch: int, logs: dict[str, Any]) -> CheckpointState:
        metrics = {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}
        return CheckpointState(epoch=epoch, run_id=job.run_id, checkpoint="", meta=job.meta,
                               lr=float(logs.get("lr", target_lr)),
                               callbacks={"plateau": lr_controller.state.to_dict()}, metrics=metrics)  # fmt: skip

    best_before = store.best(job.run_id) if job.resume else None
    best_value = best_before.metrics.get(monitor, math.inf) if best_before else math.inf

    def average(tensor: Any) -> Any:
        return hvd_tf.allreduce(tensor, op=hvd_tf.Average, name="bn_recalibration")

    history: dict[str, list[float]] = {}
    if initial_epoch < tcfg.epochs:
        with ExitStack() as stack:
            train_rows = stack.enter_context(data.rows(job.train, task.columns, rank=rank, size=size, seed=stream_seed))
            train_ds = data.training_dataset(train_rows, task, job.meta, tcfg, seed=stream_seed)
            # A fixed sample of this rank's training rows, without augmentation: BatchNorm
            # statistics are recomputed on it and it is scored in inference mode every epoch.
            calib_rows = stack.enter_context(data.rows(job.train, task.columns, rank=rank, size=size, seed=tcfg.seed))
            calibration = max(1, tcfg.bn_calibration_batches)
            calib_ds = data.validation_dataset(calib_rows, task, job.meta, tcfg, calibration)
            val_ds = None
            if job.val is not None:
                val_rows = stack.enter_context(data.rows(job.val, task.columns, rank=rank, size=size, seed=tcfg.seed))
                val_ds = data.validation_dataset(val_rows, task, job.meta, tcfg, job.validation_steps)
            evaluation = cb.Evaluation(calibration=calib_ds, calibration_batches=tcfg.bn_calibration_batches,
                                       validation=val_ds, validation_steps=job.validation_steps,
                                       allreduce=average if size > 1 else None)  # fmt: skip
            callbacks, lr_controller = cb.callback_list(rank=rank, schedule=schedule, state=plateau,
                                         images_per_epoch=job.steps_per_epoch * tcfg.batch_size * size,
                                         store=store, checkpoint=checkpoint, make_state=make_state,
                                         tracking_uri=job.tracking_uri, run_id=job.run_id,
                                         evaluation=evaluation, epochs=tcfg.epochs, best=best_value)  # fmt: skip
            fit = model.fit(train_ds, epochs=tcfg.epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=job.steps_per_epoch, callbacks=callbacks, verbose=0)  # fmt: skip
            history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    else:
        lr_controller = None
    result: dict[str, Any] = {"rank": rank, "history": history}
    if rank == 0:
        last = store.latest()
        best = store.best(job.run_id) or last
        stopped = (lr_controller.state if lr_controller else plateau).stopped_epoch >= 0
        result.update({"checkpoint": last.checkpoint if last else None, "epoch": last.epoch if last else -1,
                       "best_checkpoint": best.checkpoint if best else None,
                       "best_epoch": best.epoch if best else -1,
                       "initial_epoch": initial_epoch, "stopped_early": stopped})  # fmt: skip
    return result


def distribute(model: Any, optimizer: Any, tape_wrapper: Any) -> None:
    """Make ``model`` average gradients across ranks.

    The model is recompiled with its own loss and metrics but ``optimizer`` (a
    ``hvd.DistributedOptimizer``, which averages gradients in Keras' default ``train_step``).
    A model with its own ``train_step`` that exposes a ``tape_wrapper`` attribute (the VAE)
    gets ``hvd.DistributedGradientTape`` there, since it applies gradients itself.

    Args:
        model: A compiled Keras model from ``Task.build``.
        optimizer: The distributed optimizer.
        tape_wrapper: ``hvd.DistributedGradientTape``.

    Raises:
        ValueError: When the model was not compiled.
    """
    config = getattr(model, "_compile_config", None)
    if config is None:
        raise ValueError(f"model '{model.name}' from Task.build is not compiled; expected a compiled model")
    kwargs = dict(config.config)
    kwargs["optimizer"] = optimizer
    model.compile(**kwargs)
    if hasattr(model, "tape_wrapper"):
        model.tape_wrapper = tape_wrapper
