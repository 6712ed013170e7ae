"""Batch scoring library: images (or an ingested dataset) + a registered model → Parquet with lineage.

Steps, all on the driver except the model itself:

1. ``resolve_model``: ``models:/NAME@ALIAS`` → registered name, version and run id (one
   registry call), then one download of the pinned version ``models:/NAME/VERSION`` to a local
   folder, zipped and shipped with ``SparkContext.addArchive`` so every executor (local mode or
   a standalone cluster) reads it from disk and never calls the tracking server.
2. ``read_input``: a folder or glob of image files (``binaryFile``, recursive, image extensions;
   ``content_hash`` = SHA-256 of the bytes, computed in the JVM) or an ingested dataset folder
   (``manifest.json`` + ``data/`` Parquet).
   Steps 1 and 2 run side by side: the model downloads while the input is listed, once
   (``survey_input``).
3. ``apply_model``: ``mapInPandas`` with ``udf.ScoreBatches`` — one model per Python worker,
   Arrow batches of ``max_records_per_batch`` rows, ``predict`` calls of ``batch_size`` images.
4. The scored rows (small: no image bytes) are persisted once, counted for the summary, sorted
   by ``(content_hash, source_path)`` and written to a new version folder ``OUT/v-<id>/`` with
   ``_summary.json`` beside the Parquet files, committed by ``OUT/_latest.json`` (``publish``).

Rerunning a job gives the same rows in the same order; only ``scored_at`` (one timestamp per
job, shared by all its rows) differs. In incremental mode only inputs whose ``content_hash`` is
not in the version the run started from are scored, and old rows ∪ new rows are committed only
if no other run committed meanwhile (else ``publish.PublishConflict``, nothing lost).

Inputs and outputs may be local paths or filesystem URLs (``sparkvision.storage``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkvision import storage, tempdirs
from sparkvision.config import ScoreConfig
from sparkvision.data import publish as pub
from sparkvision.data.images import IMAGE_EXTENSIONS, LISTING_REASONS
from sparkvision.data.readers import Survey, glob_for
from sparkvision.data.schema import ERROR_CODE, ERROR_COLUMNS, ERROR_MESSAGE, ERRORS
from sparkvision.scoring.udf import ScoreBatches
from sparkvision.spark import session_conf

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from sparkvision.tracking import Tracking

log = logging.getLogger(__name__)

LINEAGE: tuple[str, ...] = ("model_name", "model_version", "model_run_id", "model_uri", "scored_at")
ROWS_PER_OUTPUT_FILE = 100_000
SUMMARY_FILE = "_summary.json"


@dataclass(frozen=True)
class ResolvedModel:
    """A model pinned to one registry version (or run), downloaded once on the driver.

    Attributes:
        uri: The URI the user gave (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``, a path).
        pinned_uri: The URI of exactly this version (what was downloaded).
        name: Registered model name, or None for an unregistered model.
        version: Registered version, or None.
        run_id: The MLflow run that logged the model, or None when unknown.
        local_path: Driver-local folder holding ``MLmodel``.
        archive: Zip of ``local_path`` given to ``addArchive`` (its file name is what executors look up).
        task: The model family (``sparkvision.models.REGISTRY`` key).
        outputs: ``(column, Spark DDL type)`` of the task's scoring outputs.
    """

    uri: str
    pinned_uri: str
    name: str | None
    version: str | None
    run_id: str | None
    local_path: str
    archive: str
    task: str
    outputs: tuple[tuple[str, str], ...]

    def info(self) -> dict[str, Any]:
        """JSON-friendly description (paths left out)."""
        d = asdict(self)
        for key in ("local_path", "archive"):
            d.pop(key)
        d["outputs"] = [list(o) for o in self.outputs]
        return d


_DOWNLOADS: Path | None = None


def _download_root() -> Path:
    """A folder for downloaded models in the process's temporary folder (``tempdirs``), removed at exit.

    Archives must outlive the job: Spark serves them to executors that start later.
    """
    global _DOWNLOADS
    if _DOWNLOADS is None or not _DOWNLOADS.is_dir():
        _DOWNLOADS = tempdirs.mkdtemp("sparkvision-models-")
    return _DOWNLOADS


def resolve_model(spark: SparkSession | None, model_uri: str, tracking: Tracking | None = None) -> ResolvedModel:
    """Pin ``model_uri`` to one version, download it once and ship it to the executors.

    Args:
        spark: The session whose executors get the model (``addArchive``); None: download only.
        model_uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN/PATH`` or a local folder.
        tracking: The MLflow server of registry and run URIs (not needed for a folder).

    Returns:
        The resolved model.

    Raises:
        mlflow.exceptions.MlflowException: Unknown name, alias or version (message from the registry).
        ValueError: The model is not a sparkvision vision model, or a registry URI without ``tracking``.
    """
    import mlflow

    from sparkvision.models import get_task
    from sparkvision.models.packaging import read_meta
    from sparkvision.tracking import ModelRef

    folder = _download_root() / f"model-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    if os.path.isdir(model_uri):
        ref = ModelRef(model_uri, model_uri)
        local = Path(shutil.copytree(model_uri, folder / "model"))
    elif model_uri.startswith(("models:/", "runs:/")):
        if tracking is None:
            raise ValueError(f"{model_uri}: a registry or run URI needs a tracking server, none given")
        ref = tracking.resolve(model_uri)
        local = tracking.download_model(ref, folder)
    else:  # an artifact URL (s3://, ...): MLflow downloads it
        ref = ModelRef(model_uri, model_uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(folder)))
    if not (local / "MLmodel").is_file():
        raise ValueError(f"{model_uri}: expected an MLflow model (an MLmodel file), found {sorted(os.listdir(local))}")
    meta = read_meta(local)
    task = get_task(meta["task"])
    outputs = tuple((str(c), str(t)) for c, t in task.output_schema(meta))
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(local.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(local).as_posix())
    if spark is not None:
        spark.sparkContext.addArchive(str(archive))
    log.info("model %s -> %s (run %s), shipped as %s", model_uri, ref.pinned_uri, ref.run_id, archive.name)
    return ResolvedModel(model_uri, ref.pinned_uri, ref.name, ref.version, ref.run_id, str(local), str(archive),
                         task.name, outputs)  # fmt: skip


def dataset_version(path: str | os.PathLike[str]) -> pub.Current | None:
    """The current version of ``path`` when it is an ingested dataset (``manifest.json``), else None."""
    if any(ch in str(path) for ch in "*?[{"):
        return None
    current = pub.resolve(path)
    return current if current is not None and current.location.join("manifest.json").is_file() else None


def is_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ingested dataset (published, or one version folder)."""
    return dataset_version(path) is not None


_GLOB = re.compile(r"[*?\[{]")


def input_root(input: str) -> storage.Location:
    """The folder ``id`` values are relative to: ``input`` itself, or the folder above a glob's first pattern."""
    match = _GLOB.search(input)
    if match is None:
        where = storage.location(input)
        return where.parent if where.is_file() else where
    head = input[: match.start()]
    return storage.location(head.rsplit("/", 1)[0] if "/" in head else ".")


def survey_input(input: str) -> Survey | None:
    """The driver's one listing of a folder or glob input (``readers.Survey`` of ``input_root``).

    None for an ingested dataset, a single file or a folder that does not exist.
    ``unusable_files`` and ``read_input`` take it, so a job lists its input once.
    """
    if dataset_version(input) is not None:
        return None
    root = input_root(input)
    if not root.is_dir() or (not _GLOB.search(input) and root != storage.location(input)):
        return None
    survey = Survey()
    survey.files(root, "", IMAGE_EXTENSIONS)
    return survey


def unusable_files(input: str, survey: Survey | None = None) -> list[tuple[str, str, str, str]]:
    """``(source_path, id, reason, message)`` of every file under a folder or glob input that Spark does not read.

    Hidden and underscore-prefixed names, other extensions and dangling links
    (``readers.Survey``): scoring gives each an error row, as ingest quarantines it. For a glob,
    only the files the glob matches. Empty for an ingested dataset.

    Args:
        input: The input folder or glob.
        survey: ``survey_input(input)`` when the caller has it (else it is listed here).
    """
    import fnmatch

    survey = survey or survey_input(input)
    if survey is None:
        return []
    root = input_root(input)
    pattern = storage.location(input).path if _GLOB.search(input) else None
    rows = []
    for item in survey.skipped:
        path = str(root.join(item.key))
        if pattern is None or fnmatch.fnmatchcase(root.join(item.key).path, pattern):
            rows.append((path, item.key, item.reason, item.message))
    return rows


def read_input(spark: SparkSession, input: str, survey: Survey | None = None) -> DataFrame:
    """Rows to score: ``image`` (bytes), ``source_path``, ``content_hash``, ``id`` (+ dataset columns).

    ``id`` is the file's path relative to the input folder (for a glob: the folder above its first
    pattern), unique across sub-folders; a dataset keeps its own ``id``. Files Spark does not read
    are in ``unusable_files``.

    Args:
        spark: The session.
        input: A folder (read recursively) or glob of image files, or an ingested dataset folder.
        survey: ``survey_input(input)`` when the caller has it (a folder's zero-byte files are
            found in it; else the folder is listed here).

    Returns:
        A DataFrame with one row per input image. For a dataset, all its columns (``split``,
        ``identity``, ...) are kept.

    Raises:
        FileNotFoundError: ``input`` does not exist (and is not a glob).
    """
    from pyspark.sql import functions as F

    from sparkvision.data.ingest import relative_key

    version = dataset_version(input)
    if version is not None:
        return spark.read.parquet(version.location.join("data").spark)
    where = storage.location(input)
    if not any(ch in input for ch in "*?[{") and not where.exists():
        raise FileNotFoundError(f"scoring input {input}: expected a folder or glob of images, found nothing")
    raw = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", glob_for(IMAGE_EXTENSIONS))
        .load(where.spark)
    )
    rows = raw.select(
        F.col("content").alias("image"),
        F.regexp_replace("path", "^file:(//)?", "").alias("source_path"),
        F.sha2(F.col("content"), 256).alias("content_hash"),
        relative_key("path", input_root(input)).alias("id"),
    )
    # Spark's file scan drops zero-byte files; they are inputs too and get a zero_bytes error row.
    empty = empty_files(input, raw, survey)
    if empty:
        blank = hashlib.sha256(b"").hexdigest()
        base = str(input_root(input)).rstrip("/") + "/"
        extra = [(b"", p, blank, p[len(base) :] if p.startswith(base) else p) for p in empty]
        rows = rows.unionByName(spark.createDataFrame(extra, rows.schema))
    return rows


def empty_files(input: str, raw: DataFrame, survey: Survey | None = None) -> list[str]:
    """Paths of the zero-byte image files a folder or glob ``input`` holds, which ``raw`` (its ``binaryFile`` scan) drops.

    A folder's are in its ``survey`` (``Survey.empty``: the listing through ``storage``, any
    filesystem URL). A glob keeps Spark's own matching: the scan's ``inputFiles`` (local files
    only; its py4j copy costs about 0.14 ms a file).
    """
    if _GLOB.search(input):
        local = [re.sub("^file:(//)?", "", p) for p in raw.inputFiles() if p.startswith("file:")]
        return [p for p in local if _size(p) == 0]
    survey = survey or survey_input(input)
    root = input_root(input)
    return [str(root.join(key)) for key in survey.empty] if survey is not None else []


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


FILE_OPEN_COST = 8 * 2**20
"""``spark.sql.files.openCostInBytes`` of a scoring job: far more than an image's bytes, so Spark
packs input partitions by file count (what scoring time follows: one predict per image), not by
bytes (a partition of large PNGs would hold a fraction of the images of one of small JPEGs)."""
IMAGES_PER_TASK = 4096
"""Most files in one input partition: a large input spreads over executors that register after
the job starts (``defaultParallelism`` counts only those there at the start)."""


def job_conf(spark: SparkSession, cfg: ScoreConfig) -> dict[str, str]:
    """SQL settings of a scoring job: Arrow batch size and input partitioning.

    Every file costs ``FILE_OPEN_COST`` in Spark's packing, and with ``minPartitionNum`` the
    input splits into about ``partitions`` (default 2 x parallelism) partitions of equal file
    count, each of at most ``IMAGES_PER_TASK`` files (``maxPartitionBytes``). Spark packs the
    largest files first, so the costliest partitions start first.
    """
    partitions = cfg.partitions or 2 * spark.sparkContext.defaultParallelism
    return {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(cfg.max_records_per_batch),
        "spark.sql.files.minPartitionNum": str(partitions),
        "spark.sql.files.openCostInBytes": str(FILE_OPEN_COST),
        "spark.sql.files.maxPartitionBytes": str(FILE_OPEN_COST * IMAGES_PER_TASK),
    }


def apply_model(
    df: DataFrame, model: ResolvedModel, cfg: ScoreConfig, keep: Sequence[str], spread: bool = True
) -> DataFrame:
    """Score every row of ``df`` (needs an ``image`` column) with ``model``.

    Args:
        df: Input rows.
        model: From ``resolve_model`` (already shipped to the executors).
        cfg: Batch sizes and partitioning.
        keep: Columns of ``df`` copied to the output.
        spread: Repartition ``df`` when it has fewer partitions than cores (which costs a
            planning pass, about 1.5 s in a new session). False for a ``binaryFile`` scan under
            ``job_conf``: it already has a partition per core, or one per file when fewer.

    Returns:
        ``keep`` columns, the model's output columns, ``error_code`` and ``error_message``.
    """
    spark = df.sparkSession
    if spread and df.rdd.getNumPartitions() < spark.sparkContext.defaultParallelism:  # idle cores: worth a shuffle
        df = df.repartition(spark.sparkContext.defaultParallelism)
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    cols = [(c, types[c]) for c in keep] + list(model.outputs) + [(f.name, f.spark_type.simpleString()) for f in ERRORS]
    schema = ", ".join(f"`{c}` {t}" for c, t in cols)
    cpus = int(spark.conf.get("spark.task.cpus", "1") or 1)
    fn = ScoreBatches(
        Path(model.archive).name, model.local_path, cfg.batch_size, keep, [c for c, _ in model.outputs], cpus,
        gpu_batch_size=cfg.gpu_batch_size, gpus=cfg.gpus_per_task,
    )  # fmt: skip
    return df.select(*dict.fromkeys([*keep, "image"])).mapInPandas(fn, schema)


def _with_lineage(df: DataFrame, model: ResolvedModel, scored_at: datetime) -> DataFrame:
    from pyspark.sql import functions as F

    return (
        df.withColumn("model_name", F.lit(model.name).cast("string"))
        .withColumn("model_version", F.lit(model.version).cast("string"))
        .withColumn("model_run_id", F.lit(model.run_id).cast("string"))
        .withColumn("model_uri", F.lit(model.pinned_uri))
        .withColumn("scored_at", F.lit(scored_at).cast("timestamp"))
    )


def _listing_rows(
    spark: SparkSession, like: DataFrame, unusable: list[tuple[str, str, str, str]], model: ResolvedModel,
    scored_at: datetime,
) -> DataFrame:  # fmt: skip
    """Error rows (columns of ``like``) for the files Spark does not read: null outputs and content hash."""
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField(f.name, f.dataType, True) for f in like.schema.fields])
    fixed = {"model_name": model.name, "model_version": model.version, "model_run_id": model.run_id,
             "model_uri": model.pinned_uri, "scored_at": scored_at}  # fmt: skip
    records = []
    for path, key, reason, message in unusable:
        values = {**fixed, "source_path": path, "id": key, ERROR_CODE: reason, ERROR_MESSAGE: message}
        records.append(tuple(values.get(name) for name in schema.fieldNames()))
    return spark.createDataFrame(records, schema)


def _published_rows(spark: SparkSession, base: pub.Current | None) -> DataFrame | None:
    """The rows of the version a run started from (``Publication.base``), or None."""
    if base is None or not any(f.endswith(".parquet") for f in base.location.files(recursive=False)):
        return None
    return spark.read.parquet(base.location.spark)


def write_sorted(df: DataFrame, path: str, rows: int) -> None:
    """Write ``df`` into the new version folder ``path`` (a URL) as Parquet, ordered by ``(content_hash, source_path)``.

    ``append``: the folder already exists (it holds the version's ``_writer.json``) and is this run's own.
    """
    files = max(1, math.ceil(rows / ROWS_PER_OUTPUT_FILE))
    keys = ["content_hash", "source_path"]
    df.repartitionByRange(files, *keys).sortWithinPartitions(*keys).write.mode("append").parquet(path)


def output_checksum(summary: dict[str, Any]) -> str:
    """A checksum of what a scoring output holds: its counts, input and model (not its timings)."""
    stable = {
        k: summary[k] for k in ("input", "inputs", "scored", "failed_by_reason", "skipped", "rows") if k in summary
    }
    stable["model"] = summary.get("model", {}).get("pinned_uri")
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()


def score(
    spark: SparkSession,
    model_uri: str,
    input: str,
    output: str,
    cfg: ScoreConfig,
    incremental: bool = False,
    log_to_run: bool = True,
    tracking: Tracking | None = None,
    retention: pub.Retention | None = None,
) -> dict[str, Any]:
    """Score images with a registered model into Parquet with lineage, committed as a new version.

    Args:
        spark: The session (local mode or a cluster).
        model_uri: ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``, ``runs:/...``, a model folder).
        input: A folder or glob of images, or an ingested dataset folder.
        output: Output (``OUT/v-<id>/`` + ``OUT/_latest.json``), a local path or URL.
        cfg: Batch sizes and partitioning.
        incremental: Score only inputs whose ``content_hash`` is not in the published output and
            publish old rows ∪ new rows.
        log_to_run: Also log the summary to the model's training run as
            ``scoring/<output name>/_summary.json`` (the run report shows it).
        tracking: The MLflow server holding the model (needed for ``models:/`` and ``runs:/`` URIs).
        retention: Old versions kept (default ``publish.Retention()``).

    Returns:
        The summary (also written to ``OUTPUT/_summary.json``): ``inputs``, ``scored``, ``failed``,
        ``failed_by_reason``, ``skipped``, ``rows``, ``model``, ``seconds``, ``images_per_s``, ...

    Raises:
        ValueError: Incremental mode on an output written by a model with other output columns.
        FileNotFoundError: The input does not exist.
        publish.PublishConflict: Another run committed to ``output`` meanwhile (this version is kept).
    """

    t0 = time.perf_counter()
    if not output or not input:
        raise ValueError(f"score: expected an input and an output folder, found input={input!r} output={output!r}")
    scored_at = datetime.now(UTC).replace(microsecond=0)
    with ThreadPoolExecutor(1, thread_name_prefix="sparkvision-model") as pool:  # a listing error waits for it too
        resolving = pool.submit(resolve_model, spark, model_uri, tracking)  # downloads while the input is listed
        survey = survey_input(input)
        unusable, inputs = unusable_files(input, survey), read_input(spark, input, survey)
        model = resolving.result()
    with pub.begin(output, retention) as version:
        return _score_into(spark, version, model, input, inputs, unusable, cfg, incremental, log_to_run, tracking,
                           scored_at, t0)  # fmt: skip


def _score_into(
    spark: SparkSession, version: pub.Publication, model: ResolvedModel, input: str, inputs: DataFrame,
    unusable: list[tuple[str, str, str, str]], cfg: ScoreConfig, incremental: bool, log_to_run: bool,
    tracking: Tracking | None, scored_at: datetime, t0: float,
) -> dict[str, Any]:  # fmt: skip
    """``score`` after its input is listed (``inputs``: ``read_input``; ``unusable``: ``unusable_files``)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    output = str(version.output)
    old = _published_rows(spark, version.base) if incremental else None
    listed_before = 0
    if old is not None and unusable:  # a file never read is known by its path (it has no content hash)
        unread = old.where(F.col("content_hash").isNull() & F.col(ERROR_CODE).isin(list(LISTING_REASONS)))
        seen = {r["source_path"] for r in unread.select("source_path").collect()}
        listed_before = sum(u[0] in seen for u in unusable)
        unusable = [u for u in unusable if u[0] not in seen]
    keep = ["source_path", "content_hash", "id"]
    columns = keep + [c for c, _ in model.outputs] + list(LINEAGE) + list(ERROR_COLUMNS)
    if old is not None and set(old.columns) != set(columns):
        raise ValueError(
            f"incremental scoring into {output}: the published rows have columns {sorted(old.columns)}, "
            f"model {model.pinned_uri} writes {sorted(columns)}; score into a new output instead"
        )
    with session_conf(spark, job_conf(spark, cfg)):  # read at planning time: input partitions, Arrow batches
        todo = inputs
        if old is not None:
            todo = inputs.join(F.broadcast(old.select("content_hash").distinct()), "content_hash", "left_anti")
        files = dataset_version(input) is None
        scored = _with_lineage(apply_model(todo, model, cfg, keep, spread=not files), model, scored_at)
        scored = scored.select(*columns)
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            by_code = {r[ERROR_CODE]: r["count"] for r in scored.groupBy(ERROR_CODE).count().collect()}
            processed = sum(by_code.values())
            skipped = inputs.count() - processed + listed_before if old is not None else 0
            result = scored if old is None else old.select(*columns).unionByName(scored)
            if unusable:
                result = result.unionByName(_listing_rows(spark, scored, unusable, model, scored_at))
                for _, _, reason, _ in unusable:
                    by_code[reason] = by_code.get(reason, 0) + 1
                processed += len(unusable)
            rows = processed + (old.count() if old is not None else 0)
            write_sorted(result, version.url, rows)
        finally:
            scored.unpersist()
    failed = {str(k): int(v) for k, v in sorted((k, v) for k, v in by_code.items() if k is not None)}
    seconds = time.perf_counter() - t0
    summary = {
        "output": output,
        "input": str(input),
        "incremental": bool(incremental),
        "base_version": version.base_version if incremental else None,
        "inputs": int(processed + skipped),
        "scored": int(by_code.get(None, 0)),
        "failed": int(sum(failed.values())),
        "failed_by_reason": failed,
        "skipped": int(skipped),
        "rows": int(rows),
        "model": model.info(),
        "scored_at": scored_at.isoformat(),
        "seconds": round(seconds, 3),
        "images_per_s": round(processed / seconds, 2) if seconds > 0 else 0.0,
        "batch_size": cfg.batch_size,
        "max_records_per_batch": cfg.max_records_per_batch,
    }
    version.location.join(SUMMARY_FILE).write_text(json.dumps({**summary, "version": version.version}, indent=2))
    version.commit(output_checksum(summary), {"rows": summary["rows"], "scored": summary["scored"],
                                              "failed": summary["failed"]}, kind="scores")  # fmt: skip
    summary["version"] = version.version
    if log_to_run and model.run_id and tracking is not None:
        from sparkvision.reporting import log_scoring_summary

        try:
            summary["logged_to_run"] = log_scoring_summary(tracking, model.run_id, summary)
        except Exception as exc:  # noqa: BLE001 - the output is published; the log is a courtesy
            log.warning("could not log the scoring summary to run %s: %s", model.run_id, exc)
    log.info("scored %d images (%d failed) into %s in %.1fs", processed, summary["failed"], output, seconds)
    return summary
