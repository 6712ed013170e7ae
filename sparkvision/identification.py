"""Face identification: enroll known identities into a gallery, then identify new faces.

Embeddings are those of the enrolling model: the ``embedding`` output of ``face_embed`` (a CNN
trained on identity labels with a large-margin cosine loss, ``sparkvision.models.face_embed``:
the one to use), or the VAE's ``mu``. The VAE is already trained on these faces and needs no
labels; its encoder has to squeeze each face into a ``latent_dim`` (200 by default) code
from which the decoder redraws it, so ``mu`` keeps what varies most between faces: face
geometry, skin tone, hair colour and shape. Pose and lighting jitter move ``mu`` less than a
change of person does, which is what identification needs. We L2-normalise ``mu`` and compare
with cosine similarity (a dot product of unit vectors), which ignores the code's overall
scale (contrast, brightness) and is bounded in [-1, 1], so one threshold fits all identities.
``mu`` is not a metric-learned face embedding: it separates coarse identities only;
``evaluate`` prints both embeddings' figures on held-out identities side by side.

Enrollment input: an ingested CelebA dataset (``identity`` column), or a folder with one
sub-folder per person (``ROOT/<person>/*.jpg``; identity = index of the sorted folder names,
``name`` = the folder name). A folder has no never-enrolled people to choose the threshold on, so
with ``threshold < 0`` it is chosen leave-one-identity-out: each person's images, matched
against the other people's centroids only, are the impostor probes.

Gallery layout (published atomically like every output)::

    GALLERY/identities/*.parquet   identity, n_images, centroid (mean of unit embeddings, re-normalised), name
    GALLERY/embeddings/*.parquet   identity, id, split, source_path, content_hash, embedding (unit)
    GALLERY/manifest.json          model (pinned version), threshold and how it was chosen, counts

Open-set rule: a probe gets the identity of the most similar centroid when that similarity is
at least the threshold, otherwise ``"unknown"``. With ``threshold < 0`` ``enroll`` chooses it
on the validation split, whose identities are never enrolled (CelebA partitions are
identity-disjoint): each val image is an impostor probe, and the threshold is the smallest
value whose false-accept rate (impostor probes accepted as anybody) is at most ``target_far``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision.config import FacesConfig, ScoreConfig
from sparkvision.data import publish as pub
from sparkvision.data.schema import ERROR_CODE, ERROR_COLUMNS, ERRORS
from sparkvision.scoring import batch
from sparkvision.spark import session_conf

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.broadcast import Broadcast
    from pyspark.sql import DataFrame, SparkSession

    from sparkvision.storage import Location
    from sparkvision.tracking import Tracking

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
EMBEDDING = "mu"
MANIFEST = "manifest.json"
EMBEDDINGS = ("embedding", "mu")
"""Model outputs usable as embeddings, in order of preference (``face_embed``, then the VAE)."""
EVALUATION_ARTIFACT = "faces/evaluation.json"
"""``log_evaluation``'s copy of ``evaluate``'s result on each evaluated model's run."""
EVALUATION_METRICS = ("rank1", "tar", "far", "threshold", "chance_rank1")
"""``evaluate``'s figures logged as ``faces_<figure>`` on each evaluated model's run."""


def embedding_column(model: batch.ResolvedModel) -> str:
    """The output of ``model`` enrollment embeds with (``EMBEDDINGS``).

    Raises:
        ValueError: The model has none of them.
    """
    outputs = dict(model.outputs)
    for name in EMBEDDINGS:
        if outputs.get(name) == "array<float>":
            return name
    raise ValueError(f"{model.uri}: expected a model with an embedding output {list(EMBEDDINGS)} "
                     f"(face_embed or the VAE), found {[o for o, _ in model.outputs]}")  # fmt: skip


def _require_dataset(input: str, what: str) -> None:
    if not batch.is_dataset(input):
        raise ValueError(
            f"{what} input {input}: expected an ingested CelebA dataset folder (manifest.json + data/), "
            "found none; run `sparkvision ingest --format celeba` first"
        )


def _embed(df: DataFrame, model: batch.ResolvedModel, cfg: ScoreConfig, keep: Sequence[str]) -> DataFrame:
    """``keep`` + ``embedding`` (the model's embedding output made unit-length, null on error) +
    ``error_code``/``error_message``."""
    from pyspark.sql import functions as F

    column = embedding_column(model)
    scored = batch.apply_model(df, model, cfg, keep)
    if column != "embedding":
        scored = scored.withColumnRenamed(column, "embedding")
    norm = F.sqrt(F.aggregate(F.transform("embedding", lambda x: x * x), F.lit(0.0), lambda a, b: a + b))
    unit = F.transform("embedding", lambda x: (x / F.greatest(norm, F.lit(1e-12))).cast("float"))
    return scored.select(*keep, unit.alias("embedding"), *ERROR_COLUMNS)


def _centroid(frame: pd.DataFrame) -> pd.DataFrame:
    """``applyInPandas`` body: one identity's unit embeddings → its re-normalised mean."""
    import pandas as pd

    vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float64)
    mean = vectors.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)
    return pd.DataFrame({"identity": [int(frame["identity"].iloc[0])], "n_images": [len(frame)],
                         "centroid": [mean.astype(np.float32)], "name": [str(frame["name"].iloc[0])]})  # fmt: skip


class MatchBatches:
    """``mapInPandas`` body: embeddings → nearest gallery identity, similarity and the open-set decision.

    Args:
        gallery: Broadcast of ``(identities int array, centroid matrix float32 (n, d))``, optionally
            with a third item ``{identity: name}`` (folder galleries) for ``predicted_label``.
        threshold: Similarity below which the face is ``"unknown"``.
        keep: Columns copied to the output.
    """

    def __init__(self, gallery: Broadcast, threshold: float, keep: Sequence[str]) -> None:
        self.gallery = gallery
        self.threshold = threshold
        self.keep = list(keep)

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids, centroids = self.gallery.value[:2]
        names = self.gallery.value[2] if len(self.gallery.value) > 2 else {}
        for frame in batches:
            out = frame[self.keep].reset_index(drop=True)
            ok = frame["embedding"].notna().to_numpy()
            best = np.full(len(frame), -1, np.int64)
            sim = np.full(len(frame), np.nan, np.float32)
            if ok.any() and len(ids):
                emb = np.stack(frame["embedding"].to_numpy()[ok]).astype(np.float32)
                sims = emb @ centroids.T
                arg = sims.argmax(axis=1)
                best[ok] = ids[arg]
                sim[ok] = sims[np.arange(len(arg)), arg]
            accepted = ok & (sim >= self.threshold)
            out["best_identity"] = [int(b) if k else None for b, k in zip(best, ok, strict=True)]
            out["similarity"] = [float(s) if k else None for s, k in zip(sim, ok, strict=True)]
            out["predicted_identity"] = [int(b) if a else None for b, a in zip(best, accepted, strict=True)]
            out["predicted_label"] = [
                (names.get(int(b), str(int(b))) if a else UNKNOWN) if k else None
                for b, a, k in zip(best, accepted, ok, strict=True)
            ]
            for name in ERROR_COLUMNS:
                out[name] = frame[name].to_numpy()
            yield out


def _match(df: DataFrame, gallery: Broadcast, threshold: float, keep: Sequence[str]) -> DataFrame:
    types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    schema = ", ".join(
        [f"`{c}` {types[c]}" for c in keep]
        + ["best_identity int", "similarity float", "predicted_identity int", "predicted_label string"]
        + [f"{f.name} {f.spark_type.simpleString()}" for f in ERRORS]
    )
    return df.mapInPandas(MatchBatches(gallery, threshold, keep), schema)


def _read_names(folder: Location) -> dict[int, str]:
    """``{identity: name}`` of a gallery's ``identities`` table (empty for galleries without names)."""
    import pyarrow.parquet as pq

    table = pq.read_table(folder.path, filesystem=folder.fs).to_pandas()
    if "name" not in table:
        return {}
    return {int(i): str(n) for i, n in zip(table["identity"], table["name"], strict=True)}


def _read_centroids(folder: Location) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(folder.path, filesystem=folder.fs).to_pandas().sort_values("identity")
    if table.empty:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return table["identity"].to_numpy(np.int64), np.stack(table["centroid"].to_numpy()).astype(np.float32)


def choose_threshold(impostor_similarities: np.ndarray, target_far: float) -> tuple[float, float]:
    """``(threshold, achieved false-accept rate)`` at ``target_far``: ``metrics.threshold_at_far``."""
    from sparkvision.models.metrics import threshold_at_far

    return threshold_at_far(impostor_similarities, target_far)


def enroll(
    spark: SparkSession,
    model_uri: str,
    input: str,
    gallery: str,
    cfg: FacesConfig,
    *,
    splits: Sequence[str] = ("train",),
    images_per_identity: int = 0,
    threshold_split: str = "val",
    score_cfg: ScoreConfig | None = None,
    tracking: Tracking | None = None,
    retention: pub.Retention | None = None,
) -> dict[str, Any]:
    """Embed known identities' images and publish the gallery (centroids, embeddings, threshold).

    Args:
        spark: The session.
        model_uri: The VAE (``models:/NAME@ALIAS``); empty: ``cfg.model_uri``.
        input: An ingested CelebA dataset folder (``identity`` column), or a folder with one
            sub-folder of images per person.
        gallery: Gallery folder to publish.
        cfg: Threshold (``< 0``: choose on ``threshold_split``) and target false-accept rate.
        splits: Splits whose rows are enrolled (dataset input).
        images_per_identity: Enroll only the first N images of each identity (ordered by ``id``),
            leaving the others as probes of known identities for ``identify``; 0: all.
        threshold_split: Split of never-enrolled identities used to choose the threshold.
        score_cfg: Batch sizes for the embedding model (default ``ScoreConfig()``).
        tracking: The MLflow server holding the model (for ``models:/`` and ``runs:/`` URIs).

    Returns:
        The gallery manifest (also ``GALLERY/manifest.json``).

    Raises:
        ValueError: Not a dataset, the model has no ``mu`` output, nothing to enroll, or no
            impostor probes to choose the threshold from.
    """
    t0 = time.perf_counter()
    model_uri = model_uri or cfg.model_uri
    if not model_uri:
        raise ValueError("faces enroll: no model given (--model-uri or faces.model_uri)")
    people = None if batch.is_dataset(input) else _people(input)
    score_cfg = score_cfg or ScoreConfig()
    model = batch.resolve_model(spark, model_uri, tracking)
    embedding_column(model)
    with pub.begin(gallery, retention) as version:
        with session_conf(spark, batch.job_conf(spark, score_cfg)):
            rows = batch.read_input(spark, input)
            if people is not None:
                rows = _person_rows(spark, rows, people)
                splits = ()
            chosen = _enrollment_rows(rows, input, splits, images_per_identity)
            what = f"splits {list(splits)} in {input}" if people is None else f"the person folders of {input}"
            counts = _write_gallery(chosen, model, score_cfg, version.location, what)
            ids, centroids = _read_centroids(version.location.join("identities"))
            if people is None:
                threshold = _gallery_threshold(spark, rows, (ids, centroids), model, score_cfg, cfg, threshold_split,
                                               input)  # fmt: skip
            else:
                threshold = _leave_one_out_threshold(version.location, cfg, input)
        manifest = _gallery_manifest(gallery=str(version.output), input=input, model=model, centroids=centroids,
                                     splits=splits, images_per_identity=images_per_identity, counts=counts,
                                     threshold=threshold, seconds=time.perf_counter() - t0)  # fmt: skip
        manifest["version"] = version.version
        version.location.join(MANIFEST).write_text(json.dumps(manifest, indent=2))
        checksum = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()
        version.commit(checksum, {"identities": manifest["identities"], "rows": manifest["images"]}, kind="gallery")
    log.info("enrolled %d identities (%d images), threshold %.4f (%s)", len(ids), manifest["images"],
             manifest["threshold"], manifest["threshold_source"])  # fmt: skip
    return manifest


def _people(input: str) -> list[str]:
    """The person names (sorted sub-folders) of a folder-per-person input, via the folder reader.

    Raises:
        ValueError: ``input`` is neither an ingested dataset nor a folder of person folders.
    """
    from sparkvision.data.readers import list_folder

    try:
        catalog = list_folder(input)
    except FileNotFoundError as exc:
        raise ValueError(f"faces enroll input {input}: expected an ingested CelebA dataset or a folder with one "
                         f"sub-folder of images per person ({exc})") from None  # fmt: skip
    return [str(c) for c in catalog.info["classes"]]


def _person_rows(spark: SparkSession, rows: DataFrame, people: list[str]) -> DataFrame:
    """Image rows of a folder-per-person input with ``identity`` (index of the sorted person
    folder names) and ``name``; images directly in the root (no person) are left out."""
    from pyspark.sql import functions as F

    names = spark.createDataFrame([(i, n) for i, n in enumerate(people)], "identity int, name string")
    person = F.split(F.col("id"), "/").getItem(0)
    return rows.where(F.col("id").contains("/")).withColumn("name", person).join(F.broadcast(names), "name")


def _leave_one_out_threshold(staging: Location, cfg: FacesConfig, input: str) -> dict[str, Any]:
    """The threshold entries of a folder gallery: ``cfg.threshold``, or (negative) the one whose
    false-accept rate is ``cfg.target_far`` when each person's images are matched against the
    other people's centroids only (every person in turn plays a never-enrolled one).

    Raises:
        ValueError: The threshold is to be chosen and the folder has fewer than 2 people.
    """
    import pyarrow.parquet as pq

    if cfg.threshold >= 0:
        return {"threshold": float(cfg.threshold), "threshold_source": "config", "target_far": cfg.target_far,
                "val_far": None, "val_probes": 0}  # fmt: skip
    ids, centroids = _read_centroids(staging.join("identities"))
    if len(ids) < 2:
        raise ValueError(f"faces enroll: cannot choose the threshold with {len(ids)} person folder(s) in {input}; "
                         "set faces.threshold")  # fmt: skip
    where = staging.join("embeddings")
    table = pq.read_table(where.path, filesystem=where.fs, columns=["identity", "embedding"]).to_pandas()
    emb = np.stack(table["embedding"].to_numpy()).astype(np.float32)
    sims = emb @ centroids.T
    sims[np.arange(len(emb)), np.searchsorted(ids, table["identity"].to_numpy())] = -np.inf
    threshold, far = choose_threshold(sims.max(axis=1), cfg.target_far)
    return {"threshold": float(threshold), "threshold_source": "leave_one_identity_out", "target_far": cfg.target_far,
            "val_far": far, "val_probes": int(len(emb))}  # fmt: skip


def _enrollment_rows(rows: DataFrame, input: str, splits: Sequence[str], images_per_identity: int) -> DataFrame:
    """The rows of ``splits`` to enroll: the first ``images_per_identity`` of each identity (0: all)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if "identity" not in rows.columns:
        raise ValueError(f"faces enroll input {input}: expected an 'identity' column, found {rows.columns}")
    chosen = rows.where(F.col("split").isin(list(splits))) if splits else rows
    if "name" not in chosen.columns:
        chosen = chosen.withColumn("name", F.col("identity").cast("string"))
    if images_per_identity > 0:
        order = Window.partitionBy("identity").orderBy("id", "content_hash")
        chosen = chosen.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= images_per_identity)
    return chosen


def _write_gallery(
    chosen: DataFrame, model: batch.ResolvedModel, score_cfg: ScoreConfig, staging: Location, what: str
) -> dict[str | None, int]:
    """Embed ``chosen``; write ``embeddings/`` (one row per image) and ``identities/`` (centroids).

    Returns:
        Rows per ``error_code`` (``None``: embedded).

    Raises:
        ValueError: No image of ``what`` could be embedded.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if "split" not in chosen.columns:
        chosen = chosen.withColumn("split", F.lit(None).cast("string"))
    keep = ["identity", "id", "split", "source_path", "content_hash", "name"]
    embedded = _embed(chosen, model, score_cfg, keep).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r[ERROR_CODE]: r["count"] for r in embedded.groupBy(ERROR_CODE).count().collect()}
        if not counts.get(None):
            raise ValueError(f"faces enroll: no usable image of {what} ({counts})")
        good = embedded.where(F.col(ERROR_CODE).isNull()).select(*keep, "embedding")
        good.orderBy("identity", "id").write.mode("overwrite").parquet(staging.join("embeddings").spark)
        centroids = good.groupBy("identity").applyInPandas(
            _centroid, "identity int, n_images int, centroid array<float>, name string"
        )
        centroids.orderBy("identity").coalesce(1).write.mode("overwrite").parquet(staging.join("identities").spark)
    finally:
        embedded.unpersist()
    return counts


def _gallery_threshold(
    spark: SparkSession,
    rows: DataFrame,
    gallery: tuple[np.ndarray, np.ndarray],
    model: batch.ResolvedModel,
    score_cfg: ScoreConfig,
    cfg: FacesConfig,
    threshold_split: str,
    input: str,
) -> dict[str, Any]:
    """The manifest's threshold entries: ``cfg.threshold``, or when it is negative the one that
    keeps the false-accept rate of never-enrolled identities in ``threshold_split`` at most
    ``cfg.target_far``.

    Raises:
        ValueError: The threshold is to be chosen and there are no such probes.
    """
    from pyspark.sql import functions as F

    ids, _ = gallery
    threshold, source, val_far, val_probes = cfg.threshold, "config", None, 0
    if cfg.threshold < 0:
        probes = rows.where(F.col("split") == threshold_split).join(
            spark.createDataFrame([(int(i),) for i in ids], "identity int"), "identity", "left_anti"
        )
        bc = spark.sparkContext.broadcast(gallery)
        try:
            matched = _match(_embed(probes, model, score_cfg, ["identity"]), bc, 2.0, ["identity"])
            sims = np.array([r[0] for r in matched.select("similarity").dropna().collect()], np.float64)
        finally:
            bc.unpersist()
        if len(sims) == 0:
            raise ValueError(
                f"faces enroll: cannot choose the threshold: no '{threshold_split}' images of non-enrolled "
                f"identities in {input}; set faces.threshold"
            )
        threshold, val_far = choose_threshold(sims, cfg.target_far)
        source, val_probes = threshold_split, len(sims)
    return {"threshold": float(threshold), "threshold_source": source, "target_far": cfg.target_far,
            "val_far": val_far, "val_probes": val_probes}  # fmt: skip


def _gallery_manifest(
    *,
    gallery: str,
    input: str,
    model: batch.ResolvedModel,
    centroids: np.ndarray,
    splits: Sequence[str],
    images_per_identity: int,
    counts: dict[str | None, int],
    threshold: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """``GALLERY/manifest.json``: what was enrolled from where, with which model, and the threshold."""
    failed = {k: v for k, v in counts.items() if k is not None}
    return {
        "gallery": gallery,
        "input": str(input),
        "model": model.info(),
        "embedding": embedding_column(model),
        "embedding_dim": int(centroids.shape[1]) if centroids.size else 0,
        "splits": list(splits),
        "images_per_identity": images_per_identity,
        "identities": len(centroids),
        "images": int(counts.get(None, 0)),
        "failed": int(sum(failed.values())),
        "failed_by_reason": {str(k): int(v) for k, v in sorted(failed.items())},
        **threshold,
        "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "seconds": round(seconds, 3),
    }


def load_gallery(gallery: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The manifest, identity numbers and unit centroid matrix of the gallery's current version.

    The manifest gets ``folder``: the URL of the version read (embeddings are read from there too).

    Raises:
        FileNotFoundError: ``gallery`` is not a gallery made by ``enroll``.
    """
    current = pub.resolve(gallery)
    if current is None or not current.location.join(MANIFEST).is_file():
        raise FileNotFoundError(f"gallery {gallery}: expected {MANIFEST} written by `faces enroll`, found none")
    manifest = json.loads(current.location.join(MANIFEST).read_text())
    manifest["version"] = manifest.get("version") or current.version or current.location.name
    manifest["folder"] = current.url
    ids, centroids = _read_centroids(current.location.join("identities"))
    manifest["names"] = _read_names(current.location.join("identities"))
    return manifest, ids, centroids


def identify(
    spark: SparkSession,
    gallery: str,
    input: str,
    output: str,
    cfg: FacesConfig,
    *,
    splits: Sequence[str] = (),
    threshold: float | None = None,
    score_cfg: ScoreConfig | None = None,
    tracking: Tracking | None = None,
    retention: pub.Retention | None = None,
) -> dict[str, Any]:
    """Nearest enrolled identity of each new face, or ``"unknown"``; Parquet with lineage.

    Args:
        spark: The session.
        gallery: A gallery published by ``enroll``.
        input: Folder/glob of images, or an ingested dataset (then ``true_identity`` is kept and
            accuracy is reported).
        output: Output folder (published atomically).
        cfg: ``threshold >= 0`` overrides the gallery's threshold.
        splits: For a dataset input, only these splits (empty: all).
        threshold: Overrides both the gallery's and ``cfg``'s threshold.
        score_cfg: Batch sizes for the embedding model.
        tracking: The MLflow server holding the gallery's model version.

    Returns:
        Summary (also ``OUTPUT/_summary.json``): counts, threshold and, with ground truth,
        ``top1_accuracy`` (known identities, images not enrolled, threshold applied),
        ``rank1_accuracy`` (same probes, closed set), ``far`` (probes of non-enrolled identities
        accepted) and ``enrolled_self_match`` (enrolled images mapped to their own identity).
    """

    t0 = time.perf_counter()
    if not output:
        raise ValueError("faces identify: expected an output folder (--output), found none")
    manifest, ids, centroids = load_gallery(gallery)
    if threshold is None:
        threshold = cfg.threshold if cfg.threshold >= 0 else float(manifest["threshold"])
    score_cfg = score_cfg or ScoreConfig()
    scored_at = datetime.now(UTC).replace(microsecond=0)
    model = batch.resolve_model(spark, manifest["model"]["pinned_uri"], tracking)
    with pub.begin(output, retention) as version:
        return _identify_into(spark, version, manifest, ids, centroids, input, model, score_cfg, splits,
                              threshold, scored_at, t0)  # fmt: skip


def _identify_into(
    spark: SparkSession, version: pub.Publication, manifest: dict[str, Any], ids: np.ndarray, centroids: np.ndarray,
    input: str, model: batch.ResolvedModel, score_cfg: ScoreConfig, splits: Sequence[str], threshold: float,
    scored_at: datetime, t0: float,
) -> dict[str, Any]:  # fmt: skip
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    with session_conf(spark, batch.job_conf(spark, score_cfg)):
        rows = batch.read_input(spark, input)
        truth = "identity" in rows.columns
        if splits and "split" in rows.columns:
            rows = rows.where(F.col("split").isin(list(splits)))
        keep = ["source_path", "content_hash", "id"]
        if truth:
            rows = rows.withColumnRenamed("identity", "true_identity")
            keep += ["split", "true_identity"]
        named = {i: n for i, n in manifest.get("names", {}).items() if n != str(i)}
        bc = spark.sparkContext.broadcast((ids, centroids, named) if named else (ids, centroids))
        enrolled = spark.read.parquet(f"{manifest['folder']}/embeddings").select("content_hash").distinct()
        matched = (
            _match(_embed(rows, model, score_cfg, keep), bc, threshold, keep)
            .join(enrolled.withColumn("enrolled", F.lit(True)), "content_hash", "left")
            .withColumn("enrolled", F.coalesce("enrolled", F.lit(False)))
            .withColumn("threshold", F.lit(threshold).cast("float"))
            .withColumn("gallery_version", F.lit(manifest["version"]))
            .withColumn("model_name", F.lit(model.name).cast("string"))
            .withColumn("model_version", F.lit(model.version).cast("string"))
            .withColumn("model_run_id", F.lit(model.run_id).cast("string"))
            .withColumn("model_uri", F.lit(model.pinned_uri))
            .withColumn("scored_at", F.lit(scored_at).cast("timestamp"))
        )
        columns = [*keep, "best_identity", "similarity", "predicted_identity", "predicted_label", "enrolled"]
        columns += ["threshold"]
        columns += ["gallery_version", "model_name", "model_version", "model_run_id", "model_uri", "scored_at"]
        columns += ERROR_COLUMNS
        matched = matched.select(*columns).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            stats = _identify_stats(matched, ids, truth)
            batch.write_sorted(matched, version.url, stats["inputs"])
        finally:
            matched.unpersist()
            bc.unpersist()
    seconds = time.perf_counter() - t0
    summary = {
        "output": str(version.output),
        "input": str(input),
        "gallery": manifest["gallery"],
        "gallery_version": manifest["version"],
        "threshold": float(threshold),
        **stats,
        "model": model.info(),
        "scored_at": scored_at.isoformat(),
        "seconds": round(seconds, 3),
        "images_per_s": round(stats["inputs"] / seconds, 2) if seconds > 0 else 0.0,
    }
    version.location.join(batch.SUMMARY_FILE).write_text(json.dumps({**summary, "version": version.version}, indent=2))
    version.commit(batch.output_checksum(summary), {"rows": stats["inputs"]}, kind="identities")
    summary["version"] = version.version
    return summary


def _identify_stats(matched: DataFrame, ids: np.ndarray, truth: bool) -> dict[str, Any]:
    """Counts and, with ground truth, accuracy / false-accept figures (one Spark aggregation)."""
    from pyspark.sql import functions as F

    ok = F.col(ERROR_CODE).isNull()
    accepted = F.col("predicted_identity").isNotNull()
    aggs = [
        F.count(F.lit(1)).alias("inputs"),
        F.sum(ok.cast("int")).alias("identified"),
        F.sum((ok & accepted).cast("int")).alias("accepted"),
    ]
    if truth:
        known = F.col("true_identity").isin([int(i) for i in ids])
        probe = ok & known & ~F.col("enrolled")
        impostor = ok & ~known
        selfm = ok & F.col("enrolled")
        aggs += [
            F.sum(probe.cast("int")).alias("known_probes"),
            F.sum((probe & (F.col("predicted_identity") == F.col("true_identity"))).cast("int")).alias("_top1"),
            F.sum((probe & (F.col("best_identity") == F.col("true_identity"))).cast("int")).alias("_rank1"),
            F.sum(impostor.cast("int")).alias("unknown_probes"),
            F.sum((impostor & accepted).cast("int")).alias("_fa"),
            F.sum(selfm.cast("int")).alias("enrolled_probes"),
            F.sum((selfm & (F.col("predicted_identity") == F.col("true_identity"))).cast("int")).alias("_self"),
        ]
    row = matched.agg(*aggs).first().asDict()
    row = {k: int(v or 0) for k, v in row.items()}
    failed = {
        str(r[ERROR_CODE]): int(r["count"])
        for r in matched.where(~ok).groupBy(ERROR_CODE).count().orderBy(ERROR_CODE).collect()
    }
    stats: dict[str, Any] = {
        "inputs": row["inputs"],
        "identified": row["identified"],
        "accepted": row["accepted"],
        "unknown": row["identified"] - row["accepted"],
        "failed": row["inputs"] - row["identified"],
        "failed_by_reason": failed,
    }
    if truth:

        def rate(num: str, den: str) -> float | None:
            return round(row[num] / row[den], 4) if row[den] else None

        stats.update(
            known_probes=row["known_probes"],
            top1_accuracy=rate("_top1", "known_probes"),
            rank1_accuracy=rate("_rank1", "known_probes"),
            unknown_probes=row["unknown_probes"],
            far=rate("_fa", "unknown_probes"),
            enrolled_probes=row["enrolled_probes"],
            enrolled_self_match=rate("_self", "enrolled_probes"),
        )
    return stats


def evaluate(
    spark: SparkSession,
    model_uris: Sequence[str],
    input: str,
    cfg: FacesConfig,
    *,
    enrolled_split: str = "test",
    impostor_split: str = "val",
    score_cfg: ScoreConfig | None = None,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Identification figures of each model's embedding on identities held out from training.

    CelebA partitions are identity-disjoint and embedding models train on the train split, so
    both splits used here hold people no model has seen. ``enrolled_split``'s identities are
    enrolled from their first ``cfg.gallery_images`` images (ordered by ``id``) and their other
    images are the genuine probes; ``impostor_split``'s identities are never enrolled. Figures
    (``metrics.open_set_identification``): ``rank1`` among the enrolled identities, ``tar`` (probes
    identified correctly and accepted) at the threshold whose false-accept rate on the impostors
    is ``cfg.evaluate_far``, and the achieved ``far``.

    Args:
        spark: The session.
        model_uris: Embedding models (``face_embed``, the VAE, ...); each is evaluated alike.
        input: An ingested CelebA dataset.
        cfg: ``gallery_images`` and ``evaluate_far``.
        enrolled_split: Split whose identities are enrolled.
        impostor_split: Split of the never-enrolled identities.
        score_cfg: Batch sizes for the embedding models.
        tracking: The MLflow server holding the models.

    Returns:
        ``input``, ``protocol`` and ``models``: per model its ``model`` info, ``embedding`` column
        and figures (``rank1``, ``tar``, ``far``, ``threshold``, ``identities``, ``probes``,
        ``impostors``, ``chance_rank1``).

    Raises:
        ValueError: Not a dataset, no model, or a model without an embedding output.
    """
    from pyspark.sql import functions as F

    from sparkvision.models.metrics import open_set_identification

    if not model_uris:
        raise ValueError("faces evaluate: expected at least one embedding model, found none")
    _require_dataset(input, "faces evaluate")
    score_cfg = score_cfg or ScoreConfig()
    results = []
    with session_conf(spark, batch.job_conf(spark, score_cfg)):
        rows = batch.read_input(spark, input).where(F.col("split").isin([enrolled_split, impostor_split]))
        for uri in model_uris:
            t0 = time.perf_counter()
            model = batch.resolve_model(spark, uri, tracking)
            column = embedding_column(model)
            embedded = _embed(rows, model, score_cfg, ["id", "identity", "split"]).where(F.col(ERROR_CODE).isNull())
            frame = embedded.select("id", "identity", "split", "embedding").toPandas().sort_values("id")
            if frame.empty:
                raise ValueError(
                    f"faces evaluate: no usable image of splits {enrolled_split}/{impostor_split} in {input}"
                )
            emb = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
            enrolled = (frame["split"] == enrolled_split).to_numpy()
            figures = open_set_identification(emb, frame["identity"].to_numpy(), enrolled,
                                              gallery_images=cfg.gallery_images, far=cfg.evaluate_far)  # fmt: skip
            figures = {k: (None if not np.isfinite(v) else round(float(v), 4)) for k, v in figures.items()}
            n_ids = figures["identities"] or 0
            results.append({"model": model.info(), "embedding": column, **figures,
                            "chance_rank1": round(1 / n_ids, 4) if n_ids else None,
                            "seconds": round(time.perf_counter() - t0, 3)})  # fmt: skip
            log.info("%s (%s): rank-1 %s, TAR %s at FAR %s", model.pinned_uri, column, figures["rank1"],
                     figures["tar"], figures["far"])  # fmt: skip
    protocol = {"enrolled_split": enrolled_split, "impostor_split": impostor_split,
                "gallery_images": cfg.gallery_images, "target_far": cfg.evaluate_far}  # fmt: skip
    return {"input": str(input), "protocol": protocol, "models": results}


def log_evaluation(tracking: Tracking, result: dict[str, Any]) -> list[str]:
    """Log ``evaluate``'s figures on the run of each evaluated model, so its report can show them.

    Each run gets its own figures as ``faces_rank1``, ``faces_tar``, ``faces_far``, ...
    (``EVALUATION_METRICS``), the rank-1 of the first model of every other family evaluated
    beside it as ``faces_rank1_<family>`` (``faces_rank1_vae``: the VAE's ``mu``, the baseline of
    ``face_embed``'s headline, ``sparkvision.headlines``) and the whole result as
    ``EVALUATION_ARTIFACT``.

    Args:
        tracking: The MLflow server holding the models.
        result: What ``evaluate`` returned.

    Returns:
        The runs written to (models without a run are left out).
    """
    models = result["models"]
    first_of_family: dict[str, float] = {}
    for m in models:
        if m["model"].get("task") and m.get("rank1") is not None:
            first_of_family.setdefault(m["model"]["task"], m["rank1"])
    written = []
    for m in models:
        run_id, task = m["model"].get("run_id"), m["model"].get("task")
        if not run_id:
            continue
        figures = {f"faces_{k}": m[k] for k in EVALUATION_METRICS if m.get(k) is not None}
        figures |= {f"faces_rank1_{family}": rank1 for family, rank1 in first_of_family.items() if family != task}
        tracking.log_metrics(run_id, figures, step=0)
        tracking.log_text(run_id, json.dumps(result, indent=2, default=str), EVALUATION_ARTIFACT)
        written.append(run_id)
    log.info("faces evaluate: figures logged as faces_* metrics and %s on run(s) %s", EVALUATION_ARTIFACT,
             ", ".join(written) or "(none: no model came from a run)")  # fmt: skip
    return written
