"""Whole-image fabric inspection: new camera images of any size → per-image decision and heatmap.

A ``fabric_ae`` model is trained on tiles; its meta records the tiling of its training data
(``tile_size`` and ``tile_stride`` in source pixels, stored at ``image_size``; see
``FabricAeTask``), so an image of any size is cut exactly as ingest cut the training images.
Steps:

1. ``batch.resolve_model`` pins and ships the model; ``batch.read_input`` reads the images
   (a folder, glob or URL; an MVTec category or its ``test/`` folder reads ``test/`` only).
2. ``InspectImages`` (``mapInPandas``, one model per Python worker) decodes each image, tiles it,
   scores the tiles (``fabric_ae.score_and_heatmaps``: smoothed, calibrated tile maps), stitches
   them into one heatmap in stored pixels (``fabric_ae.stitch``: overlaps keep the maximum), and
   writes a heatmap overlay PNG with the defect boxes into the output version's ``_heatmaps/``.
   The image score is the maximum of the stitched map (the maximum of its smoothed tile scores),
   compared with the model's ``threshold``; boxes are the regions above ``pixel_threshold``.
3. Rows (no image bytes) are written like scores (``batch.write_sorted``), with lineage and
   ``error_code``/``error_message`` for images that cannot be used; ``_summary.json`` beside them.
   On an MVTec layout the driver also computes image AUROC, pixel AUROC and AUPRO, overall and
   per defect type (``_evaluation.json``, and the summary's ``evaluation``).
4. The summary and the overlays of the highest-scoring images are logged to the model's run
   (``inspection/<output name>/``), where its report shows them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision import storage, tempdirs
from sparkvision.data import publish as pub
from sparkvision.data.schema import ERROR_CODE, ERROR_COLUMNS, ERROR_MESSAGE, ERRORS, MODEL_ERROR
from sparkvision.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

    from sparkvision.config import InspectConfig, ScoreConfig
    from sparkvision.scoring.batch import ResolvedModel
    from sparkvision.tracking import Tracking

log = logging.getLogger(__name__)

HEATMAPS = "_heatmaps"
"""Folder of the overlay PNGs inside the output version (``_``: Spark and pyarrow skip it when reading the rows)."""
EVALUATION_FILE = "_evaluation.json"
ARTIFACT_DIR = "inspection"
"""Folder of the summaries and overlays on the model's run (the run report reads it)."""
OUTPUTS: tuple[tuple[str, str], ...] = (
    ("width", "int"),
    ("height", "int"),
    ("tiles", "int"),
    ("anomaly_score", "float"),
    ("threshold", "float"),
    ("is_defect", "boolean"),
    ("defect_boxes", "array<array<float>>"),
    ("peak_x", "float"),
    ("peak_y", "float"),
    ("heatmap_path", "string"),
)
"""Per-image columns: size, tiles scored, score and decision, boxes ``[x0, y0, x1, y1]`` normalised
to the image (largest region first), where the heatmap peaks (normalised), the overlay PNG."""
HEAT = "_heat"
"""A transient column (the stitched map as ``.npy`` bytes) kept only to evaluate an MVTec layout."""
LINEAGE: tuple[str, ...] = ("model_name", "model_version", "model_run_id", "model_uri", "scored_at")


# --------------------------------------------------------------------------- one image


def fabric_meta(meta: dict[str, Any], where: str) -> dict[str, Any]:
    """``meta`` when it describes a tiled fabric model with thresholds, else a ``UserError``."""
    if meta.get("task") != "fabric_ae":
        raise UserError(f"{where}: expected a fabric_ae model, found a {meta.get('task')} model")
    missing = [k for k in ("tile_size", "image_size", "threshold", "pixel_threshold") if meta.get(k) is None]
    if missing:
        raise UserError(f"{where}: the model's meta has no {', '.join(missing)} (train it on an ingested fabric "
                        "table, which records the tiling, and evaluate it on val)")  # fmt: skip
    return meta


def tile_image(img: Any, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiles of an RGB PIL image as ingest cuts them: ``(tiles float32 (N, S, S, 3), tile_x, tile_y)``."""
    from PIL import Image

    from sparkvision.data import tiling

    tile = int(meta["tile_size"])
    stride = int(meta.get("tile_stride") or tile)
    side = int(meta["image_size"])
    grid = tiling.tile_grid(img.width, img.height, tile, stride)
    tiles = []
    for x, y in grid:
        patch = img.crop((x, y, x + tile, y + tile))
        if side != tile:
            patch = patch.resize((side, side), Image.Resampling.BILINEAR)
        tiles.append(np.asarray(patch, np.float32) / 255.0)
    xs = np.array([g[0] for g in grid], np.int32)
    ys = np.array([g[1] for g in grid], np.int32)
    return np.stack(tiles), xs, ys


def stitched_heatmap(model: Any, img: Any, meta: dict[str, Any]) -> tuple[np.ndarray, int]:
    """The whole-image anomaly map (stored pixels: the image scaled by ``image_size / tile_size``) and its tiles."""
    from sparkvision.models import fabric_ae

    tiles, xs, ys = tile_image(img, meta)
    _, heat = fabric_ae.score_and_heatmaps(model, tiles, meta["smooth"], meta.get("calibration"))
    y = {"label": np.zeros(len(tiles), int), "source_id": np.array(["image"] * len(tiles), object),
         "tile_x": xs, "tile_y": ys}  # fmt: skip
    layout = fabric_ae.source_images(y, meta, heat.shape[1])[0]
    stitched, _ = fabric_ae.stitch(heat, layout)  # the tile grid covers every pixel (tiling.tile_starts)
    return stitched, len(tiles)


def defect_boxes(heat: np.ndarray, pixel_threshold: float, threshold: float, limit: int) -> list[list[float]]:
    """Boxes ``[x0, y0, x1, y1]`` (normalised) of the defects in a stitched map, largest first.

    A defect is an 8-connected region of pixels above ``pixel_threshold`` that holds a pixel above
    the image ``threshold``: the regions that flag the image, not the one percent of defect-free
    pixels above the pixel threshold.
    """
    from scipy import ndimage

    labels, count = ndimage.label(heat > pixel_threshold, structure=np.ones((3, 3), int))
    if limit <= 0 or count == 0:
        return []
    index = np.arange(1, count + 1)
    peaks = np.asarray(ndimage.maximum(heat, labels, index))
    sizes = np.asarray(ndimage.sum(np.ones_like(heat), labels, index))
    h, w = heat.shape
    slices = ndimage.find_objects(labels)
    order = [i for i in np.argsort(-sizes, kind="stable") if peaks[i] > threshold][:limit]
    return [[slices[i][1].start / w, slices[i][0].start / h, slices[i][1].stop / w, slices[i][0].stop / h]
            for i in order]  # fmt: skip


def overlay_png(img: Any, heat: np.ndarray, low: float, high: float, boxes: Sequence[Sequence[float]],
                max_side: int) -> bytes:  # fmt: skip
    """The image (at most ``max_side`` px) under its heatmap, boxes in cyan.

    Colours start at ``low`` (the pixel threshold: what a defect-free pixel rarely exceeds) and
    saturate at ``high`` (the image threshold: whatever shows bright would flag the image).
    """
    from PIL import Image

    from sparkvision import pictures
    from sparkvision.data.images import encode_png

    scale = min(1.0, max_side / max(img.width, img.height))
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    base = np.asarray(img.resize(size, Image.Resampling.BILINEAR) if size != img.size else img)
    big = np.asarray(Image.fromarray(heat.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR))
    out = pictures.overlay(base, np.clip(big - low, 0.0, None), high - low if high > low else None)
    if boxes:
        out = pictures.draw_boxes(out, [(np.asarray(b), (0, 255, 255)) for b in boxes], width=2)
    return encode_png(Image.fromarray(out))


def heatmap_key(image_id: str) -> str:
    """A file name for an image id (``a/b c.png`` → ``a__b_c.png``), unique per id (hash suffix)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", image_id.replace("/", "__"))[-80:]
    return f"{stem}-{hashlib.sha1(image_id.encode()).hexdigest()[:8]}.png"


def inspect_one(model: Any, meta: dict[str, Any], data: bytes, image_id: str, out_url: str, max_side: int,
                max_boxes: int, keep_heat: bool) -> dict[str, Any]:  # fmt: skip
    """All output columns of one image (raises ``ImageError`` for an unusable one)."""
    from sparkvision.data import images

    rules = images.Rules.of(meta.get("image_rules", {}))
    img = images.to_rgb(images.decode_image(data, rules.allowed_modes, max(rules.min_side, int(meta["tile_size"]))))
    heat, n_tiles = stitched_heatmap(model, img, meta)
    score = float(heat.max())
    is_defect = score > float(meta["threshold"])
    low, high = float(meta["pixel_threshold"]), float(meta["threshold"])
    boxes = defect_boxes(heat, low, high, max_boxes) if is_defect else []
    py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
    path = storage.location(out_url).join(HEATMAPS, heatmap_key(image_id))
    path.write_bytes(overlay_png(img, heat, low, high, boxes, max_side))
    row = {"width": img.width, "height": img.height, "tiles": n_tiles, "anomaly_score": score,
           "threshold": float(meta["threshold"]), "is_defect": is_defect, "defect_boxes": boxes,
           "peak_x": (px + 0.5) / heat.shape[1], "peak_y": (py + 0.5) / heat.shape[0], "heatmap_path": path.url}  # fmt: skip
    if keep_heat:
        buf = io.BytesIO()
        np.save(buf, heat.astype(np.float16))
        row[HEAT] = buf.getvalue()
    return row


class InspectImages:
    """``mapInPandas`` function: rows with ``image`` bytes → ``keep`` columns + ``OUTPUTS`` (+ ``HEAT``) + errors.

    Args:
        archive_name: The model archive shipped with ``addArchive`` (``batch.resolve_model``).
        driver_path: The driver's model folder (fallback on a shared filesystem).
        out_url: The output version folder; overlays go to its ``heatmaps/``.
        keep: Input columns copied to the output.
        cpus: TensorFlow threads per Python worker.
        max_side: Longest side of the overlays.
        max_boxes: Defect boxes kept per image.
        keep_heat: Also return the stitched map (``HEAT``) for the driver's evaluation.
    """

    def __init__(self, archive_name: str, driver_path: str, out_url: str, keep: Sequence[str], cpus: int,
                 max_side: int, max_boxes: int, keep_heat: bool) -> None:  # fmt: skip
        self.archive_name, self.driver_path, self.out_url = archive_name, driver_path, out_url
        self.keep, self.cpus, self.max_side, self.max_boxes = list(keep), cpus, max_side, max_boxes
        self.keep_heat = keep_heat

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        from sparkvision.data import images
        from sparkvision.scoring.udf import load_model, resolve_local_model

        vision = load_model(resolve_local_model(self.archive_name, self.driver_path), self.cpus).unwrap_python_model()
        columns = [c for c, _ in OUTPUTS] + ([HEAT] if self.keep_heat else [])
        for frame in batches:
            rows = []
            for data, image_id in zip(frame["image"].tolist(), frame["id"].tolist(), strict=True):
                row: dict[str, Any] = {ERROR_CODE: None, ERROR_MESSAGE: None}
                try:
                    row.update(inspect_one(vision.model, vision.meta, bytes(data or b""), str(image_id),
                                           self.out_url, self.max_side, self.max_boxes, self.keep_heat))  # fmt: skip
                except images.ImageError as exc:
                    row.update({ERROR_CODE: exc.reason, ERROR_MESSAGE: exc.message})
                except Exception as exc:  # noqa: BLE001 - one image must not fail the job
                    row.update({ERROR_CODE: MODEL_ERROR, ERROR_MESSAGE: f"{type(exc).__name__}: {exc}"[:1000]})
                rows.append(row)
            out = frame[self.keep].reset_index(drop=True)
            result = pd.DataFrame(rows, columns=[*columns, *ERROR_COLUMNS])
            for name in [*columns, *ERROR_COLUMNS]:
                out[name] = result[name].astype(object).where(result[name].notna(), None)
            yield out


# --------------------------------------------------------------------------- MVTec evaluation


def mvtec_layout(input: str) -> tuple[storage.Location, storage.Location] | None:
    """``(test folder, ground_truth folder)`` when ``input`` is an MVTec category or its ``test/``, else None."""
    if any(ch in input for ch in "*?[{"):
        return None
    where = storage.location(input)
    if where.join("test").is_dir() and where.join("ground_truth").is_dir():
        return where.join("test"), where.join("ground_truth")
    if where.name == "test" and where.parent.join("ground_truth").is_dir():
        return where, where.parent.join("ground_truth")
    return None


def evaluate_layout(heats: dict[str, np.ndarray], ground_truth: storage.Location) -> dict[str, Any]:
    """Image AUROC, pixel AUROC and AUPRO of stitched maps against MVTec masks, overall and per defect type.

    Args:
        heats: Image id (``<defect type>/<file>`` below ``test/``) → its stitched map.
        ground_truth: The category's ``ground_truth/`` (``<defect>/<stem>_mask.png``).

    Returns:
        ``{"images", "by_defect_type": {"all": {...}, "<type>": {...}}}``; a type's figures use the
        defect-free images and that type's.
    """
    from PIL import Image

    from sparkvision.models import metrics

    types, masks, scores = [], [], []
    for image_id, heat in sorted(heats.items()):
        kind = image_id.split("/", 1)[0] if "/" in image_id else "good"
        mask = np.zeros(heat.shape, bool)
        if kind != "good":
            stem = Path(image_id.split("/", 1)[1]).stem
            file = ground_truth.join(kind, f"{stem}_mask.png")
            if file.is_file():
                with Image.open(io.BytesIO(file.read_bytes())) as m:
                    small = m.convert("L").resize((heat.shape[1], heat.shape[0]), Image.Resampling.NEAREST)
                mask = np.asarray(small) > 127
        types.append(kind)
        masks.append(mask)
        scores.append(float(heat.max()))
    kinds = np.array(types)
    maps = [heats[i] for i in sorted(heats)]
    labels = (kinds != "good").astype(int)
    result: dict[str, dict[str, float]] = {}
    for name in ["all", *sorted(set(types) - {"good"})]:
        pick = np.flatnonzero((kinds == "good") | (kinds == name) | (name == "all"))
        figures = {"images": float(len(pick)),
                   "image_auroc": metrics.auroc(labels[pick], np.array(scores)[pick]),
                   "pixel_auroc": metrics.auroc(np.concatenate([masks[i].ravel() for i in pick]),
                                                np.concatenate([maps[i].ravel() for i in pick])),
                   "aupro": metrics.aupro([masks[i] for i in pick], [maps[i] for i in pick])}  # fmt: skip
        result[name] = {k: float(v) for k, v in figures.items() if np.isfinite(v)}
    return {"images": len(heats), "by_defect_type": result}


# --------------------------------------------------------------------------- the job


def inspect(
    spark: SparkSession,
    model_uri: str,
    input: str,
    output: str,
    score_cfg: ScoreConfig,
    cfg: InspectConfig,
    tracking: Tracking | None = None,
    retention: pub.Retention | None = None,
    log_to_run: bool = True,
) -> dict[str, Any]:
    """Inspect whole fabric images with a ``fabric_ae`` model, committed as a new version of ``output``.

    Args:
        spark: The session.
        model_uri: ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``, ``runs:/...``, a model folder).
        input: A folder (recursive), glob or URL of images of any size; an MVTec category folder or its
            ``test/`` folder is also evaluated against its masks.
        output: Output (``OUT/v-<id>/`` + ``OUT/_latest.json``).
        score_cfg: Partitioning and Arrow batch size (``score.*``).
        cfg: Overlay size, boxes, overlays logged to the run.
        tracking: The MLflow server of registry and run URIs.
        retention: Old versions kept.
        log_to_run: Log the summary and the top overlays to the model's run.

    Returns:
        The summary (also ``OUT/v-<id>/_summary.json``): ``inputs``, ``inspected``, ``defective``,
        ``good``, ``failed``, ``failed_by_reason``, ``rows``, ``threshold``, ``model``, ``heatmaps``,
        ``evaluation`` (MVTec layouts), ``seconds``, ``version``, ...

    Raises:
        UserError: The model is not a tiled fabric model with thresholds.
        FileNotFoundError: The input does not exist.
    """
    from sparkvision.models.packaging import read_meta
    from sparkvision.scoring import batch

    t0 = time.perf_counter()
    scored_at = datetime.now(UTC).replace(microsecond=0)
    model = batch.resolve_model(spark, model_uri, tracking)
    meta = fabric_meta(read_meta(model.local_path), model_uri)
    layout = mvtec_layout(input)
    source = layout[0].url if layout else input
    with pub.begin(output, retention) as version:
        summary = _inspect_into(spark, version, model, meta, source, layout, score_cfg, cfg, scored_at)
        summary.update(input=str(input), seconds=round(time.perf_counter() - t0, 3))
        summary["images_per_s"] = round(summary["inputs"] / summary["seconds"], 2) if summary["seconds"] else 0.0
        version.location.join(batch.SUMMARY_FILE).write_text(json.dumps({**summary, "version": version.version},
                                                                        indent=2, default=str))  # fmt: skip
        stable = {k: summary[k] for k in ("input", "inputs", "inspected", "defective", "failed_by_reason", "rows")}
        checksum = hashlib.sha256(json.dumps({**stable, "model": model.pinned_uri}, sort_keys=True).encode())
        version.commit(checksum.hexdigest(), {"rows": summary["rows"], "defective": summary["defective"],
                                              "failed": summary["failed"]}, kind="inspection")  # fmt: skip
        summary["version"] = version.version
    if log_to_run and model.run_id and tracking is not None:
        try:
            summary["logged_to_run"] = log_inspection(tracking, model.run_id, summary, cfg.report_overlays)
        except Exception as exc:  # noqa: BLE001 - the output is published; the log is a courtesy
            log.warning("could not log the inspection to run %s: %s", model.run_id, exc)
    return summary


def _inspect_into(
    spark: SparkSession, version: pub.Publication, model: ResolvedModel, meta: dict[str, Any], source: str,
    layout: tuple[storage.Location, storage.Location] | None, score_cfg: ScoreConfig, cfg: InspectConfig,
    scored_at: datetime,
) -> dict[str, Any]:  # fmt: skip
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from sparkvision.scoring import batch
    from sparkvision.spark import session_conf

    keep = ["source_path", "content_hash", "id"]
    evaluate = layout is not None
    outputs = list(OUTPUTS) + ([(HEAT, "binary")] if evaluate else [])
    columns = keep + [c for c, _ in OUTPUTS] + list(LINEAGE) + list(ERROR_COLUMNS)
    with session_conf(spark, batch.job_conf(spark, score_cfg)):
        rows = batch.read_input(spark, source)
        partitions = score_cfg.partitions or 2 * spark.sparkContext.defaultParallelism
        if rows.rdd.getNumPartitions() < partitions:
            rows = rows.repartition(partitions)
        cpus = int(spark.conf.get("spark.task.cpus", "1") or 1)
        fn = InspectImages(Path(model.archive).name, model.local_path, version.url, keep, cpus,
                           cfg.overlay_max_side, cfg.max_boxes, evaluate)  # fmt: skip
        types = {f.name: f.dataType.simpleString() for f in rows.schema.fields}
        ddl = [(c, types[c]) for c in keep] + outputs + [(f.name, f.spark_type.simpleString()) for f in ERRORS]
        scored = rows.select(*keep, "image").mapInPandas(fn, ", ".join(f"`{c}` {t}" for c, t in ddl))
        scored = (scored.withColumn("model_name", F.lit(model.name).cast("string"))
                  .withColumn("model_version", F.lit(model.version).cast("string"))
                  .withColumn("model_run_id", F.lit(model.run_id).cast("string"))
                  .withColumn("model_uri", F.lit(model.pinned_uri))
                  .withColumn("scored_at", F.lit(scored_at).cast("timestamp")))  # fmt: skip
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            by_code = {r[ERROR_CODE]: r["count"] for r in scored.groupBy(ERROR_CODE).count().collect()}
            defective = scored.where(F.col("is_defect")).count()
            heats = {}
            if evaluate:
                for r in scored.where(F.col(ERROR_CODE).isNull()).select("id", HEAT).toLocalIterator():
                    heats[str(r["id"])] = np.load(io.BytesIO(bytes(r[HEAT]))).astype(np.float32)
            top = [r.asDict() for r in scored.where(F.col("anomaly_score").isNotNull())
                   .orderBy(F.col("anomaly_score").desc(), "id").select("id", "anomaly_score", "is_defect",
                                                                        "heatmap_path").limit(cfg.report_overlays).collect()]  # fmt: skip
            result = scored.select(*columns)
            unusable = batch.unusable_files(source)
            if unusable:
                result = result.unionByName(_listing_rows(spark, result, unusable, model, scored_at))
                for _, _, reason, _ in unusable:
                    by_code[reason] = by_code.get(reason, 0) + 1
            total = int(sum(by_code.values()))
            batch.write_sorted(result, version.url, total)
        finally:
            scored.unpersist()
    failed = {str(k): int(v) for k, v in sorted((k, v) for k, v in by_code.items() if k is not None)}
    ok = int(by_code.get(None, 0))
    summary: dict[str, Any] = {
        "output": str(version.output), "inputs": total, "inspected": ok, "defective": int(defective),
        "good": ok - int(defective), "failed": int(sum(failed.values())), "failed_by_reason": failed, "rows": total,
        "threshold": float(meta["threshold"]), "pixel_threshold": float(meta["pixel_threshold"]),
        "tiling": {k: meta.get(k) for k in ("tile_size", "tile_stride", "image_size")},
        "heatmaps": version.location.join(HEATMAPS).url, "model": model.info(), "scored_at": scored_at.isoformat(),
        "top": [{**t, "anomaly_score": float(t["anomaly_score"])} for t in top],
    }  # fmt: skip
    if evaluate and heats:
        summary["evaluation"] = evaluate_layout(heats, layout[1])  # type: ignore[index]
        version.location.join(EVALUATION_FILE).write_text(json.dumps(summary["evaluation"], indent=2))
    return summary


def _listing_rows(spark: SparkSession, like: DataFrame, unusable: list[tuple[str, str, str, str]],
                  model: ResolvedModel, scored_at: datetime) -> DataFrame:  # fmt: skip
    """Error rows (columns of ``like``) for files Spark does not read (hidden, other extensions, broken links)."""
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField(f.name, f.dataType, True) for f in like.schema.fields])
    fixed = {"model_name": model.name, "model_version": model.version, "model_run_id": model.run_id,
             "model_uri": model.pinned_uri, "scored_at": scored_at}  # fmt: skip
    records = [tuple({**fixed, "source_path": path, "id": key, ERROR_CODE: reason, ERROR_MESSAGE: message}.get(n)
                     for n in schema.fieldNames()) for path, key, reason, message in unusable]  # fmt: skip
    return spark.createDataFrame(records, schema)


def log_inspection(tracking: Tracking, run_id: str, summary: dict[str, Any], overlays: int) -> str:
    """Log the summary and the overlays of its ``top`` images (at most ``overlays``) to ``inspection/<output name>/``."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(summary["output"])).name or "inspection")
    folder = f"{ARTIFACT_DIR}/{label}"
    tracking.log_text(run_id, json.dumps(summary, indent=2, default=str), f"{folder}/_summary.json")
    top = summary.get("top", [])[: max(0, overlays)]
    if not top:
        return folder
    with tempdirs.temporary_directory("sv-inspect-") as tmp:
        for rank, row in enumerate(top, 1):
            verdict = "defect" if row["is_defect"] else "good"
            name = f"{rank:02d}-{verdict}-{row['anomaly_score']:.3f}-{Path(str(row['heatmap_path'])).name}"
            (Path(tmp) / name).write_bytes(storage.location(str(row["heatmap_path"])).read_bytes())
        tracking.log_artifacts(run_id, tmp, f"{folder}/overlays")
    return folder
