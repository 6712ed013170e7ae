"""Which GPU a training rank or a scoring worker uses, and in which precision it computes.

Spark schedules GPUs (``spark.task.resource.gpu.amount``, see ``sparkvision.spark.gpu_conf``)
and tells each task its addresses; this module hands them to TensorFlow:

* scoring (``scoring.udf.ScoreBatches`` in ``mapInPandas``): the Python worker *is* the task,
  so ``task_gpus()`` reads ``TaskContext.get().resources()["gpu"].addresses``;
* training: a Horovod-on-Spark rank runs in a child process of its Spark task (started by the
  task's Horovod task service), where ``TaskContext.get()`` is None; the task service reads the
  task's resources and the rank gets them from ``horovod.spark.task.get_available_devices()``
  (``horovod_task_gpus()``).

``pin(addresses)`` sets ``CUDA_VISIBLE_DEVICES`` (and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so CUDA
numbers GPUs as ``nvidia-smi`` and discovery scripts do); it must run before TensorFlow
initialises its devices. ``configure_tensorflow`` then turns on memory growth and, only when
Spark assigned nothing, falls back to the rank's local index (local mode, one machine).
Nothing heavy is imported at module level: Python workers import this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

PRECISIONS = (False, "mixed_float16")
"""Values of ``train.mixed_precision``: float32 everywhere, or Keras' ``mixed_float16`` policy."""


def task_gpus() -> tuple[str, ...]:
    """GPU addresses Spark assigned to the running task (empty outside a task or without GPUs)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return ()
    context = TaskContext.get()
    if context is None:
        return ()
    gpu = context.resources().get("gpu")
    return tuple(gpu.addresses) if gpu is not None else ()


def horovod_task_gpus() -> tuple[str, ...]:
    """GPU addresses Spark assigned to the task that hosts this Horovod-on-Spark rank.

    Empty when the rank was not started by ``horovod.spark.run`` or its task has no GPU.
    """
    try:
        from horovod.spark.task import get_available_devices
    except ImportError:
        return ()
    return tuple(str(a) for a in get_available_devices())


def pin(addresses: Sequence[str]) -> None:
    """Make exactly ``addresses`` visible to CUDA in this process (nothing when empty).

    Must run before TensorFlow initialises its devices (its first op or device query);
    later, CUDA has already read the variable and the call changes nothing.
    """
    if not addresses:
        return
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(addresses)


def configure_tensorflow(assigned: Sequence[str], wanted: int, local_rank: int = 0) -> dict[str, Any]:
    """TensorFlow's GPUs for a process whose Spark-assigned addresses were ``pin``-ned.

    * Spark assigned GPUs: they are the only visible ones (``pin``); all get memory growth.
    * None assigned and ``wanted`` > 0 (local mode, where Spark schedules no GPU): the GPU of
      index ``local_rank`` among those TensorFlow finds, with a warning; none found: CPU.
    * None assigned and ``wanted`` 0: GPUs are hidden, so a GPU build of TensorFlow does not
      take every GPU of the machine in every process.

    Args:
        assigned: The addresses Spark assigned to the task (``task_gpus``/``horovod_task_gpus``).
        wanted: GPUs asked for per worker (``train.gpus_per_worker`` / ``score.gpus_per_task``).
        local_rank: Index of this process among those of its machine.

    Returns:
        ``{"assigned", "cuda_visible_devices", "gpus"}``: the addresses, the variable as set and
        the names of the GPUs TensorFlow will use (empty on CPU).
    """
    import tensorflow as tf

    found = tf.config.list_physical_devices("GPU")
    if assigned:
        use = found
    elif wanted > 0 and found:
        use = [found[local_rank % len(found)]]
        log.warning("Spark assigned no GPU to this task (local mode?); using GPU %d of %d by local rank %d",
                    local_rank % len(found), len(found), local_rank)  # fmt: skip
    else:
        use = []
        if wanted > 0:
            log.warning("%d GPU(s) asked for per worker, but TensorFlow finds none: running on CPU", wanted)
    if found:
        try:
            for gpu in use:
                tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.set_visible_devices(use, "GPU")
        except RuntimeError as exc:  # the process's TensorFlow already initialised its devices
            log.warning("cannot choose TensorFlow's GPUs in this process any more (%s); keeping its devices", exc)
    return {"assigned": list(assigned), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpus": [g.name for g in use]}  # fmt: skip


@contextmanager
def precision(policy: bool | str) -> Iterator[str]:
    """Keras' global dtype policy for the duration of a block (``mixed_float16``, or float32 for
    False), restored afterwards; yields the policy's name.

    Set it before the model is built: layers take the policy at construction. The models keep
    their outputs (and so their losses) in float32 (``models.vae``, ``models.layers.VAE``).

    Raises:
        ValueError: On a value outside ``PRECISIONS``.
    """
    if policy not in PRECISIONS:
        raise ValueError(f"mixed precision: expected one of {list(PRECISIONS)}, found {policy!r}")
    import tensorflow as tf

    name = "mixed_float16" if policy else "float32"
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)
