"""The ingest Spark job: image files in a public layout -> Parquet tables, quarantine and manifest.

Steps:

1. The driver lists the data set and parses its annotations (``readers``) into a catalog.
2. Spark reads the image bytes (``binaryFile``), joins the catalog (a broadcast DataFrame with an
   explicit schema) and, on executors, decodes, validates, crops, resizes or tiles and encodes
   every image in one ``mapInPandas`` pass. Every input yields output rows or one quarantine row.
   The result is persisted once; everything after reads only that.
3. Duplicate contents are found (same SHA-256: the lexicographically first path is kept).
4. Rows are spread over a fixed number of files per split (at least ``max(min_row_groups,
   workers)`` files when a split has that many rows, at most ``rows_per_row_group`` rows each)
   so that every file, hence every rank's petastorm shard, holds every class in its proportion:
   each class's rows (``CLASS_COLUMN``; all rows are one class for CelebA), in the order of a
   salted hash of their id (``readers.order_key`` with ``split_seed``), are dealt round-robin
   over the files by one running counter, and each file is sorted by that hash. Nothing is
   ordered by path or label. The same inputs and configuration give the same files' rows and
   the same checksum.
5. ``data/split=*/``, ``quarantine/`` and ``manifest.json`` are written into a new version folder
   ``OUT/v-<id>/``, which is then committed by the pointer ``OUT/_latest.json`` (``publish``):
   readers of the previous version keep it, and a concurrent writer is refused, not overwritten.

Input and output may be local paths or filesystem URLs: Spark reads and writes them through its
Hadoop filesystem, the driver reads annotations and writes the manifest through ``storage``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sparkvision.config import IngestConfig, config_digest
from sparkvision.data import images, publish, readers
from sparkvision.data.schema import (
    FORMAT_TABLE,
    QUARANTINE,
    QUARANTINE_MESSAGE,
    QUARANTINE_REASON,
    SPLITS,
    TABLES,
    describe,
)
from sparkvision.spark import session_conf

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import types as T

    from sparkvision.storage import Location

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = tuple(FORMAT_TABLE)
WORK_EXTRA = ("split", "q_reason", "q_message", "q_stage", "listed", "row_hash")
"""Columns of the persisted work table besides the table's own fields (all nullable)."""
CLASS_COLUMN: dict[str, str | None] = {"celeba": None, "fabric": "label", "folder": "label"}
"""Per table, the class column whose values every file holds in proportion (None: no class)."""


RETENTION_KEYS = ("keep_versions", "keep_min_age_hours")
"""``ingest`` keys about keeping old versions, not about the data: left out of ``config_hash``."""


class IngestError(RuntimeError):
    """The job's own consistency checks failed (an input would have been lost)."""


# --------------------------------------------------------------------------- public API


def stored_image_size(fmt: str, cfg: IngestConfig) -> int:
    """Side of the stored square images: ``tile_resize`` or ``tile_size`` for fabric, else ``image_size``."""
    if FORMAT_TABLE[fmt] == "fabric":
        return cfg.tile_resize or cfg.tile_size
    return cfg.image_size


def files_per_split(rows: int, cfg: IngestConfig, workers: int) -> int:
    """How many Parquet files (row groups) a split of ``rows`` rows is written as.

    At least ``max(min_row_groups, workers)`` when there are that many rows (petastorm shards
    by row group), never fewer than needed to keep ``rows_per_row_group`` rows per file.
    """
    if rows <= 0:
        return 0
    wanted = max(cfg.min_row_groups, workers)
    return max(min(rows, wanted), math.ceil(rows / cfg.rows_per_row_group))


def ingest(
    spark: SparkSession,
    fmt: str,
    input_dir: str,
    output_dir: str,
    cfg: IngestConfig,
    workers: int,
) -> dict[str, Any]:
    """Ingest a data set in its public layout into a published Parquet dataset folder.

    Args:
        spark: The active session.
        fmt: ``celeba``, ``mvtec``, ``aitex`` or ``folder``.
        input_dir: Root of the data set in its public on-disk layout.
        output_dir: The dataset to publish a new version of (``OUT/v-<id>/`` + ``OUT/_latest.json``).
        cfg: The ``ingest`` configuration section.
        workers: Training workers that will read the data (each split gets at least that many files).

    Returns:
        The manifest, also written as ``OUT/manifest.json``. Everything outside its ``run`` key is
        identical for identical inputs and configuration.

    Raises:
        ValueError: Unknown format.
        FileNotFoundError: The layout or an annotation file is missing.
        readers.AnnotationError: An annotation file is structurally broken.
        IngestError: An input would have been lost (a bug; nothing is published).
        publish.PublishConflict: Another ingest committed to ``output_dir`` first (this version is kept).
    """
    if fmt not in FORMAT_TABLE:
        raise ValueError(f"unknown format {fmt!r}: expected one of {list(FORMATS)}")
    started = time.time()
    table = FORMAT_TABLE[fmt]
    catalog = _catalog(fmt, input_dir, cfg)
    log.info("%s %s: %d image files listed, %d annotations without image", fmt, catalog.root,
             len(catalog.entries), len(catalog.orphans))  # fmt: skip
    with publish.begin(output_dir, publish.Retention.of(cfg)) as version:
        parallelism = spark.sparkContext.defaultParallelism
        with session_conf(spark, _tuning(catalog, parallelism)):
            work = _process(spark, fmt, catalog, cfg).persist(_storage_level())
            try:
                manifest = _finish(spark, fmt, table, catalog, work, version.location, cfg, workers)
            finally:
                work.unpersist()
        manifest["output"] = str(version.output)
        manifest["run"] = {
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.time() - started, 3),
            "workers": workers,
            "spark_version": spark.version,
            "parallelism": parallelism,
            "version": version.version,
            "base_version": version.base_version,
        }
        version.location.join("manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        counts = {"rows": manifest["output_rows"], "quarantined": manifest["quarantined"], **manifest["splits"]}
        version.commit(manifest["checksum"], counts, kind=f"dataset:{fmt}")
    log.info("published %s -> %s: %d rows, %d quarantined, %.1fs", output_dir, version.version,
             manifest["output_rows"], manifest["quarantined"], time.time() - started)  # fmt: skip
    return manifest


# --------------------------------------------------------------------------- driver side


def _catalog(fmt: str, input_dir: str, cfg: IngestConfig) -> readers.Catalog:
    split = {"split_fractions": cfg.split_fractions, "split_seed": cfg.split_seed, "exclude": tuple(cfg.exclude)}
    if fmt == "celeba":
        return readers.list_celeba(input_dir, cfg.celeba_image_dir, cfg.celeba_landmarks_file,
                                   split_by_identity=cfg.split_by_identity, **split)  # fmt: skip
    if fmt == "mvtec":
        return readers.list_mvtec(input_dir, **split)
    if fmt == "aitex":
        return readers.list_aitex(input_dir, **split)
    return readers.list_folder(input_dir, **split)


def _storage_level() -> Any:
    from pyspark import StorageLevel

    return StorageLevel.MEMORY_AND_DISK


def _tuning(catalog: readers.Catalog, parallelism: int) -> dict[str, str]:
    """Session settings for many small files: a few partitions per core, bounded Arrow batches."""
    n = 200 if catalog.root.is_local else 20  # one metadata call per sampled file
    sample = sorted(catalog.entries)[:: max(1, len(catalog.entries) // n)][:n]
    sizes = [size for size in (catalog.root.join(k).size() for k in sample) if size >= 0]
    avg = max(1, int(sum(sizes) / len(sizes))) if sizes else 64 * 1024
    return {
        "spark.sql.files.maxPartitionBytes": str(128 * 1024 * 1024),
        "spark.sql.files.openCostInBytes": str(max(avg, 4096)),
        "spark.sql.files.minPartitionNum": str(parallelism * 4),
        # Arrow batches of ~16 MB of input bytes; cached column batches of bounded size.
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(int(min(1024, max(4, 16 * 1024 * 1024 // avg)))),
        "spark.sql.inMemoryColumnarStorage.batchSize": "256",
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def _catalog_schema(table: str) -> T.StructType:
    from pyspark.sql import types as T

    extra = {
        "celeba": [
            T.StructField("attributes", T.ArrayType(T.FloatType(), False), True),
            T.StructField("bbox_raw", T.ArrayType(T.IntegerType(), False), True),
            T.StructField("landmarks_raw", T.ArrayType(T.IntegerType(), False), True),
            T.StructField("identity", T.IntegerType(), True),
        ],
        "fabric": [
            T.StructField("defect_type", T.StringType(), True),
            T.StructField("split_shares", T.ArrayType(T.DoubleType(), False), True),
        ],
        "folder": [T.StructField("label", T.IntegerType(), True), T.StructField("label_name", T.StringType(), True)],
    }[table]
    return T.StructType(
        [
            T.StructField("key", T.StringType(), False),
            T.StructField("id", T.StringType(), False),
            T.StructField("split", T.StringType(), True),
            T.StructField("cat_reason", T.StringType(), True),
            T.StructField("cat_message", T.StringType(), True),
            T.StructField("mask_keys", T.ArrayType(T.StringType(), False), False),
            *extra,
        ]
    )


def _catalog_frame(spark: SparkSession, catalog: readers.Catalog, table: str) -> DataFrame:
    """The catalog as a DataFrame with an explicit schema (built from plain lists)."""
    import pandas as pd

    schema = _catalog_schema(table)
    names = schema.fieldNames()
    records = []
    for e in catalog.entries.values():
        base = {"key": e.key, "id": e.id, "split": e.split, "cat_reason": e.reason, "cat_message": e.message,
                "mask_keys": list(e.masks)}  # fmt: skip
        records.append([{**base, **e.values}.get(n) for n in names])
    pdf = pd.DataFrame.from_records(records, columns=names) if records else pd.DataFrame(columns=names)
    return spark.createDataFrame(pdf, schema=schema)


_AUTHORITY = r"^[A-Za-z][A-Za-z0-9+.-]*:(//[^/]*)?"
"""Scheme and authority of a Hadoop path (``file:``, ``hdfs://nn:8020``, ``s3a://bucket``)."""


def bare_path(path: str) -> str:
    """A Hadoop path or URL without scheme and authority: the same for ``hdfs:///d`` and ``hdfs://nn:8020/d``."""
    return re.sub(_AUTHORITY, "", path)


def relative_key(path: Any, root: Location) -> Any:
    """A Spark column: the file URL column ``path`` relative to ``root`` (``path`` itself when outside it)."""
    from pyspark.sql import functions as F

    prefix = bare_path(root.url).rstrip("/") + "/"
    bare = F.regexp_replace(path, _AUTHORITY, "")
    return F.when(bare.startswith(prefix), F.substring(bare, len(prefix) + 1, 1 << 30)).otherwise(F.col(path))


def _read_binary(spark: SparkSession, root: Location, dirs: list[str], glob: str) -> DataFrame:
    """``key`` (path relative to ``root``), ``source_path`` and ``content`` of every matching file.

    ``source_path`` is the local path for local files, else the URL Spark read.
    """
    from pyspark.sql import functions as F

    paths = [root.join(d).spark for d in dirs]
    df = (
        spark.read.format("binaryFile").option("recursiveFileLookup", "true").option("pathGlobFilter", glob).load(paths)
    )
    key = relative_key("path", root)
    return df.select(key.alias("key"), F.regexp_replace("path", "^file:", "").alias("source_path"), "content")


def _process(spark: SparkSession, fmt: str, catalog: readers.Catalog, cfg: IngestConfig) -> DataFrame:
    """The work table: one mapInPandas pass over the joined files, catalog and masks."""
    from pyspark.sql import functions as F

    table = FORMAT_TABLE[fmt]
    files = _read_binary(spark, catalog.root, catalog.read_dirs, catalog.glob)
    if catalog.excluded:  # Spark's glob still matches them: left out here, counted in the manifest
        files = files.where(~F.col("key").isin(list(catalog.excluded)))
    joined = files.join(F.broadcast(_catalog_frame(spark, catalog, table)), "key", "left")
    mask_links = [(e.key, m) for e in catalog.entries.values() for m in e.masks]
    if mask_links and catalog.mask_dirs:
        from pyspark.sql import types as T

        link_schema = T.StructType([T.StructField("key", T.StringType(), False),
                                    T.StructField("mask_key", T.StringType(), False)])  # fmt: skip
        links = spark.createDataFrame(mask_links, schema=link_schema)
        mask_files = _read_binary(spark, catalog.root, catalog.mask_dirs, catalog.mask_glob)
        if catalog.excluded:
            mask_files = mask_files.where(~F.col("key").isin(list(catalog.excluded)))
        mask_files = mask_files.select(F.col("key").alias("mask_key"), F.col("content").alias("mask_content"))
        masks = (
            links.join(mask_files, "mask_key")
            .groupBy("key")
            .agg(
                F.collect_list("mask_key").alias("found_mask_keys"), F.collect_list("mask_content").alias("found_masks")
            )  # fmt: skip
        )
        joined = joined.join(F.broadcast(masks), "key", "left")
    else:
        joined = joined.withColumn("found_mask_keys", F.lit(None).cast("array<string>")).withColumn(
            "found_masks", F.lit(None).cast("array<binary>")
        )
    processor = _Processor(table=table, cfg=cfg)
    return joined.mapInPandas(processor, schema=work_schema(table))


def work_schema(table: str) -> T.StructType:
    """Schema of the work table: the table's fields (nullable) plus ``WORK_EXTRA``."""
    from pyspark.sql import types as T

    fields = [T.StructField(f.name, f.spark_type, True) for f in TABLES[table]]
    fields += [T.StructField(n, T.BooleanType() if n == "listed" else T.StringType(), True) for n in WORK_EXTRA]
    return T.StructType(fields)


def _finish(
    spark: SparkSession,
    fmt: str,
    table: str,
    catalog: readers.Catalog,
    work: DataFrame,
    staging: Location,
    cfg: IngestConfig,
    workers: int,
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    started = time.time()
    # One pass over the work table fills the cache and gives the per-input facts.
    facts = (
        work.groupBy("source_path", "content_hash", "listed")
        .agg(F.max(F.col("q_reason")).alias("q_reason"), F.count("*").alias("rows"))
        .collect()
    )
    log.info("processed %d input files (%.1fs)", len(facts), time.time() - started)
    empty = _unread_empty_files(catalog, facts)
    losers = _duplicates(facts)
    label = CLASS_COLUMN[table]
    fields = ["split", "id", "row_hash", "source_path", *([label] if label else [])]
    data_rows = work.where(F.col("q_reason").isNull()).select(*fields).collect()
    kept = [r for r in data_rows if r["source_path"] not in losers]
    ids = Counter(r["id"] for r in kept)
    dup_ids = [i for i, n in ids.items() if n > 1]
    if dup_ids:
        raise IngestError(f"{catalog.root}: row id {sorted(dup_ids)[0]!r} produced {ids[sorted(dup_ids)[0]]} times; "
                          "ids must be unique (two inputs with the same relative name?)")  # fmt: skip
    by_split: dict[str, dict[str, Any]] = {
        s: {r["id"]: r[label] if label else None for r in kept if r["split"] == s} for s in SPLITS
    }
    checksum = hashlib.sha256()
    for digest in sorted(f"{r['split']}:{r['row_hash']}" for r in kept):
        checksum.update(digest.encode())

    log.info("collected %d row ids (%.1fs)", len(kept), time.time() - started)
    plan = _file_plan(by_split, cfg, workers)
    _write_data(spark, work, plan, table, staging.join("data"))
    log.info("wrote %d rows in %d files (%.1fs)", len(kept), sum(map(len, plan.values())), time.time() - started)
    quarantine_rows = _write_quarantine(spark, work, facts, losers, empty, catalog, staging.join("quarantine"))
    log.info("wrote %d quarantine rows (%.1fs)", sum(quarantine_rows.values()), time.time() - started)

    source_images = len({r["source_path"] for r in kept})
    quarantined = sum(quarantine_rows.values())
    input_files = len(facts) + len(empty) + len(catalog.skipped) + len(catalog.orphans)
    if input_files != source_images + quarantined:
        raise IngestError(f"{catalog.root}: {input_files} inputs but {source_images} in the output and "
                          f"{quarantined} quarantined; an input was lost")  # fmt: skip
    manifest: dict[str, Any] = {
        "format": fmt,
        "table": table,
        "input_dir": str(catalog.root),
        "input_files": input_files,
        "image_files": len(facts) + len(empty),
        "skipped_files": len(catalog.skipped),
        "excluded_files": len(catalog.excluded),
        "files_on_disk": len(facts) + len(empty) + len(catalog.skipped) + len(catalog.excluded),
        "annotations_without_image": len(catalog.orphans),
        "source_images": source_images,
        "output_rows": len(kept),
        "quarantined": quarantined,
        "quarantine_by_reason": dict(sorted(quarantine_rows.items())),
        "splits": {s: len(by_split[s]) for s in SPLITS},
        "files_per_split": {s: len(plan.get(s, [])) for s in SPLITS},
        "schema": describe(TABLES[table]),
        "image_size": stored_image_size(fmt, cfg),
        "config_hash": config_digest(cfg, exclude=RETENTION_KEYS),
        "config": {
            k: v
            for k, v in json.loads(json.dumps(dataclasses.asdict(cfg), default=list)).items()
            if k not in RETENTION_KEYS
        },  # fmt: skip
        "checksum": checksum.hexdigest(),
        **{k: v for k, v in catalog.info.items() if v},
    }
    return manifest


def _unread_empty_files(catalog: readers.Catalog, facts: list[Any]) -> list[str]:
    """Listed files Spark did not read: empty files (its file scan skips them), else an error."""
    read = {bare_path(f["source_path"]) for f in facts if f["listed"]}
    unread = [catalog.root.join(key) for key in catalog.entries if bare_path(catalog.root.join(key).url) not in read]
    sizes = {str(loc): loc.size() for loc in unread}
    lost = [p for p, size in sizes.items() if size != 0]
    if lost:
        raise IngestError(f"{catalog.root}: listed {len(catalog.entries)} image files, but Spark did not read "
                          f"{len(lost)} of them (first: {lost[0]}); were files changed during the ingest?")  # fmt: skip
    return sorted(sizes)


def _duplicates(facts: list[Any]) -> dict[str, str]:
    """``{path: kept path}`` of inputs whose non-empty bytes equal those of a lexicographically earlier path."""
    groups: dict[str, list[str]] = {}
    for f in facts:
        if f["content_hash"] is not None and f["q_reason"] != images.ZERO_BYTES:
            groups.setdefault(f["content_hash"], []).append(f["source_path"])
    losers = {}
    for paths in groups.values():
        first, *rest = sorted(paths)
        losers.update({p: first for p in rest})
    if losers:
        log.info("%d duplicate files", len(losers))
    return losers


def _file_plan(by_split: dict[str, dict[str, Any]], cfg: IngestConfig, workers: int) -> dict[str, list[list[str]]]:
    """For each split with rows, the ids of each of its ``files_per_split`` files, in file order.

    ``by_split`` maps each split's ids to their class (None when the table has none). The rows
    are taken class by class (classes in sorted order), each class in ``order_key`` order, and
    dealt round-robin over the files by one running counter: every file gets the floor or the
    ceiling of each class's share, and file sizes differ by at most one row. Each file is then
    sorted by ``order_key``.
    """
    plan: dict[str, list[list[str]]] = {}
    for split, classes in by_split.items():
        k = files_per_split(len(classes), cfg, workers)
        if not k:
            continue
        key = {i: (readers.order_key(i, cfg.split_seed), i) for i in classes}
        dealt = sorted(classes, key=lambda i: (-1 if classes[i] is None else classes[i], key[i]))
        plan[split] = [sorted(dealt[f::k], key=key.__getitem__) for f in range(k)]
    return plan


def _bucket_keys(spark: SparkSession, buckets: int) -> list[int]:
    """For each partition p < buckets, a long whose Spark hash puts it in partition p.

    ``repartition(n, col)`` places a row in ``pmod(hash(col), n)``; choosing these values as the
    column makes each file group exactly one partition, hence exactly one file.
    """
    from pyspark.sql import functions as F

    rows = (
        spark.range(0, buckets * 64)
        .select("id", F.expr(f"pmod(hash(id), {buckets})").alias("p"))
        .groupBy("p")
        .agg(F.min("id").alias("id"))
        .collect()
    )
    found = {r["p"]: r["id"] for r in rows}
    if len(found) != buckets:
        raise IngestError(f"found hash keys for {len(found)} of {buckets} partitions")
    return [found[p] for p in range(buckets)]


def _write_data(
    spark: SparkSession,
    work: DataFrame,
    plan: dict[str, list[list[str]]],
    table: str,
    out: Location,
) -> None:
    """Write ``out/split=<s>/`` as exactly the files of ``plan[s]``, each holding its ids in plan order.

    Every id gets its file's partition key (``_bucket``) and its position in the file
    (``_order``); one partition per file is sorted by ``_order`` and both columns are dropped.
    Only ids in ``plan`` are written (duplicates are already left out of it).

    Raises:
        IngestError: A file's row count differs from the plan.
    """
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    total = sum(len(v) for v in plan.values())
    if not total:
        out.mkdirs()
        return
    keys = iter(_bucket_keys(spark, total))
    ids: list[str] = []
    buckets: list[int] = []
    order: list[int] = []
    for split in SPLITS:
        for file_ids in plan.get(split, []):
            bucket = next(keys)
            ids.extend(file_ids)
            buckets.extend([bucket] * len(file_ids))
            order.extend(range(len(file_ids)))
    schema = T.StructType([T.StructField("id", T.StringType(), False), T.StructField("_bucket", T.LongType(), False),
                           T.StructField("_order", T.LongType(), False)])  # fmt: skip
    frame = pd.DataFrame({"id": ids, "_bucket": pd.Series(buckets, dtype="int64"),
                          "_order": pd.Series(order, dtype="int64")})  # fmt: skip
    mapping = spark.createDataFrame(frame, schema)
    columns = [f.name for f in TABLES[table]]
    (
        work.where(F.col("q_reason").isNull())
        .join(F.broadcast(mapping), "id")
        .repartition(total, "_bucket")
        .sortWithinPartitions("split", "_order")
        .select(*columns, "split")
        .write.partitionBy("split")
        .parquet(out.spark)
    )
    for split in SPLITS:
        # part-<partition>-...: partition i of a split holds its file i of the plan
        folder = out.join(f"split={split}")
        names = [f for f in folder.files(recursive=False) if f.endswith(".parquet")]
        files = [folder.join(f) for f in sorted(names, key=lambda f: int(f.split("-")[1]))]
        expected = [len(f) for f in plan.get(split, [])]
        found = [_parquet_rows(f) for f in files]
        if len(found) != len(expected):
            raise IngestError(f"{out}/split={split}: expected {sum(expected)} rows in {len(expected)} files, "
                              f"found {sum(found)} rows in {len(found)} files")  # fmt: skip
        wrong = next((i for i, (e, f) in enumerate(zip(expected, found, strict=True)) if e != f), None)
        if wrong is not None:
            raise IngestError(f"{files[wrong]}: expected {expected[wrong]} rows (file {wrong + 1} of split "
                              f"{split}), found {found[wrong]}")  # fmt: skip


def _parquet_rows(path: Location) -> int:
    import pyarrow.parquet as pq

    with path.open_input() as fh:
        return int(pq.ParquetFile(fh).metadata.num_rows)


def _write_quarantine(
    spark: SparkSession,
    work: DataFrame,
    facts: list[Any],
    losers: dict[str, str],
    empty: list[str],
    catalog: readers.Catalog,
    out: Location,
) -> Counter[str]:
    """Write the quarantine table (one file, sorted by path); returns rows per reason."""
    from pyspark.sql import functions as F

    from sparkvision.data.schema import spark_schema

    schema = spark_schema(QUARANTINE)
    q = work.where(F.col("q_reason").isNotNull()).select(
        "source_path", "content_hash", F.col("q_reason").alias(QUARANTINE_REASON),
        F.col("q_message").alias(QUARANTINE_MESSAGE),
        F.col("q_stage").alias("stage"),
    )  # fmt: skip
    counts = Counter(f["q_reason"] for f in facts if f["q_reason"] is not None and f["source_path"] not in losers)
    hashes = {f["source_path"]: f["content_hash"] for f in facts if f["source_path"] in losers}
    if losers:
        gone = spark.createDataFrame([(p,) for p in losers], "source_path string")
        q = q.join(F.broadcast(gone), "source_path", "left_anti")
    extra = [
        (p, hashes[p], images.DUPLICATE_CONTENT, f"{p}: same content (sha256 {hashes[p]}) as {kept}", "dedupe")
        for p, kept in sorted(losers.items())
    ]
    zero = images.content_hash(b"")
    extra += [(p, zero, images.ZERO_BYTES, f"{p}: file is empty (0 bytes)", "read") for p in empty]
    extra += [(o.source, None, images.MISSING_IMAGE, f"{o.source}: {o.message}", "annotate") for o in catalog.orphans]
    extra += [(str(catalog.root.join(k.key)), None, k.reason, k.message, "list") for k in catalog.skipped]
    counts.update(row[2] for row in extra)
    if extra:
        q = q.unionByName(spark.createDataFrame(extra, schema=schema))
    q.repartition(1).sortWithinPartitions("source_path", QUARANTINE_REASON).write.parquet(out.spark)
    written = sum(_parquet_rows(out.join(f)) for f in out.files(recursive=False) if f.endswith(".parquet"))
    if written != sum(counts.values()):
        raise IngestError(f"{out}: expected {sum(counts.values())} quarantine rows written, found {written}")
    return counts


# --------------------------------------------------------------------------- executor side


@dataclasses.dataclass(frozen=True)
class _Processor:
    """The ``mapInPandas`` function: pickled to executors, imports its heavy modules there."""

    table: str
    cfg: IngestConfig
    flush_bytes: int = 16 * 1024 * 1024

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        columns = work_schema(self.table).fieldNames()
        handler = {"celeba": self._celeba, "fabric": self._fabric, "folder": self._folder}[self.table]
        out: list[dict[str, Any]] = []
        size = 0
        for batch in batches:
            for rec in batch.to_dict("records"):
                for row in self._one(rec, handler):
                    out.append(row)
                    size += len(row.get("image") or b"") + len(row.get("mask") or b"")
                    if size >= self.flush_bytes:
                        yield _frame(out, columns)
                        out, size = [], 0
        if out:
            yield _frame(out, columns)

    def _one(self, rec: dict[str, Any], handler: Callable[..., list[dict[str, Any]]]) -> list[dict[str, Any]]:
        data: bytes = rec["content"] if rec["content"] is not None else b""
        src: str = rec["source_path"]
        base = {"source_path": src, "content_hash": images.content_hash(data), "listed": rec["id"] is not None}

        def quarantine(reason: str, message: str, stage: str) -> list[dict[str, Any]]:
            return [{**base, "q_reason": reason, "q_message": message, "q_stage": stage}]

        c = self.cfg
        try:
            img = images.decode_image(data, c.allowed_modes, c.min_side, c.expected_size)
        except images.ImageError as exc:
            return quarantine(
                exc.reason, f"{src}: {exc.message}", "read" if exc.reason == images.ZERO_BYTES else "decode"
            )
        if rec["id"] is None:
            return quarantine(images.MISSING_ANNOTATION, f"{src}: not listed in the data set layout", "annotate")
        if rec["cat_reason"] is not None:
            return quarantine(rec["cat_reason"], rec["cat_message"], "annotate")
        try:
            rows = handler(rec, images.to_rgb(img))
        except images.ImageError as exc:
            return quarantine(exc.reason, f"{src}: {exc.message}", "annotate")
        for row in rows:
            row.update(base, split=rec["split"])
            if self.table == "fabric" and not c.split_by_source_image:
                row["split"] = readers.hash_split(row["id"], list(rec["split_shares"]), c.split_seed)
            row["row_hash"] = _row_digest(row, self.table)
        return rows

    def _common(self, img: Any) -> dict[str, Any]:
        data = images.encode_png(img, self.cfg.png_compress_level)
        return {"image": data, "height": img.height, "width": img.width, "channels": 3}

    def _celeba(self, rec: dict[str, Any], img: Any) -> list[dict[str, Any]]:
        import numpy as np

        x, y, w, h = (int(v) for v in rec["bbox_raw"])
        face = images.Box(x, y, x + w, y + h)
        crop = images.crop_box(img.width, img.height, self.cfg.crop, face)
        out = images.crop_resize(img, crop, self.cfg.image_size)
        points = np.asarray(rec["landmarks_raw"], dtype=np.float64).reshape(5, 2)
        return [
            {
                **self._common(out),
                "id": rec["id"],
                "attributes": [float(v) for v in rec["attributes"]],
                "bbox": images.project_box(face, crop),
                "landmarks": [float(v) for v in images.project_points(points, crop).reshape(-1)],
                "identity": int(rec["identity"]),
            }
        ]

    def _folder(self, rec: dict[str, Any], img: Any) -> list[dict[str, Any]]:
        crop = images.crop_box(img.width, img.height, self.cfg.crop)
        out = images.crop_resize(img, crop, self.cfg.image_size)
        return [{**self._common(out), "id": rec["id"], "label": int(rec["label"]), "label_name": rec["label_name"]}]

    def _fabric(self, rec: dict[str, Any], img: Any) -> list[dict[str, Any]]:
        import numpy as np
        from PIL import Image

        from sparkvision.data import tiling

        c = self.cfg
        mask = self._mask(rec, img.size)
        if min(img.size) < c.tile_size:
            raise images.ImageError(images.UNEXPECTED_SIZE, f"expected sides >= tile_size {c.tile_size}px, "
                                    f"found {img.width}x{img.height}")  # fmt: skip
        side = c.tile_resize or c.tile_size
        rows = []
        for x, y in tiling.tile_grid(img.width, img.height, c.tile_size, c.tile_stride):
            patch = img.crop((x, y, x + c.tile_size, y + c.tile_size))
            pmask = mask[y : y + c.tile_size, x : x + c.tile_size]
            regions = tiling.mask_regions(pmask)
            mimg = Image.fromarray(pmask.astype(np.uint8) * 255, mode="L")
            if side != c.tile_size:
                patch = patch.resize((side, side), Image.Resampling.BILINEAR)
                mimg = mimg.resize((side, side), Image.Resampling.NEAREST)
            label = int(regions.coverage > 0 and regions.coverage >= c.min_defect_coverage)
            rows.append(
                {
                    **self._common(patch),
                    "id": f"{rec['id']}#x{x:05d}y{y:05d}",
                    "source_id": rec["id"],
                    "tile_x": x,
                    "tile_y": y,
                    "label": label,
                    "defect_type": rec["defect_type"] if label else "good",
                    "mask": images.encode_png(mimg, c.png_compress_level),
                    "mask_coverage": regions.coverage,
                    "bbox": regions.largest,
                    "boxes": regions.boxes,
                }
            )
        return rows

    def _mask(self, rec: dict[str, Any], size: tuple[int, int]) -> Any:
        """Union of the image's mask files as a boolean ``(H, W)`` array (all False for good images)."""
        import numpy as np

        expected = list(rec["mask_keys"]) if rec["mask_keys"] is not None else []
        found = dict(zip(list(rec["found_mask_keys"] or []), list(rec["found_masks"] or []), strict=True))
        mask = np.zeros((size[1], size[0]), dtype=bool)
        if not expected:
            return mask
        present = [k for k in expected if k in found]
        if not present:
            raise images.ImageError(images.MISSING_ANNOTATION, f"defect image needs mask {expected[0]}, not found")
        for key in present:
            try:
                m = images.decode_image(found[key], ("1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I"))
            except images.ImageError as exc:
                raise images.ImageError(images.MALFORMED_ANNOTATION, f"mask {key}: {exc.message}") from None
            if m.size != size:
                raise images.ImageError(images.MALFORMED_ANNOTATION, f"mask {key}: expected {size[0]}x{size[1]} like "
                                        f"the image, found {m.width}x{m.height}")  # fmt: skip
            mask |= np.asarray(m.convert("L")) > 127
        return mask


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Rows as object columns: absent values stay None (a NaN would not convert to an Arrow list)."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object) for c in columns})


def _row_digest(row: dict[str, Any], table: str) -> str:
    """SHA-256 of a row's stored values (binary columns by their own digest, floats as float32)."""
    import numpy as np

    h = hashlib.sha256()
    for f in TABLES[table]:
        value = row.get(f.name)
        if isinstance(value, bytes | bytearray):
            part = hashlib.sha256(value).digest()
        elif isinstance(value, list):
            part = np.asarray(value, dtype=f.numpy_dtype).tobytes()
        elif f.numpy_dtype == "float32":
            part = np.float32(value).tobytes()
        else:
            part = str(value).encode()
        h.update(f.name.encode() + b"=" + part + b";")
    h.update(f"split={row['split']}".encode())
    return h.hexdigest()
