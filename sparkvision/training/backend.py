"""Where the training function runs, modelled on ``horovod.spark``'s ``Backend``.

``trainer.train`` hands ``worker.run_worker`` to a ``Backend``, which calls it once per rank
as ``fn(collective, *args)``. The function never knows who runs it: production uses
``SparkHorovodBackend`` (one Spark task per rank, Horovod over Gloo), tests and notebooks can
use ``InProcessBackend`` (the same function in the caller's process, a world of one rank,
no Spark job and no Horovod start-up).

What the ranks write reaches the console through ``RankOutput``: Horovod prefixes each line
with ``[<task>]<stdout>:``; rank 0's epoch lines come out as the in-process backend prints
them, and a rank's stderr (tracebacks, and library chatter with ``-v``) as ``worker <task>: ...``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from sparkvision.spark import worker_python

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

T = TypeVar("T")


class Backend(Protocol):
    """Runs a training function on ``num_proc`` ranks."""

    max_proc: int | None
    """The most ranks it can run (None: as many as the cluster has); checked before a run starts."""

    def run(
        self, fn: Callable[..., T], args: tuple[Any, ...], num_proc: int, env: Mapping[str, str] | None = None
    ) -> list[T]:
        """Call ``fn(collective, *args)`` on every rank and return the results in rank order.

        Args:
            fn: The training function; its first argument is the rank's
                ``collective.Collective``. Must be picklable for backends that ship it.
            args: The rest of its arguments (picklable likewise).
            num_proc: Number of ranks.
            env: Environment variables of the ranks (None: this process's environment).

        Returns:
            One result per rank, rank 0 first.
        """
        ...


_HOROVOD_PREFIX = re.compile(r"\[(\d+)\]<(stdout|stderr)>:")


class RankOutput(io.TextIOBase):
    """The stream ``horovod.spark.run`` forwards rank output to, writing it the way our output reads.

    Horovod prefixes every line a rank writes with ``[<task>]<stdout>:`` or ``[<task>]<stderr>:``
    (``<task>``: the rank's Spark task index, not necessarily its Horovod rank) and copies it to
    the driver in chunks that may end mid-line, one thread per rank. This stream keeps each
    thread's partial line until it ends, then writes stdout lines without the prefix (rank 0's
    ``epoch 3/10: ...`` lines, as ``InProcessBackend`` prints them) and stderr lines as
    ``worker <task>: ...``, so two ranks' tracebacks stay apart. Lines without the prefix pass as
    they are. The target is looked up at every write (pytest and notebooks swap ``sys.stdout``).

    Args:
        target: Returns the stream to write to (``lambda: sys.stdout``).
    """

    def __init__(self, target: Callable[[], IO[str]]) -> None:
        super().__init__()
        self._target = target
        self._pending: dict[int, str] = {}
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        key = threading.get_ident()
        with self._lock:
            lines = (self._pending.pop(key, "") + text).splitlines(keepends=True)
            if lines and not lines[-1].endswith(("\n", "\r")):
                self._pending[key] = lines.pop()
            self._emit(lines)
        return len(text)

    def flush(self) -> None:
        """Write every partial line kept so far (a rank's last line without a newline), then flush."""
        with self._lock:
            pending = [line + "\n" for line in self._pending.values()]
            self._pending.clear()
            self._emit(pending)

    def _emit(self, lines: list[str]) -> None:
        if not lines:
            return
        target = self._target()
        target.write("".join(self.readable_line(line) for line in lines))
        target.flush()

    @staticmethod
    def readable_line(line: str) -> str:
        """``[0]<stdout>:epoch 1/2: ...`` → ``epoch 1/2: ...``; ``[1]<stderr>:Traceback`` → ``worker 1: Traceback``."""
        m = _HOROVOD_PREFIX.match(line)
        if m is None:
            return line
        return line[m.end() :] if m.group(2) == "stdout" else f"worker {m.group(1)}: {line[m.end() :]}"


class SparkHorovodBackend:
    """``horovod.spark.run`` on the session's executors with Gloo, one Spark task per rank.

    Args:
        spark: The active session.
        verbose: Horovod's verbosity; None: 2 when this module logs at DEBUG, else 0.
        stdout: Where rank output goes (None: ``sys.stdout`` at run time), through ``RankOutput``.
        stderr: Likewise (None: ``sys.stderr`` at run time).
    """

    max_proc: int | None = None

    def __init__(
        self, spark: SparkSession, verbose: int | None = None, stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> None:  # fmt: skip
        self.spark = spark
        self.verbose = verbose
        self.stdout = stdout
        self.stderr = stderr

    def run(
        self, fn: Callable[..., T], args: tuple[Any, ...], num_proc: int, env: Mapping[str, str] | None = None
    ) -> list[T]:
        import horovod.spark

        verbose = self.verbose if self.verbose is not None else (2 if log.isEnabledFor(logging.DEBUG) else 0)
        stdout = RankOutput(lambda: self.stdout or sys.stdout)
        stderr = RankOutput(lambda: self.stderr or sys.stderr)
        try:
            return horovod.spark.run(_horovod_rank, args=(fn, args), num_proc=num_proc, use_gloo=True,
                                     env=dict(env) if env is not None else None, stdout=stdout, stderr=stderr,
                                     executable=worker_python(self.spark),  # not the driver's: the archive's
                                     verbose=verbose)  # fmt: skip
        finally:
            stdout.flush()
            stderr.flush()


def _horovod_rank(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """Runs on an executor: start Horovod, then the training function with its collective."""
    from sparkvision.training.collective import HorovodCollective

    return fn(HorovodCollective.start(), *args)


class InProcessBackend:
    """The training function in the caller's process as a world of one rank.

    Thread pools and the TensorFlow log level stay the caller's (``LocalCollective.owns_process``
    is False); ``env`` is applied for the duration of the call and restored afterwards.
    """

    max_proc: int | None = 1

    def run(
        self, fn: Callable[..., T], args: tuple[Any, ...], num_proc: int, env: Mapping[str, str] | None = None
    ) -> list[T]:
        """See ``Backend.run``.

        Raises:
            ValueError: When ``num_proc`` is not 1.
        """
        from sparkvision.training.collective import LocalCollective

        if num_proc != 1:
            raise ValueError(f"the in-process backend runs exactly 1 worker, {num_proc} were requested "
                             "(train.workers); set train.workers=1 or use SparkHorovodBackend")  # fmt: skip
        with _environment(env or {}):
            return [fn(LocalCollective(), *args)]


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    changed = {k: os.environ.get(k) for k, v in env.items() if os.environ.get(k) != v}
    os.environ.update({k: env[k] for k in changed})
    try:
        yield
    finally:
        for key, old in changed.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
