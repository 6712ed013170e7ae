"""What a training rank asks of its world: who it is and how to agree with the other ranks.

``run_worker`` talks to a ``Collective`` only, never to Horovod: ``HorovodCollective`` on
Horovod-on-Spark ranks (``backend.SparkHorovodBackend``), ``LocalCollective`` for a world of
one process (``backend.InProcessBackend``), which needs no Horovod initialisation at all.
Horovod and TensorFlow are imported only inside methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Collective(Protocol):
    """A rank's view of the training world."""

    rank: int
    size: int
    """Number of ranks."""
    local_size: int
    """Ranks on this machine (they share its cores)."""
    local_rank: int
    """This rank's index among those of its machine."""
    owns_process: bool
    """Whether the process is the rank's own, so it may set TensorFlow's thread pools and
    log level (False in a caller's process, where the TensorFlow runtime is already running)."""
    gpus: tuple[str, ...]
    """GPU addresses Spark assigned to the rank's task, already made the only ones CUDA sees
    (``devices.pin``); empty without Spark GPU scheduling."""

    def average(self, tensor: Any, name: str) -> Any:
        """``tensor`` averaged over all ranks (BatchNorm recalibration, metrics)."""
        ...

    def optimizer_wrapper(self) -> Callable[[Any], Any] | None:
        """Wraps a Keras optimizer so it averages gradients across ranks; None for one rank."""
        ...

    def tape_wrapper(self) -> Callable[[Any], Any] | None:
        """Wraps a ``tf.GradientTape`` of a custom ``train_step`` likewise; None for one rank."""
        ...

    def start_callbacks(self) -> list[Any]:
        """Keras callbacks that make every rank start from rank 0's variables."""
        ...

    def metric_callbacks(self) -> list[Any]:
        """Keras callbacks that average the epoch logs over ranks (placed after the evaluation)."""
        ...


@dataclass(frozen=True)
class HorovodCollective:
    """A Horovod rank (Gloo or MPI); build it with ``start`` inside the rank's process."""

    rank: int
    size: int
    local_size: int
    owns_process: bool = True
    gpus: tuple[str, ...] = ()
    local_rank: int = 0

    @classmethod
    def start(cls) -> HorovodCollective:
        """Pin the GPUs Spark assigned to this rank's task, then ``hvd.init()`` and this rank's place.

        The rank runs in a child process of its Spark task, where ``TaskContext.get()`` is None:
        the addresses come from Horovod's task service (``devices.horovod_task_gpus``), and are
        set in ``CUDA_VISIBLE_DEVICES`` before TensorFlow is imported.
        """
        from sparkvision import devices

        gpus = devices.horovod_task_gpus()
        devices.pin(gpus)
        import horovod.tensorflow.keras as hvd

        hvd.init()
        return cls(rank=hvd.rank(), size=hvd.size(), local_size=hvd.local_size(), gpus=gpus,
                   local_rank=hvd.local_rank())  # fmt: skip

    def average(self, tensor: Any, name: str) -> Any:
        import horovod.tensorflow as hvd_tf

        return hvd_tf.allreduce(tensor, op=hvd_tf.Average, name=name)

    def optimizer_wrapper(self) -> Callable[[Any], Any] | None:
        import horovod.tensorflow.keras as hvd

        return hvd.DistributedOptimizer

    def tape_wrapper(self) -> Callable[[Any], Any] | None:
        import horovod.tensorflow as hvd_tf

        return hvd_tf.DistributedGradientTape

    def start_callbacks(self) -> list[Any]:
        import horovod.tensorflow.keras as hvd

        return [hvd.callbacks.BroadcastGlobalVariablesCallback(0)]

    def metric_callbacks(self) -> list[Any]:
        import horovod.tensorflow.keras as hvd

        return [hvd.callbacks.MetricAverageCallback()]


@dataclass(frozen=True)
class LocalCollective:
    """A world of one rank in the caller's process: every collective operation is the identity."""

    rank: int = 0
    size: int = 1
    local_size: int = 1
    owns_process: bool = False
    gpus: tuple[str, ...] = ()
    local_rank: int = 0

    def average(self, tensor: Any, name: str) -> Any:
        return tensor

    def optimizer_wrapper(self) -> Callable[[Any], Any] | None:
        return None

    def tape_wrapper(self) -> Callable[[Any], Any] | None:
        return None

    def start_callbacks(self) -> list[Any]:
        return []

    def metric_callbacks(self) -> list[Any]:
        return []
