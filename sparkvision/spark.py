"""The only place that builds a SparkSession; every setting comes from ``SparkConfig``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sparkvision.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def python_executable() -> str:
    """The interpreter executors must use: this virtual environment's own ``python``.

    ``sys.executable`` is kept as is: resolving the venv symlink lands on the base
    interpreter, where executors fail with ``No module named 'horovod'``.
    """
    return os.environ.get("PYSPARK_PYTHON") or sys.executable


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
    os.environ.setdefault("PYSPARK_PYTHON", python_executable())
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", python_executable())
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(cfg.app_name)
    submitted = "spark.master" in _submit_conf()
    if not submitted:
        builder = builder.master(master or cfg.master)
    for key, value in cfg.conf.items():
        builder = builder.config(key, value)
    builder = builder.config("spark.executorEnv.PYSPARK_PYTHON", python_executable())
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark


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
    """Settings spark-submit passed to this driver (empty when run as plain python)."""
    from pyspark import SparkConf

    if os.environ.get("SPARK_ENV_LOADED") is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    return dict(SparkConf().getAll())
