"""Executor side of batch scoring: one model per Python worker, predictions in batches.

``ScoreBatches`` is the function given to ``DataFrame.mapInPandas``. Spark hands it an
iterator of Arrow batches (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows each, as
pandas DataFrames); it cuts each into chunks of ``batch_size`` images. Decoding and
preprocessing are the model's own (``VisionModel.prepare``): chunk k+1 is decoded on a thread
while chunk k predicts (Pillow and TensorFlow both release the GIL), and the pyfunc loads on a
thread while Spark streams in the first rows. A pyfunc without ``prepare`` gets its ``predict``
called on each chunk. The pyfunc is loaded once per Python worker (Spark reuses workers across
tasks) and cached in ``_MODELS`` keyed by its local path.

GPUs: a Python worker runs its task, so ``TaskContext.get().resources()`` names the GPU Spark
assigned (``spark.task.resource.gpu.amount``, ``score.gpus_per_task``). The first task of a
worker makes that GPU the only one CUDA sees, before TensorFlow starts (``use_task_gpus``), and
tasks with a GPU predict in batches of ``gpu_batch_size``. A reused worker keeps the GPU of its
first task: with several GPUs per executor a later task may be handed another address, which is
logged; one GPU per executor (``spark.executor.resource.gpu.amount=1``) avoids it.

Nothing heavy is imported at module level: this module is imported by every Python worker.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sparkvision.data.schema import ERROR_CODE, ERROR_COLUMNS, ERROR_MESSAGE, MODEL_ERROR

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()
_DEVICES: dict[str, Any] = {}
"""What ``use_task_gpus`` chose for this process (``devices.configure_tensorflow``), once."""


def _limit_threads(cpus: int) -> None:
    """Give TensorFlow as many threads as the task has cores, before it starts its pools.

    Spark runs one Python worker per concurrent task; letting each TensorFlow use every
    core of the machine oversubscribes the CPU.
    """
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(max(1, cpus))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cpus)))
    except (ImportError, RuntimeError):  # RuntimeError: TF already initialised in this worker
        pass


def use_task_gpus(wanted: int) -> tuple[str, ...]:
    """The GPU addresses Spark assigned to the running task; the process's first call pins them.

    Args:
        wanted: GPUs asked for per task (``score.gpus_per_task``); with none assigned and 0
            wanted, TensorFlow is kept off the GPUs (``devices.configure_tensorflow``).

    Returns:
        The task's addresses (empty without GPU scheduling).
    """
    from sparkvision import devices

    assigned = devices.task_gpus()
    with _LOCK:
        if not _DEVICES:
            devices.pin(assigned)
            _DEVICES.update(devices.configure_tensorflow(assigned, wanted))
        elif _DEVICES["assigned"] != list(assigned):
            log.warning("task assigned GPU %s, but Python worker pid %d runs on GPU %s since its first task (Spark "
                        "reuses workers); give executors one GPU each (spark.executor.resource.gpu.amount=1)",
                        list(assigned), os.getpid(), _DEVICES["assigned"])  # fmt: skip
    return assigned


def load_model(path: str, cpus: int = 0) -> Any:
    """The pyfunc model at ``path``, loaded once per process.

    Args:
        path: Local folder of an MLflow model (``MLmodel`` inside).
        cpus: Threads for TensorFlow (0: leave TensorFlow's default).

    Returns:
        The ``mlflow.pyfunc.PyFuncModel``.
    """
    with _LOCK:
        model = _MODELS.get(path)
        if model is None:
            if cpus > 0:
                _limit_threads(cpus)
            import mlflow.pyfunc

            model = mlflow.pyfunc.load_model(path)
            _MODELS[path] = model
            log.info("loaded model %s in worker pid %d", path, os.getpid())
        return model


def resolve_local_model(archive_name: str, driver_path: str) -> str:
    """Where this executor finds the model: the unpacked ``addArchive`` copy, else the driver path.

    Args:
        archive_name: File name of the archive given to ``SparkContext.addArchive``.
        driver_path: The driver's folder (valid in local mode and on a shared filesystem).

    Returns:
        A local folder holding ``MLmodel``.

    Raises:
        FileNotFoundError: Neither location holds the model.
    """
    candidates = []
    if archive_name:
        try:
            from pyspark import SparkFiles

            candidates.append(SparkFiles.get(archive_name))
        except Exception:  # noqa: BLE001 - no SparkFiles outside a Spark worker
            pass
    candidates.append(driver_path)
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "MLmodel")):
            return folder
        if os.path.isdir(folder):  # an archive that kept its top folder
            for child in sorted(os.listdir(folder)):
                if os.path.isfile(os.path.join(folder, child, "MLmodel")):
                    return os.path.join(folder, child)
    raise FileNotFoundError(
        f"model not found on executor pid {os.getpid()}: expected an MLmodel file in {candidates} "
        f"(the driver ships it with SparkContext.addArchive({archive_name!r}))"
    )


class ScoreBatches:
    """``mapInPandas`` function: rows with an ``image`` column → passthrough columns + model outputs.

    Args:
        archive_name: Name of the model archive shipped with ``addArchive``.
        driver_path: Local model folder on the driver (fallback on a shared filesystem).
        batch_size: Images per ``predict`` call.
        keep: Input columns copied to the output unchanged (lineage: path, hash, id, ...).
        outputs: The model's output columns, in output order.
        cpus: TensorFlow threads per Python worker (0: TensorFlow's default).
        gpu_batch_size: Images per ``predict`` call in a task with a GPU (0: ``batch_size``).
        gpus: GPUs asked for per task (``score.gpus_per_task``), see ``use_task_gpus``.
    """

    def __init__(
        self,
        archive_name: str,
        driver_path: str,
        batch_size: int,
        keep: Sequence[str],
        outputs: Sequence[str],
        cpus: int = 1,
        gpu_batch_size: int = 0,
        gpus: int = 0,
    ) -> None:
        self.archive_name = archive_name
        self.driver_path = driver_path
        self.batch_size = batch_size
        self.keep = list(keep)
        self.outputs = list(outputs)
        self.cpus = cpus
        self.gpu_batch_size = gpu_batch_size
        self.gpus = gpus

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from concurrent.futures import ThreadPoolExecutor

        on_gpu = bool(use_task_gpus(self.gpus))
        batch_size = self.gpu_batch_size if on_gpu and self.gpu_batch_size else self.batch_size
        path = resolve_local_model(self.archive_name, self.driver_path)
        chunks = (frame.iloc[s : s + batch_size] for frame in batches for s in range(0, len(frame), batch_size))
        with ThreadPoolExecutor(2, thread_name_prefix="sparkvision-score") as pool:
            loading = pool.submit(load_model, path, self.cpus)  # while Spark streams in the first rows
            model = vision = None
            pending: tuple[pd.DataFrame, Any] | None = None
            for chunk in chunks:
                if model is None:
                    model = loading.result()
                    vision = _vision_model(model)
                if vision is None:  # a pyfunc without prepare/assemble: decode and predict in one call
                    yield self._score(model, chunk)
                    continue
                decoding = pool.submit(vision.prepare, chunk["image"].tolist())  # the next batch decodes ...
                if pending is not None:
                    yield self._finish(model, vision, *pending)  # ... while this one predicts
                pending = (chunk, decoding)
            if pending is not None:
                yield self._finish(model, vision, *pending)

    def _finish(self, model: Any, vision: Any, chunk: pd.DataFrame, decoding: Any) -> pd.DataFrame:
        try:
            prepared = decoding.result()
            pred = vision.assemble(prepared, vision.predict_arrays(prepared.x) if prepared.good else {})
        except Exception as exc:  # noqa: BLE001 - isolate the failing rows instead of failing the job
            log.warning("batch of %d failed (%s); scoring its rows one by one", len(chunk), exc)
            return self._rows(chunk, self._one_by_one(model, self._images(chunk)))
        return self._rows(chunk, pred)

    def _score(self, model: Any, chunk: pd.DataFrame) -> pd.DataFrame:
        images = self._images(chunk)
        try:
            pred = _predict(model, images)
        except Exception as exc:  # noqa: BLE001 - isolate the failing rows instead of failing the job
            log.warning("batch of %d failed (%s); scoring its rows one by one", len(images), exc)
            pred = self._one_by_one(model, images)
        return self._rows(chunk, pred)

    @staticmethod
    def _images(chunk: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"image": chunk["image"].to_numpy()})

    def _one_by_one(self, model: Any, images: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        return pd.concat([self._one(model, images.iloc[[i]]) for i in range(len(images))], ignore_index=True)

    def _rows(self, chunk: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
        if len(pred) != len(chunk):
            raise ValueError(f"model returned {len(pred)} rows for {len(chunk)} images")
        out = chunk[self.keep].reset_index(drop=True)
        for name in [*self.outputs, *ERROR_COLUMNS]:
            out[name] = pred[name].to_numpy() if name in pred.columns else None
        return out

    def _one(self, model: Any, image: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        try:
            return _predict(model, image)
        except Exception as exc:  # noqa: BLE001 - the row carries the error, the job goes on
            return pd.DataFrame({ERROR_CODE: [MODEL_ERROR], ERROR_MESSAGE: [f"{type(exc).__name__}: {exc}"[:1000]]})


def _vision_model(model: Any) -> Any:
    """The pyfunc's ``VisionModel`` when it can prepare a batch apart from predicting it, else None."""
    try:
        python_model = model.unwrap_python_model()
    except Exception:  # noqa: BLE001 - not a custom python model
        return None
    ok = all(callable(getattr(python_model, name, None)) for name in ("prepare", "assemble", "predict_arrays"))
    return python_model if ok else None


def _predict(model: Any, images: pd.DataFrame) -> pd.DataFrame:
    """``model.predict`` with a check that one row came back per image."""
    pred = model.predict(images)
    if len(pred) != len(images):
        raise ValueError(f"model returned {len(pred)} rows for {len(images)} images")
    return pred.reset_index(drop=True)
