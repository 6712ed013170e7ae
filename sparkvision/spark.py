"""The only place that builds a SparkSession; every setting comes from ``SparkConfig``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sparkvision import logs
from sparkvision.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def python_executable(conf: Mapping[str, str] | None = None) -> str:
    """The interpreter executors run: the one the user chose, else this virtual environment's own ``python``.

    Chosen means ``spark.pyspark.python`` in ``conf`` (spark-submit's ``--conf`` or ``spark.conf``)
    or ``PYSPARK_PYTHON``; a packed environment is chosen as
    ``--archives env.tar.gz#env --conf spark.pyspark.python=./env/bin/python``. Otherwise
    ``sys.executable``, kept as is: resolving the venv symlink lands on the base interpreter,
    where executors fail with ``No module named 'horovod'``.
    """
    return (conf or {}).get("spark.pyspark.python") or os.environ.get("PYSPARK_PYTHON") or sys.executable


def worker_python(spark: SparkSession) -> str:
    """The interpreter this session's executors run (PySpark sends it with every task); Horovod
    must launch its ranks with it too, not with the driver's ``sys.executable``."""
    return spark.sparkContext.pythonExec


def spark_home() -> Path:
    """``SPARK_HOME``, or the folder of the installed ``pyspark`` package (it ships bin/ and jars/)."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).parent


def get_spark(cfg: SparkConfig, master: str | None = None) -> SparkSession:
    """Build (or reuse) the SparkSession described by ``cfg``.

    Args:
        cfg: The ``spark`` section of the configuration.
        master: Overrides ``cfg.master``; ignored when spark-submit already set one.

    Returns:
        The active SparkSession.
    """
    submit = _submit_conf()
    # PySpark sends the driver's PYSPARK_PYTHON to executors as the path of their interpreter.
    os.environ["PYSPARK_PYTHON"] = python_executable({**cfg.conf, **submit})
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(cfg.app_name)
    submitted = "spark.master" in submit
    if not submitted:
        builder = builder.master(master or cfg.master)
    level = logs.spark_level(cfg.log_level)
    for key, value in console_conf(cfg.conf, level).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(level)
    return spark


def console_conf(conf: Mapping[str, str], level: str) -> dict[str, str]:
    """``conf`` plus the settings that keep the console readable, unless ``conf`` sets them itself.

    * ``spark.ui.showConsoleProgress``: the stage progress bar only when stderr is a terminal
      (a log file or a pipeline record would fill with carriage-return lines).
    * ``spark.driver.extraJavaOptions``: a log4j2 configuration at ``level``, so the warnings
      Spark prints while it starts (loopback hostname, native Hadoop library) follow
      ``spark.log_level`` too; only a driver JVM started by this process reads it.
    * ``spark.executorEnv.*``: the logging variables of ``sparkvision.logs`` (TensorFlow banners,
      FutureWarnings, MLflow chatter), for Python workers on a cluster.
    """
    out = dict(conf)
    out.setdefault("spark.ui.showConsoleProgress", "true" if sys.stderr.isatty() else "false")
    java = out.get("spark.driver.extraJavaOptions", "")
    if "log4j2.configurationFile" not in java:
        out["spark.driver.extraJavaOptions"] = (
            f"{java} -Dlog4j2.configurationFile={_log4j2_file(level).as_uri()}".strip()
        )
    for key, value in logs.forwarded_env().items():
        out.setdefault(f"spark.executorEnv.{key}", value)
    return out


def _log4j2_file(level: str) -> Path:
    """A log4j2 properties file (per level, in the temp folder): console on stderr at ``level``."""
    text = (
        f"rootLogger.level = {level.lower()}\n"
        "rootLogger.appenderRef.stderr.ref = console\n"
        "appender.console.type = Console\n"
        "appender.console.name = console\n"
        "appender.console.target = SYSTEM_ERR\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex\n"
        # Spark takes the level of the interpreter's logger (for PySpark its gateway, else WARN) and
        # prints "Setting default log level to ..." when it differs from the root's.
        f"logger.gateway.name = org.apache.spark.api.python.PythonGatewayServer\nlogger.gateway.level = {level.lower()}\n"
        # as Spark's own defaults: a harmless warning about old Parquet statistics
        "logger.parquet.name = org.apache.parquet.CorruptStatistics\n"
        "logger.parquet.level = error\n"
    )
    path = (
        Path(tempfile.gettempdir()) / f"sparkvision-log4j2-{hashlib.sha256(text.encode()).hexdigest()[:12]}.properties"
    )
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def session_conf(spark: SparkSession, values: Mapping[str, str]) -> Iterator[None]:
    """Set runtime SQL settings for the duration of a job, then restore the previous values."""
    old = {k: spark.conf.get(k, None) for k in values}
    for k, v in values.items():
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def _submit_conf() -> dict[str, str]:
    """Settings spark-submit passed to this driver (empty when run as plain python).

    spark-submit starts the JVM first and hands its port over in ``PYSPARK_GATEWAY_PORT``; its
    settings (``--master``, ``--conf``) live in that JVM. A ``SparkConf`` made before the gateway
    is connected is an empty dict, so connect first (the session would do it next anyway).
    """
    from pyspark import SparkConf, SparkContext

    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())
