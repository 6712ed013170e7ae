"""The one owner of the optimizer and its learning rate.

Tasks build uncompiled networks (``models.base.ModelSpec``); the worker compiles them with
``make_optimizer``, the trainer logs ``scaled_learning_rate`` as ``effective_lr`` and the
learning-rate schedule (``callbacks.Schedule.from_config``) warms up to the same value.
TensorFlow is imported only when an optimizer is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

    from sparkvision.config import TrainConfig


def scaled_learning_rate(tcfg: TrainConfig, size: int) -> float:
    """``train.learning_rate`` × ``size``: the rate for gradients averaged over ``size`` workers.

    Every worker sees its own batch, so one step averages ``size`` batches; the linear scaling
    rule keeps the distance travelled per image the same as on one worker.

    Args:
        tcfg: The ``train`` section (``learning_rate``).
        size: Number of workers (Horovod ranks) sharing each step.

    Raises:
        ValueError: When ``size`` is smaller than 1.
    """
    if size < 1:
        raise ValueError(f"expected at least 1 worker to scale the learning rate for, found {size}")
    return tcfg.learning_rate * size


def make_optimizer(
    tcfg: TrainConfig, size: int, distributed_wrapper: Callable[[Any], Any] | None = None
) -> tf.keras.optimizers.Optimizer:
    """Adam at ``scaled_learning_rate(tcfg, size)``, wrapped for ``size`` workers when asked.

    Args:
        tcfg: The ``train`` section.
        size: Number of workers sharing each step.
        distributed_wrapper: Wraps the optimizer so it averages gradients across workers
            (``hvd.DistributedOptimizer``); None in one process.

    Returns:
        A Keras optimizer whose ``learning_rate`` the schedule callbacks assign per step.
    """
    import tensorflow as tf

    optimizer = tf.keras.optimizers.Adam(learning_rate=scaled_learning_rate(tcfg, size))
    return distributed_wrapper(optimizer) if distributed_wrapper is not None else optimizer
