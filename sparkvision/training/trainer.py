"""The driver side of a training job: check the data, open the MLflow run, run the workers
through a ``backend.Backend`` (Horovod on Spark by default), then evaluate, draw and register
the model from rank 0's best checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkvision import storage, tempdirs
from sparkvision.config import Config, TrainConfig
from sparkvision.training import data
from sparkvision.training.checkpoints import Store
from sparkvision.training.optim import scaled_learning_rate

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from sparkvision.tracking import Tracking
    from sparkvision.training.backend import Backend

log = logging.getLogger(__name__)

EVAL_ROWS = 4096
"""Rows of the val and test splits evaluated on the driver (the first ones in file order);
logged as ``eval_rows_val``/``eval_rows_test``. Keeps driver memory bounded on large splits."""
TRAIN_EVAL_ROWS = 1024
"""Rows of the train split (the first ones in file order, a seeded-hash sample) evaluated in
inference mode on the driver as ``eval_train_*``: beside ``eval_val_*`` it shows overfitting,
and beside the training-mode epoch metrics a BatchNorm or augmentation mismatch."""
PICTURE_ROWS = 16
"""Test images drawn in ``task.pictures``."""


@dataclass(frozen=True)
class Plan:
    """The shape of a job, derived from the dataset and configuration before anything runs.

    ``data_dir`` is the URL of the one dataset version the job reads (resolved once, from the
    pointer, when the plan is made), so a re-ingest meanwhile does not change what it reads.
    """

    data_dir: str
    source: str
    version: str | None
    manifest: dict[str, Any]
    meta: dict[str, Any]
    train: data.SplitInfo
    val: data.SplitInfo | None
    test: data.SplitInfo | None
    steps_per_epoch: int
    validation_steps: int
    effective_lr: float
    registered_name: str
    store: Store


def registered_name(cfg: Config) -> str:
    """``<registered_model_prefix>-<model>``: the registry name, also the store folder."""
    return f"{cfg.train.registered_model_prefix}-{cfg.train.model}"


def store_for(cfg: Config) -> Store:
    """The checkpoint store of the configured model (``paths.store`` may be an fsspec URL)."""
    root = cfg.paths.store if "://" in cfg.paths.store else str(cfg.path("store"))
    return Store(f"{root.rstrip('/')}/{registered_name(cfg)}")


def plan(cfg: Config, data_dir: str | os.PathLike[str]) -> Plan:
    """Read the manifest and Parquet footers, check the task fits and the splits shard.

    Args:
        cfg: The resolved configuration.
        data_dir: An ingested dataset (``OUT`` with its pointer, the old symlink layout, or one
            version folder): a local path or URL.

    Returns:
        The plan of the job, pinned to the dataset's current version.

    Raises:
        FileNotFoundError: When no dataset version with ``manifest.json`` is there.
        ValueError: When the task rejects the dataset or a split has fewer row groups than workers.
    """
    from sparkvision.data import images, publish
    from sparkvision.models import get_task

    current = publish.resolve(data_dir)  # pin the version the job reads
    if current is None or not current.location.join("manifest.json").is_file():
        raise FileNotFoundError(f"{data_dir}: expected an ingested dataset with manifest.json, found none")
    folder = current.location.url
    manifest = json.loads(current.location.join("manifest.json").read_text())
    tcfg = cfg.train
    task = get_task(tcfg.model)
    meta = task.prepare_meta(manifest, tcfg)
    # Scoring validates new images by the rules the training data was ingested with; not by
    # ``expected_size`` (new images need not come from the camera of the data set), and with a
    # minimum side no larger than the stored images, so the ingested tables themselves score.
    rules = images.Rules.of(manifest.get("config", {}))
    stored = int(manifest.get("image_size") or rules.min_side)
    rules = dataclasses.replace(rules, expected_size=(), min_side=min(rules.min_side, stored))
    meta = {**meta, "image_rules": rules.as_dict()}
    train = data.inspect_split(folder, "train")
    data.check_shardable(train, tcfg.workers)
    targets = [c for c in task.columns_for(meta["table"]) if c != "image"]  # small columns only
    meta = task.fit_statistics(meta, data.read_columns(train, targets), tcfg)
    val = data.inspect_split(folder, "val")
    if val.rows:
        data.check_shardable(val, tcfg.workers)
    test = data.inspect_split(folder, "test")
    samples = max(train.rows, int(meta.get("samples_per_epoch") or 0))  # a family sampling crops draws more
    return Plan(
        data_dir=folder,
        source=storage.location(data_dir).url,
        version=current.version,
        manifest=manifest,
        meta=meta,
        train=train,
        val=val if val.rows else None,
        test=test if test.rows else None,
        steps_per_epoch=data.steps_for(samples, tcfg.batch_size, tcfg.workers, tcfg.steps_per_epoch),
        validation_steps=data.steps_for(val.rows, tcfg.batch_size, tcfg.workers, tcfg.validation_steps),
        effective_lr=scaled_learning_rate(tcfg, tcfg.workers),
        registered_name=registered_name(cfg),
        store=store_for(cfg),
    )


def train(
    spark: SparkSession, cfg: Config, data_dir: str, resume: bool = False, backend: Backend | None = None,
    planned: Plan | None = None, tracking: Tracking | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train ``cfg.train.model`` on an ingested dataset with Horovod on Spark, tracked in MLflow.

    One MLflow run per job (a resumed job continues its run). Rank 0 checkpoints every epoch
    to the store and logs epoch metrics (inference-mode ``val_*``/``train_eval_*`` after the
    BatchNorm recalibration); afterwards the driver evaluates the best checkpoint on val, test
    and a train sample, logs pictures and curves, and registers it with the configured alias.

    Args:
        spark: The active session (the default backend runs one Spark task per worker on it).
        cfg: The resolved configuration (``train`` section, ``paths.store``, MLflow settings).
        data_dir: An ingested dataset folder.
        resume: Continue from the store's latest checkpoint and its MLflow run.
        backend: Runs the workers; None: ``SparkHorovodBackend(spark)``. ``InProcessBackend()``
            runs a 1-worker job in this process (no Spark job, no Horovod).
        planned: ``plan(cfg, data_dir)`` when the caller has already made it (it is not redone).
        tracking: The MLflow server (default: ``Tracking.from_config(cfg)``).

    Returns:
        ``run_id``, ``experiment``, ``registered_model``, ``version``, ``alias``, ``model_uri``,
        ``metrics`` (last epoch, ``eval_val_*``, ``test_*``, ``eval_train_*`` and ``best_epoch``),
        ``meta``, ``checkpoint_dir`` (URL of the evaluated checkpoint folder: the epoch with the
        lowest inference-mode ``val_loss``), ``store`` and ``checkpoint`` (its path in the store),
        ``best_epoch``, ``initial_epoch``, ``epochs_run``, ``stopped_early`` and rank 0's ``history``.

    Raises:
        FileNotFoundError: On ``resume`` without a checkpoint.
        ValueError: When the dataset does not fit the task or the worker count, the backend
            cannot run ``train.workers`` workers, or ``planned`` is of another dataset.
    """

    from sparkvision.tracking import Tracking, liveness
    from sparkvision.tracking.server import warn_if_unreachable
    from sparkvision.training import tracking_log
    from sparkvision.training.backend import SparkHorovodBackend
    from sparkvision.training.worker import WorkerJob, run_worker

    p = _checked_plan(planned, data_dir) if planned is not None else plan(cfg, data_dir)
    backend = backend if backend is not None else SparkHorovodBackend(spark)
    if backend.max_proc is not None and cfg.train.workers > backend.max_proc:
        raise ValueError(f"train.workers={cfg.train.workers}: {type(backend).__name__} runs at most "
                         f"{backend.max_proc} worker(s); set train.workers={backend.max_proc} or use SparkHorovodBackend")  # fmt: skip
    tracking = tracking or Tracking.from_config(cfg)
    if isinstance(backend, SparkHorovodBackend):  # rank 0 logs through tracking.uri from an executor
        warn_if_unreachable(tracking.uri, spark.sparkContext.master)
    experiment = cfg.train.experiment
    sweep_killed_runs(tracking, cfg)
    state = p.store.latest() if resume else None
    if resume and state is None:
        raise FileNotFoundError(f"resume requested but there is no checkpoint: {p.store.url('state.json')} is missing")

    cycle_ms = horovod_cycle_time_ms(cfg.train, os.environ)
    with tempdirs.temporary_directory("sv-train-") as tmp:
        work = Path(tmp)
        if state is not None:
            run_id = state.run_id
            tracking.set_tags(run_id, {"sparkvision.resumed_from_epoch": str(state.epoch), **liveness.driver_tags()})
            tracking.reopen_run(run_id)
            # Parameters are immutable: the configuration of each resumed segment is an artifact.
            tracking.log_text(run_id, cfg.to_yaml(), f"resumed/config-from-epoch-{state.epoch + 1}.yaml")
        else:
            run_id = tracking.create_run(experiment, f"{p.registered_name}-train",
                                         {"mlflow.source.type": "JOB", **liveness.driver_tags()})  # fmt: skip
            params = tracking_log.train_params(cfg, p.effective_lr, p.steps_per_epoch, p.validation_steps)
            params["horovod_cycle_time_ms"] = f"{cycle_ms:g}"
            tracking_log.log_inputs(tracking, run_id, cfg, p.manifest, p.data_dir, params, work, version=p.version)
        log.info("training %s on %s: run %s, %d worker(s), %d steps/epoch", cfg.train.model, p.data_dir, run_id,
                 cfg.train.workers, p.steps_per_epoch)  # fmt: skip
        job = WorkerJob(tcfg=cfg.train, meta=p.meta, train=p.train, val=p.val, steps_per_epoch=p.steps_per_epoch,
                        validation_steps=p.validation_steps, store_root=p.store.root, run_id=run_id,
                        tracking_uri=tracking.uri, resume=state is not None)  # fmt: skip
        try:
            started = time.perf_counter()
            from sparkvision.training import callbacks
            from sparkvision.training.backend import InProcessBackend

            env = _worker_env(cycle_ms)
            live = isinstance(backend, InProcessBackend)  # its rank prints in this process, as it goes
            if not live:
                env[callbacks.EPOCH_LINES_ENV] = "driver"
            with contextlib.nullcontext() if live else callbacks.EpochProgress(tracking, run_id, cfg.train.epochs):
                results = backend.run(run_worker, args=(job,), num_proc=cfg.train.workers, env=env)
            rank0 = next(r for r in results if r["rank"] == 0)
            if not rank0.get("checkpoint"):
                raise RuntimeError(f"training run {run_id} wrote no checkpoint to {p.store.url()}")
            log.info("workers of run %s took %.1f s (%s)", run_id, time.perf_counter() - started,
                     type(backend).__name__)  # fmt: skip
            liveness.beat(tracking, run_id)
            started = time.perf_counter()
            outcome = _finish(cfg, p, tracking, run_id, rank0, work)
            log.info("evaluation, pictures and registration of run %s took %.1f s", run_id,
                     time.perf_counter() - started)  # fmt: skip
        except BaseException:
            try:
                tracking.finish_run(run_id, status="FAILED")
            except Exception as exc:  # keep the training error, not the bookkeeping one
                log.warning("could not mark run %s FAILED: %s", run_id, exc)
            raise
        tracking.finish_run(run_id)
    return {"run_id": run_id, "experiment": experiment, **outcome}


def sweep_killed_runs(tracking: Tracking, cfg: Config) -> list[Any]:
    """``liveness.clean_runs`` on the training experiment; a failure is logged, never raised."""
    from sparkvision.tracking import liveness

    try:
        return liveness.clean_runs(tracking, [cfg.train.experiment], cfg.train.heartbeat_timeout_s)
    except Exception as exc:  # noqa: BLE001 - bookkeeping of other runs must not stop this one
        log.warning("could not check %s for runs of killed drivers: %s", cfg.train.experiment, exc)
        return []


def _checked_plan(planned: Plan, data_dir: str | os.PathLike[str]) -> Plan:
    """``planned`` when it was made for ``data_dir`` (the dataset, or the version it pinned)."""
    url = storage.location(data_dir).url
    if url not in (planned.source, planned.data_dir):
        raise ValueError(f"the plan given to train is of {planned.source} ({planned.data_dir}), expected one of {url}")
    return planned


CPU_CYCLE_TIME_MS = 10.0
"""``train.horovod_cycle_time_ms: auto`` on CPU workers. Horovod's thread negotiates with the other
ranks every cycle (1 ms by default) whether or not a tensor is waiting, on the cores the step and
the input pipeline need: 2 workers on 2 cores trained the 64-px VAE at 459 images/s with 1 ms and
584-613 with 10 ms (``benchmarks/train.py``, README figures). A gradient waits at most one cycle,
10 ms against a step of about 100 ms there."""


def horovod_cycle_time_ms(tcfg: TrainConfig, environ: Mapping[str, str]) -> float:
    """The ranks' ``HOROVOD_CYCLE_TIME``: ``train.horovod_cycle_time_ms``, or for ``auto`` the
    environment's, else ``CPU_CYCLE_TIME_MS`` on CPU workers and Horovod's own 1 ms on GPU workers
    (whose steps take milliseconds).

    Raises:
        ValueError: When ``auto`` finds a ``HOROVOD_CYCLE_TIME`` that is not a positive number.
    """
    if tcfg.horovod_cycle_time_ms != "auto":
        return float(tcfg.horovod_cycle_time_ms)
    given = environ.get("HOROVOD_CYCLE_TIME")
    if given:
        try:
            value = float(given)
        except ValueError:
            value = -1.0
        if value <= 0:
            raise ValueError(f"environment HOROVOD_CYCLE_TIME: expected milliseconds > 0, found {given!r}")
        return value
    return CPU_CYCLE_TIME_MS if tcfg.gpus_per_worker == 0 else 1.0


def _worker_env(cycle_ms: float) -> dict[str, str]:
    env = dict(os.environ)
    env["HOROVOD_CYCLE_TIME"] = f"{cycle_ms:g}"
    # Ranks keep TensorFlow's Python warnings (slow-callback notices) and grappler's C++
    # error notices to themselves unless the driver logs at DEBUG.
    env.setdefault("SPARKVISION_WORKER_TF_LOG", "INFO" if log.isEnabledFor(logging.DEBUG) else "ERROR")
    quiet_cpp = "2" if log.isEnabledFor(logging.DEBUG) else "3"
    # Ranks log to the run through the URI in their job description, not the environment.
    env.update({"TF_CPP_MIN_LOG_LEVEL": quiet_cpp, "PYTHONHASHSEED": env.get("PYTHONHASHSEED", "0")})
    return env


def load_checkpoint(cfg: Config, meta: dict[str, Any], store: Store, checkpoint: str) -> Any:
    """The task's model for evaluation and scoring (``ModelSpec.inference_model`` when it has one)
    with the weights of ``checkpoint`` (a path relative to the store)."""
    import tensorflow as tf

    from sparkvision.models import get_task

    spec = get_task(cfg.train.model).build(cfg.train, meta)
    folder, prefix = checkpoint.rsplit("/", 1)
    with tempdirs.temporary_directory("sv-load-") as tmp:
        local = store.download(folder, tmp)
        status = tf.train.Checkpoint(model=spec.model).read(str(local / prefix))
        status.expect_partial().assert_existing_objects_matched()
    return spec.inference_model or spec.model  # the trained model's weights, shared


def _finish(cfg: Config, p: Plan, tracking: Tracking, run_id: str, rank0: dict[str, Any], work: Path) -> dict[str, Any]:  # fmt: skip
    """Evaluate, draw, register; everything logged into ``run_id``."""
    from sparkvision.models import get_task
    from sparkvision.training import tracking_log

    task = get_task(cfg.train.model)
    meta = dict(p.meta)
    chosen = rank0.get("best_checkpoint") or rank0["checkpoint"]
    best_epoch = int(rank0.get("best_epoch", rank0["epoch"]))
    tracking.set_tags(run_id, {"sparkvision.best_epoch": str(best_epoch)})
    log.info("run %s: evaluating the best checkpoint (epoch %d of %d)", run_id, best_epoch + 1,
             int(rank0["epoch"]) + 1)  # fmt: skip
    model = load_checkpoint(cfg, meta, p.store, chosen)
    metrics: dict[str, float] = {"best_epoch": float(best_epoch)}
    examples: list[bytes] = []
    pictures = work / "pictures"
    # val first: it may set meta (fabric threshold, per-attribute thresholds); train last.
    for split, info, limit in (("val", p.val, EVAL_ROWS), ("test", p.test, EVAL_ROWS), ("train", p.train, TRAIN_EVAL_ROWS)):  # fmt: skip
        if info is None:
            continue
        frame = data.read_frame(info, None, limit)
        if frame.empty:
            continue
        x, y = task.arrays(frame, meta)
        if split != "train":
            examples = [bytes(b) for b in frame["image"][:2]]
        result = task.evaluate(model, x, y, meta)
        prefix = {"val": "eval_val_", "test": "test_", "train": "eval_train_"}[split]
        metrics.update({f"{prefix}{k}": float(v) for k, v in result.items()})
        tracking.set_tags(run_id, {f"eval_rows_{split}": str(len(frame))})
        if split == "test" and cfg.train.pictures:
            n = min(PICTURE_ROWS, len(x))
            task.pictures(model, x[:n], {k: v[:n] for k, v in y.items()}, meta, pictures)
    history = tracking.histories(run_id)  # the epochs' metrics (curves): the evaluation is logged below
    if cfg.train.pictures:
        tracking_log.plot_curves(history, pictures)
    if pictures.is_dir() and any(pictures.iterdir()):
        tracking.log_artifacts(run_id, pictures, "pictures")
    tracking.log_text(run_id, p.store.read_text("state.json"), "checkpoint/state.json")
    checkpoint_dir = chosen.rsplit("/", 1)[0]
    local_ckpt = p.store.download(checkpoint_dir, work / "checkpoint")
    tracking.log_artifacts(run_id, local_ckpt, "checkpoint")
    version = tracking.log_model(run_id, model, cfg.train.model, meta, p.registered_name, cfg.train.alias,
                                 examples or None)  # fmt: skip
    # After log_model: MLflow 3's log_model reads the history of every metric of the run (to link the
    # step-0 ones to the model), one request per key; the evaluation adds hundreds of keys.
    tracking.log_metrics(run_id, metrics, step=int(rank0["epoch"]))
    final = {k: values[-1][1] for k, values in history.items() if values}
    final.update(metrics)
    return {
        "registered_model": p.registered_name,
        "version": str(version.version),
        "alias": cfg.train.alias,
        "model_uri": f"models:/{p.registered_name}@{cfg.train.alias}",
        "metrics": final,
        "meta": meta,
        "checkpoint_dir": p.store.url(checkpoint_dir),
        "store": p.store.root,
        "checkpoint": chosen,
        "best_epoch": best_epoch,
        "epochs_run": int(rank0["epoch"]) + 1 - int(rank0["initial_epoch"]),
        "initial_epoch": int(rank0["initial_epoch"]),
        "stopped_early": bool(rank0["stopped_early"]),
        "history": rank0["history"],
    }
