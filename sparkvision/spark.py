"""The only place that builds a SparkSession; every setting comes from ``SparkConfig``."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sparkvision import logs
from sparkvision.config import SparkConfig

log = logging.getLogger(__name__)

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


def get_spark(cfg: SparkConfig, master: str | None = None, gpus: int = 0) -> SparkSession:
    """Build (or reuse) the SparkSession described by ``cfg``.

    Args:
        cfg: The ``spark`` section of the configuration.
        master: Overrides ``cfg.master``; ignored when spark-submit already set one.
        gpus: GPUs per task (``train.gpus_per_worker``, ``score.gpus_per_task``): adds Spark's
            GPU scheduling settings (``gpu_conf``) unless ``cfg.conf`` or spark-submit set them.

    Returns:
        The active SparkSession.

    Raises:
        UserError: When ``gpus`` > 0 and an already running session schedules no GPUs
            (executor resources are fixed when a session starts).
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
    gpu_master = submit.get("spark.master") or master or cfg.master
    extra = {**gpu_conf(gpus, cfg.gpu_discovery_script, gpu_master), **loopback_conf(gpu_master)}
    for key, value in extra.items():
        if key not in cfg.conf and key not in submit:
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(level)
    _check_gpu_scheduling(spark, gpus)
    return spark


def is_local(master: str) -> bool:
    """Whether ``master`` runs everything in the driver's JVM (``local``, ``local[N]``; not ``local-cluster``)."""
    return master == "local" or master.startswith("local[")


def loopback_conf(master: str) -> dict[str, str]:
    """``spark.driver.bindAddress``/``spark.driver.host`` = 127.0.0.1 for ``local*`` masters.

    Everything runs on this machine there, so nothing needs to reach the driver's ports from
    outside (Spark would otherwise listen on the external interface). ``SPARK_LOCAL_IP`` or the
    user's own settings (``spark.conf``, spark-submit ``--conf``) win.
    """
    if not master.startswith("local") or os.environ.get("SPARK_LOCAL_IP"):
        return {}
    return {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}


def gpu_conf(gpus: int, discovery_script: str, master: str) -> dict[str, str]:
    """Spark's GPU scheduling settings for ``gpus`` GPUs per task on ``master``.

    ``spark.executor.resource.gpu.amount`` and ``spark.task.resource.gpu.amount`` = ``gpus`` (an
    executor with more GPUs sets its own amount, with as many cores), and the discovery script
    when one is given. They take effect only when a session starts: ``get_spark`` adds them to
    the session it builds; a session started elsewhere must be submitted with them (``--conf``).

    In local mode Spark schedules no GPUs (a task asking for one would wait forever), so
    nothing is set there and the ranks choose their GPU by local rank
    (``devices.configure_tensorflow``).
    """
    if gpus <= 0:
        return {}
    if is_local(master):
        log.warning("%s: Spark schedules no GPUs in local mode; each worker uses the GPU of its local rank", master)
        return {}
    conf = {"spark.executor.resource.gpu.amount": str(gpus), "spark.task.resource.gpu.amount": str(gpus)}
    if discovery_script:
        conf["spark.executor.resource.gpu.discoveryScript"] = discovery_script
    return conf


def _check_gpu_scheduling(spark: SparkSession, gpus: int) -> None:
    """Fail when GPUs are asked for but the (already running) session gives tasks none."""
    from sparkvision.errors import UserError

    sc = spark.sparkContext
    if gpus <= 0 or is_local(sc.master) or sc.getConf().get("spark.task.resource.gpu.amount"):
        return
    raise UserError(
        f"{gpus} GPU(s) per task asked for (train.gpus_per_worker / score.gpus_per_task), but the running Spark "
        "session schedules none and executor resources cannot change once it started: submit with --conf "
        f"spark.executor.resource.gpu.amount={gpus} --conf spark.task.resource.gpu.amount={gpus} --conf "
        "spark.executor.resource.gpu.discoveryScript=PATH, or let sparkvision build the session"
    )


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
