"""Console output of the CLI: the job's own progress by default, library chatter on request.

Three verbosities, chosen once per process by ``setup`` (``sparkvision.cli`` calls it):

* ``0`` (default): ``sparkvision`` loggers at INFO (steps, counts, where outputs went), every
  other Python logger at WARNING (this hides Horovod's rendezvous ``scope ... has keys`` lines
  and Py4J's retried ``Exception while sending command`` tracebacks, both logged on the root
  logger at INFO), MLflow and TensorFlow at WARNING/ERROR, ``FutureWarning`` and
  ``DeprecationWarning`` ignored, and Spark's console log at ``spark.log_level``.
* ``1`` (``-v``): INFO of every library, warnings shown, Spark's console at least at WARN.
* ``2`` (``--debug``): DEBUG of ours and the libraries, Spark's console at least at INFO;
  the CLI prints tracebacks of expected errors too.

Worker processes (Spark Python workers, Horovod ranks, the MLflow server) do not share this
process's logging, only its environment: ``setup`` puts ``QUIET_ENV``-style variables into
``os.environ`` (without replacing ones the user set), ``sparkvision.spark`` forwards them to
executors as ``spark.executorEnv.*``, and Horovod's workers inherit them from the driver.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Mapping

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"

WORKER_ENV: dict[int, Mapping[str, str]] = {
    0: {
        "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ banners, oneDNN and CPU-feature notices
        "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",  # petastorm/pyarrow
        "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Validating input example", "Waiting up to 300 seconds"
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # the train summary prints the run URL once
    },
    1: {"TF_CPP_MIN_LOG_LEVEL": "0", "MLFLOW_LOGGING_LEVEL": "INFO"},
    2: {"TF_CPP_MIN_LOG_LEVEL": "0", "MLFLOW_LOGGING_LEVEL": "DEBUG"},
}
"""Environment of this process and its workers per verbosity (a variable already set wins)."""

FORWARDED_ENV: tuple[str, ...] = (
    "TF_CPP_MIN_LOG_LEVEL",
    "PYTHONWARNINGS",
    "MLFLOW_LOGGING_LEVEL",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
)
"""Variables ``sparkvision.spark`` passes to executors when they are set here."""

LIBRARY_LEVELS: dict[int, Mapping[str, int]] = {
    0: {"py4j": logging.WARNING, "mlflow": logging.WARNING, "tensorflow": logging.ERROR, "absl": logging.ERROR},
    1: {"py4j": logging.WARNING, "mlflow": logging.INFO, "tensorflow": logging.INFO, "absl": logging.INFO},
    2: {"py4j": logging.DEBUG, "mlflow": logging.DEBUG, "tensorflow": logging.DEBUG, "absl": logging.DEBUG},
}
"""Levels of named library loggers per verbosity (the root logger: WARNING, INFO, DEBUG)."""

QUIET_MESSAGES: dict[str, tuple[str, ...]] = {
    # We log our own pyfunc on purpose; the warning says nothing a user can act on.
    "mlflow.pyfunc": ("Passing a Python object as `python_model` causes it to be serialized using CloudPickle",),
}
"""Warnings hidden at the default verbosity: logger name -> message prefixes."""

SPARK_LEVELS = ("OFF", "FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE", "ALL")
_SPARK_FLOOR = {0: "OFF", 1: "WARN", 2: "INFO"}

_verbosity = 0


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (pytest and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def setup(verbosity: int = 0) -> None:
    """Configure console logging and the environment of worker processes for ``verbosity``.

    Call before TensorFlow, MLflow or Spark start: their native parts read the environment once.
    Calling again (another ``main`` in the same process) replaces the previous set-up.

    Args:
        verbosity: 0 default, 1 ``-v``, 2 ``--debug``.
    """
    global _verbosity
    _verbosity = max(0, min(2, verbosity))
    for key, value in WORKER_ENV[_verbosity].items():
        os.environ.setdefault(key, value)

    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel((logging.WARNING, logging.INFO, logging.DEBUG)[_verbosity])
    logging.getLogger("sparkvision").setLevel(logging.DEBUG if _verbosity == 2 else logging.INFO)
    for name, level in LIBRARY_LEVELS[_verbosity].items():
        logging.getLogger(name).setLevel(level)
    for name, prefixes in QUIET_MESSAGES.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropMessages)]:
            logger.removeFilter(old)
        if _verbosity == 0:
            logger.addFilter(_DropMessages(prefixes))

    logging.captureWarnings(True)
    if _verbosity == 0:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def verbosity() -> int:
    """The verbosity chosen by the last ``setup`` (0 when it was never called)."""
    return _verbosity


def spark_level(configured: str) -> str:
    """Spark's console log level: ``spark.log_level``, lowered to WARN by ``-v`` and INFO by ``--debug``."""
    level = configured.upper()
    floor = _SPARK_FLOOR[_verbosity]
    if level not in SPARK_LEVELS:
        return level  # let Spark report the bad name
    return max(level, floor, key=SPARK_LEVELS.index)


def forwarded_env() -> dict[str, str]:
    """The logging-related variables set in this process, for ``spark.executorEnv.*``."""
    return {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}
