"""The ingest Spark job: image files in a public layout -> Parquet tables, quarantine and manifest.

Steps:

1. The driver lists the data set and parses its annotations (``readers``) into a catalog: every
   image file, its split and class, and what its annotations say is wrong with it.
2. From the catalog alone the driver plans the output files: each split is spread over a fixed
   number of files (at least ``max(min_row_groups, workers)`` when it has that many rows, at most
   ``rows_per_row_group`` rows each) so that every file, hence every rank's petastorm shard, holds
   every class in its proportion: each class's rows (``CLASS_COLUMN``; all rows are one class for
   CelebA), in the order of a salted hash of their id (``readers.order_key`` with ``split_seed``),
   are dealt round-robin over the files by one running counter, and each file is sorted by that
   hash. Nothing is ordered by path or label.
3. One pass over the image bytes: one Spark task per planned file reads its images, decodes,
   validates, crops, resizes or tiles and encodes them, and writes its Parquet file itself
   (pyarrow, the types Spark writes, whole or not at all). No image bytes are shuffled or
   cached; each task returns one small fact per input file (path, content hash, quarantine
   reason, row digests), the only per-input data the driver collects.
4. Duplicate contents are found from the hashes (same SHA-256: the lexicographically first path is
   kept). When quarantined or duplicate inputs leave a split's files off the plan the kept rows
   would give (and always for fabric, whose tiles are known only after decoding), that split is
   re-dealt from the Parquet just written (``_redeal``: PNG bytes, nothing decoded again). A clean
   data set is written in the single pass. The same inputs and configuration give the same
   files' rows and the same checksum.
5. ``data/split=*/``, ``quarantine/`` and ``manifest.json`` are written into a new version folder
   ``OUT/v-<id>/``, which is then committed by the pointer ``OUT/_latest.json`` (``publish``):
   readers of the previous version keep it, and a concurrent writer is refused, not overwritten.

Input and output may be local paths or filesystem URLs: tasks and the driver read and write them
through ``storage`` (pyarrow filesystems); only a re-deal goes through Spark's Hadoop filesystem.
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

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from sparkvision.storage import Location

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = tuple(FORMAT_TABLE)
PART_TAG = "sv"
"""File names are ``part-<n>-sv.snappy.parquet``: fixed, so a retried task rewrites the same file."""
STAGED_ROWS = "_tiles"
"""Folder of a version where fabric tiles are written by the single pass before ``_redeal``."""
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
        manifest = _ingest_into(spark, fmt, table, catalog, version.location, cfg, workers)
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


def _ingest_into(
    spark: SparkSession,
    fmt: str,
    table: str,
    catalog: readers.Catalog,
    staging: Location,
    cfg: IngestConfig,
    workers: int,
) -> dict[str, Any]:
    """Write ``data/``, ``quarantine/`` of the new version ``staging``; return the manifest (no ``run``)."""
    started = time.time()
    data = staging.join("data")
    planned, groups = _groups(catalog, table, cfg, workers, spark.sparkContext.defaultParallelism)
    first = data if planned is not None else staging.join(STAGED_ROWS)
    writer = _GroupWriter(table, cfg, catalog.root, first, frozenset(catalog.excluded))
    tasks = _task_bins(groups, spark.sparkContext.defaultParallelism)
    facts = spark.sparkContext.parallelize(tasks, len(tasks)).mapPartitions(writer).collect() if tasks else []
    facts.sort(key=lambda f: f.pop("group"))  # plan order again (stable: record order within a group)
    log.info("processed %d input files in one pass (%.1fs)", len(facts), time.time() - started)
    if len(facts) != len(catalog.entries):
        raise IngestError(f"{catalog.root}: listed {len(catalog.entries)} image files, but {len(facts)} were "
                          "processed; an input was lost")  # fmt: skip
    losers = _duplicates(facts)
    kept = [row for f in facts if f["q_reason"] is None and f["source_path"] not in losers for row in f["rows"]]
    ids = Counter(row[1] for row in kept)
    dup_ids = sorted(i for i, n in ids.items() if n > 1)
    if dup_ids:
        raise IngestError(f"{catalog.root}: row id {dup_ids[0]!r} produced {ids[dup_ids[0]]} times; "
                          "ids must be unique (two inputs with the same relative name?)")  # fmt: skip
    by_split: dict[str, dict[str, Any]] = {s: {} for s in SPLITS}
    for split, row_id, _, label in kept:
        by_split[split][row_id] = label
    checksum = hashlib.sha256()
    for digest in sorted(f"{split}:{row_hash}" for split, _, row_hash, _ in kept):
        checksum.update(digest.encode())
    plan = _file_plan(by_split, cfg, workers)
    redo = [s for s in SPLITS if planned is None or plan.get(s) != planned.get(s)]
    if redo:  # quarantined or duplicate rows left the planned files unbalanced, or tiles were not plannable
        _redeal(spark, first, data, {s: plan[s] for s in redo if s in plan}, redo, table)
        log.info("re-dealt splits %s over their files (%.1fs)", ", ".join(redo), time.time() - started)
    _check_files(data, plan)
    if not data.is_dir():  # nothing usable: an empty data folder, as readers expect one
        data.mkdirs()
    log.info("wrote %d rows in %d files (%.1fs)", len(kept), sum(map(len, plan.values())), time.time() - started)
    quarantine_rows = _write_quarantine(facts, losers, catalog, staging.join("quarantine"))
    log.info("wrote %d quarantine rows (%.1fs)", sum(quarantine_rows.values()), time.time() - started)

    source_images = len({f["source_path"] for f in facts if f["q_reason"] is None and f["source_path"] not in losers
                         and f["rows"]})  # fmt: skip
    quarantined = sum(quarantine_rows.values())
    input_files = len(facts) + len(catalog.skipped) + len(catalog.orphans)
    if input_files != source_images + quarantined:
        raise IngestError(f"{catalog.root}: {input_files} inputs but {source_images} in the output and "
                          f"{quarantined} quarantined; an input was lost")  # fmt: skip
    return {
        "format": fmt,
        "table": table,
        "input_dir": str(catalog.root),
        "input_files": input_files,
        "image_files": len(facts),
        "skipped_files": len(catalog.skipped),
        "excluded_files": len(catalog.excluded),
        "files_on_disk": len(facts) + len(catalog.skipped) + len(catalog.excluded),
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


def _record(entry: readers.CatalogEntry) -> dict[str, Any]:
    """What an executor needs of a catalog entry (plain values: pickled into the task)."""
    return {"key": entry.key, "id": entry.id, "split": entry.split, "cat_reason": entry.reason,
            "cat_message": entry.message, "mask_keys": list(entry.masks), **entry.values}  # fmt: skip


def _groups(
    catalog: readers.Catalog, table: str, cfg: IngestConfig, workers: int, parallelism: int
) -> tuple[dict[str, list[list[str]]] | None, list[dict[str, Any]]]:
    """The plan of output files decided from the catalog alone, and the task groups that write it.

    CelebA and folder rows are one per image with split and class known from the listing: the
    plan is ``_file_plan`` of every entry the annotations accept, and group ``(split, file)``
    reads, decodes and writes exactly that file. Entries quarantined by their annotations are
    still read (for their content hash and decode errors) by the groups in turn. Fabric rows are
    tiles whose number and labels are known only after decoding: the plan is None and groups of
    source images write staging files that ``_redeal`` spreads over the planned files.
    """
    entries = [catalog.entries[k] for k in sorted(catalog.entries)]
    label = CLASS_COLUMN[table]
    if table == "fabric":
        count = max(2 * parallelism, math.ceil(len(entries) / 64)) if entries else 0
        groups = [{"split": None, "file": g, "records": [_record(e) for e in entries[g::count]]} for g in range(count)]
        return None, [g for g in groups if g["records"]]
    plannable = [e for e in entries if e.reason is None and e.split is not None]
    by_id = {e.id: e for e in plannable}
    if len(by_id) != len(plannable):  # readers give each entry its key (or its path below one folder) as id
        ids = Counter(e.id for e in plannable)
        twice = sorted(i for i, n in ids.items() if n > 1)[0]
        raise IngestError(f"{catalog.root}: row id {twice!r} is listed {ids[twice]} times; ids must be unique")
    by_split: dict[str, dict[str, Any]] = {s: {} for s in SPLITS}
    for e in plannable:
        by_split[e.split][e.id] = e.values.get(label) if label else None  # type: ignore[index]
    plan = _file_plan(by_split, cfg, workers)
    groups = [{"split": s, "file": f, "records": [_record(by_id[i]) for i in ids]}
              for s in SPLITS for f, ids in enumerate(plan.get(s, []))]  # fmt: skip
    rest = [e for e in entries if e.reason is not None or e.split is None]
    if rest and not groups:
        groups = [{"split": None, "file": None, "records": []} for _ in range(min(len(rest), 2 * parallelism))]
    for i, e in enumerate(rest):
        groups[i % len(groups)]["records"].append(_record(e))
    return plan, groups


TASK_ROWS = 8192
"""Rows above which the single pass adds tasks beyond ``2 x parallelism`` (``_task_bins``)."""


def _task_bins(groups: list[dict[str, Any]], parallelism: int) -> list[list[tuple[int, dict[str, Any]]]]:
    """The groups, numbered, dealt into Spark tasks of about equal rows: ``2 x parallelism``
    tasks, or one per ``TASK_ROWS`` rows when that is more, rounded up to whole rounds of
    ``parallelism`` tasks (5 equal tasks on 2 cores would leave one core a third round), and
    never more than one per group.

    A PySpark task costs about 0.1 s of scheduling and worker round trip on 2 local cores, as much
    as decoding 50 images; one task per planned file (48 at 20,000 images) spent 10% of ingest
    there. The row bound keeps a big input spread over executors that register after the job
    starts (``defaultParallelism`` counts only those already there) and keeps a retried task
    small. Longest group first onto the least-loaded task (ties to the lowest task), so the
    deal is the same on every rerun and no core waits at the end for one long task.
    """
    if not groups:
        return []
    rows, cores = sum(len(g["records"]) for g in groups), max(parallelism, 1)
    wanted = max(2 * cores, math.ceil(rows / TASK_ROWS))
    count = min(len(groups), math.ceil(wanted / cores) * cores)  # whole rounds: no core runs an extra one
    bins: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in range(count)]
    load = [0] * count
    for i in sorted(range(len(groups)), key=lambda i: (-len(groups[i]["records"]), i)):
        b = min(range(count), key=lambda b: (load[b], b))
        bins[b].append((i, groups[i]))
        load[b] += len(groups[i]["records"])
    return [sorted(b, key=lambda item: item[0]) for b in bins]


def _duplicates(facts: list[dict[str, Any]]) -> dict[str, str]:
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


def _redeal(
    spark: SparkSession, source: Location, data: Location, plan: dict[str, list[list[str]]], splits: list[str],
    table: str,
) -> None:  # fmt: skip
    """Rewrite ``data/split=<s>/`` for ``splits`` as the files of ``plan`` from the rows under ``source``.

    The rows are read back from the Parquet the single pass wrote (PNG bytes, nothing decoded
    again). When ``source`` is ``data`` itself the rows are first checkpointed on the executors
    and the old files of those splits removed; a staging ``source`` is removed afterwards.
    """
    from pyspark.sql import functions as F

    folders = [source.join(f"split={s}") for s in splits if source.join(f"split={s}").is_dir()]
    rows = None
    if folders:
        rows = spark.read.option("basePath", source.spark).parquet(*[f.spark for f in folders])
        rows = rows.withColumn("split", F.col("split").cast("string"))
        if source == data:
            rows = rows.localCheckpoint(eager=True)
    if source == data:
        for folder in folders:
            folder.delete_dir()
    if rows is not None and plan:
        _write_data(spark, rows, plan, table, data)
    if source != data:
        source.delete_dir()


def _write_data(
    spark: SparkSession,
    rows: DataFrame,
    plan: dict[str, list[list[str]]],
    table: str,
    out: Location,
) -> None:
    """Write ``out/split=<s>/`` as exactly the files of ``plan[s]``, each holding its ids in plan order.

    Every id gets its file's partition key (``_bucket``) and its position in the file
    (``_order``); one partition per file is sorted by ``_order`` and both columns are dropped.
    Only ids in ``plan`` are written (duplicates are already left out of it).
    """
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    total = sum(len(v) for v in plan.values())
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
        rows.join(F.broadcast(mapping), "id")
        .repartition(total, "_bucket")
        .sortWithinPartitions("split", "_order")
        .select(*columns, "split")
        .write.mode("append")
        .partitionBy("split")
        .parquet(out.spark)
    )


def _check_files(data: Location, plan: dict[str, list[list[str]]]) -> None:
    """Each split folder holds exactly the planned files (in name order) with the planned row counts.

    Raises:
        IngestError: A file is missing or extra, or its row count differs from the plan.
    """
    for split in SPLITS:
        # part-<n>-...: the n-th file of a split holds its file n of the plan
        folder = data.join(f"split={split}")
        names = [f for f in folder.files(recursive=False) if f.endswith(".parquet")] if folder.is_dir() else []
        files = [folder.join(f) for f in sorted(names, key=lambda f: int(f.split("-")[1]))]
        expected = [len(f) for f in plan.get(split, [])]
        found = [_parquet_rows(f) for f in files]
        if len(found) != len(expected):
            raise IngestError(f"{data}/split={split}: expected {sum(expected)} rows in {len(expected)} files, "
                              f"found {sum(found)} rows in {len(found)} files")  # fmt: skip
        wrong = next((i for i, (e, f) in enumerate(zip(expected, found, strict=True)) if e != f), None)
        if wrong is not None:
            raise IngestError(f"{files[wrong]}: expected {expected[wrong]} rows (file {wrong + 1} of split "
                              f"{split}), found {found[wrong]}")  # fmt: skip


def _parquet_rows(path: Location) -> int:
    import pyarrow.parquet as pq

    with path.open_input() as fh:
        return int(pq.ParquetFile(fh).metadata.num_rows)


def write_parquet(path: Location, rows: list[dict[str, Any]], fields: tuple[Any, ...]) -> None:
    """Write ``rows`` as one Parquet file (one row group, snappy) with the types Spark would write.

    The file appears whole or not at all (``Location.write_bytes``), so a retried or speculative
    task that writes the same file again leaves one correct copy, on local disks and object stores.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkvision.data.schema import arrow_schema

    schema = arrow_schema(fields)
    table = pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in fields}, schema=schema)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="snappy", use_compliant_nested_type=True)
    path.write_bytes(buf.getvalue().to_pybytes(), durable=False)  # the version's pointer commits it


def _write_quarantine(
    facts: list[dict[str, Any]], losers: dict[str, str], catalog: readers.Catalog, out: Location
) -> Counter[str]:
    """Write the quarantine table (one file, sorted by path); returns rows per reason."""
    rows = [
        {"source_path": f["source_path"], "content_hash": f["content_hash"], QUARANTINE_REASON: f["q_reason"],
         QUARANTINE_MESSAGE: f["q_message"], "stage": f["q_stage"]}
        for f in facts
        if f["q_reason"] is not None and f["source_path"] not in losers
    ]  # fmt: skip
    hashes = {f["source_path"]: f["content_hash"] for f in facts if f["source_path"] in losers}
    extra = [
        (p, hashes[p], images.DUPLICATE_CONTENT, f"{p}: same content (sha256 {hashes[p]}) as {kept}", "dedupe")
        for p, kept in sorted(losers.items())
    ]
    extra += [(o.source, None, images.MISSING_IMAGE, f"{o.source}: {o.message}", "annotate") for o in catalog.orphans]
    extra += [(str(catalog.root.join(k.key)), None, k.reason, k.message, "list") for k in catalog.skipped]
    names = ("source_path", "content_hash", QUARANTINE_REASON, QUARANTINE_MESSAGE, "stage")
    rows += [dict(zip(names, row, strict=True)) for row in extra]
    rows.sort(key=lambda r: (r["source_path"], r[QUARANTINE_REASON]))
    write_parquet(out.join(f"part-00000-{PART_TAG}.snappy.parquet"), rows, QUARANTINE)
    return Counter(r[QUARANTINE_REASON] for r in rows)


# --------------------------------------------------------------------------- executor side


@dataclasses.dataclass(frozen=True)
class _GroupWriter:
    """The ``mapPartitions`` function of the single pass: numbered task groups in (``_task_bins``), their facts out.

    For each record of the group it reads the file, decodes, validates, crops, resizes or tiles
    and encodes it, then writes the group's rows as ``out/split=<s>/part-<file>-sv.snappy.parquet``
    (in record order, which is plan order). It yields one fact per input file: path, content
    hash, quarantine reason/message/stage, ``rows`` = ``(split, id, row_hash, class)`` per row and
    ``group``, the group's number.
    Pickled to executors; imports its heavy modules there.
    """

    table: str
    cfg: IngestConfig
    root: Location
    out: Location
    excluded: frozenset[str] = frozenset()

    def __call__(self, tasks: Iterator[list[tuple[int, dict[str, Any]]]]) -> Iterator[dict[str, Any]]:
        handler = {"celeba": self._celeba, "fabric": self._fabric, "folder": self._folder}[self.table]
        label = CLASS_COLUMN[self.table]
        for index, group in (item for task in tasks for item in task):
            facts = []
            by_split: dict[str, list[dict[str, Any]]] = {}
            for rec in group["records"]:
                fact, rows = self._one(rec, handler)
                for row in rows:
                    by_split.setdefault(row["split"], []).append(row)
                fact["rows"] = [(r["split"], r["id"], r["row_hash"], r[label] if label else None) for r in rows]
                fact["group"] = index
                facts.append(fact)
            if group["file"] is not None:
                for split, rows in sorted(by_split.items()):
                    name = f"part-{group['file']:05d}-{PART_TAG}.snappy.parquet"
                    write_parquet(self.out.join(f"split={split}", name), rows, TABLES[self.table])
            yield from facts

    def _one(
        self, rec: dict[str, Any], handler: Callable[..., list[dict[str, Any]]]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        source = self.root.join(rec["key"])
        src = str(source)
        fact: dict[str, Any] = {"source_path": src, "content_hash": None, "q_reason": None, "q_message": None,
                                "q_stage": None}  # fmt: skip

        def quarantine(reason: str, message: str, stage: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            fact.update(q_reason=reason, q_message=message, q_stage=stage)
            return fact, []

        try:
            data = source.read_bytes()
        except OSError as exc:
            return quarantine(images.UNREADABLE, f"{src}: could not read the file ({exc})", "read")
        fact["content_hash"] = images.content_hash(data)
        if not data:
            return quarantine(images.ZERO_BYTES, f"{src}: file is empty (0 bytes)", "read")
        c = self.cfg
        try:
            img = images.decode_image(data, c.allowed_modes, c.min_side, c.expected_size)
        except images.ImageError as exc:
            return quarantine(exc.reason, f"{src}: {exc.message}", "decode")
        if rec["cat_reason"] is not None:
            return quarantine(rec["cat_reason"], rec["cat_message"], "annotate")
        try:
            rows = handler(rec, images.to_rgb(img))
        except images.ImageError as exc:
            return quarantine(exc.reason, f"{src}: {exc.message}", "annotate")
        for row in rows:
            row.update(source_path=src, content_hash=fact["content_hash"], split=rec["split"])
            if self.table == "fabric" and not c.split_by_source_image:
                row["split"] = readers.hash_split(row["id"], list(rec["split_shares"]), c.split_seed)
            row["row_hash"] = _row_digest(row, self.table)
        return fact, rows

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
        mask = np.zeros((size[1], size[0]), dtype=bool)
        if not expected:
            return mask
        found = {}
        for key in expected:
            if key in self.excluded:
                continue
            try:
                found[key] = self.root.join(key).read_bytes()
            except FileNotFoundError:
                continue
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
