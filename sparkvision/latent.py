"""The VAE's latent space as tools (``sparkvision vae``): attribute vectors from a Spark job over a
dataset's train split, new faces from the prior, a photo moved along attribute vectors, and
interpolation between two photos.

``compute_vectors`` scores the train split with the registered VAE (``scoring.batch``: the model is
shipped to the executors, each image prepared exactly as at training time) and sums ``mu`` on the
executors. An attribute's vector is taken within identities where it can be: for every person with
images both with and without it, the mean ``mu`` of those with it minus the mean of those without,
averaged over such people (``MIN_PAIRS`` at least). So a smile vector is what a smile changes in one
face, and an Eyeglasses vector does not also carry who the glasses wearers of the train split happen
to be. Attributes bound to a person (sex, hair colour) have no such pairs: theirs is the mean ``mu`` of
all images with it minus the mean of all without. ``save_vectors`` keeps them as the table artifact
``latent/attribute_vectors.parquet`` on the model's training run (one row per attribute: name,
counts with and without, people with both, how it was taken, norm, vector), where ``load_vectors``
finds them for ``morph``.

A user's photo goes through ``images.prepare_image`` with the model's ``image_size``, ``crop`` and
``image_rules``: the same preprocessing as ingest and the model's pyfunc. Every picture is written to
the output folder and logged to the model's run under ``latent/``.

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import io
import logging
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision import storage, tempdirs
from sparkvision.data.schema import CELEBA_ATTRIBUTES, ERROR_CODE

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession

    from sparkvision.config import ScoreConfig
    from sparkvision.scoring.batch import ResolvedModel
    from sparkvision.tracking import Tracking

log = logging.getLogger(__name__)

LATENT_DIR = "latent"
"""Artifact folder of the model's run holding the vectors and every picture of ``sparkvision vae``."""
VECTORS_FILE = "attribute_vectors.parquet"
VECTORS_ARTIFACT = f"{LATENT_DIR}/{VECTORS_FILE}"
MIN_PAIRS = 5
"""People with images both with and without an attribute needed for a within-identity vector."""


class LatentError(ValueError):
    """A latent-space request that cannot be met: unknown attribute, no vectors, not a VAE, bad steps."""


# --------------------------------------------------------------------------- attribute vectors


@dataclass(frozen=True)
class Vectors:
    """Attribute vectors of one VAE over one dataset's train split.

    Attributes:
        names: Attribute names, in ``CELEBA_ATTRIBUTES`` order.
        vectors: ``float32 (len(names), z)``; NaN for an attribute every image has or none has.
        positives: Images with each attribute.
        negatives: Images without it.
        model_uri: The pinned model version whose ``mu`` was used.
        dataset: The dataset version read (its folder URL).
        pairs: People with images both with and without each attribute.
        methods: How each vector was taken: ``identity`` (within people) or ``global``.
    """

    names: tuple[str, ...]
    vectors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    model_uri: str
    dataset: str
    pairs: np.ndarray | None = None
    methods: tuple[str, ...] = ()

    def vector(self, name: str) -> np.ndarray:
        """The vector of ``name``.

        Raises:
            LatentError: Unknown attribute (with the nearest name), or one without images on both sides.
        """
        if name not in self.names:
            import difflib

            near = difflib.get_close_matches(name, self.names, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]}?" if near else f" (one of {', '.join(self.names)})"
            raise LatentError(f"attribute {name!r}: expected a CelebA attribute name, found none of that name{hint}")
        i = self.names.index(name)
        if self.positives[i] == 0 or self.negatives[i] == 0:
            raise LatentError(f"attribute {name}: expected train images with and without it, found "
                              f"{int(self.positives[i])} with and {int(self.negatives[i])} without")  # fmt: skip
        return self.vectors[i]

    def to_frame(self) -> pd.DataFrame:
        """One row per attribute: ``attribute``, ``positives``, ``negatives``, ``norm``, ``vector``, lineage."""
        import pandas as pd

        norms = np.linalg.norm(np.nan_to_num(self.vectors), axis=1)
        return pd.DataFrame({
            "attribute": list(self.names),
            "positives": self.positives.astype(np.int64),
            "negatives": self.negatives.astype(np.int64),
            "pairs": (self.pairs if self.pairs is not None else np.zeros(len(self.names))).astype(np.int64),
            "method": list(self.methods or ("global",) * len(self.names)),
            "norm": norms.astype(np.float64),
            "vector": [None if np.isnan(v).any() else v.astype(np.float32).tolist() for v in self.vectors],
            "model_uri": self.model_uri,
            "dataset": self.dataset,
        })  # fmt: skip

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Vectors:
        """The inverse of ``to_frame``."""
        dim = max((len(v) for v in frame["vector"] if v is not None), default=0)
        vectors = np.full((len(frame), dim), np.nan, np.float32)
        for i, v in enumerate(frame["vector"]):
            if v is not None:
                vectors[i] = np.asarray(v, np.float32)
        pairs = frame["pairs"].to_numpy(np.int64) if "pairs" in frame else None  # older tables: global only
        methods = tuple(str(m) for m in frame["method"]) if "method" in frame else ()
        return cls(tuple(str(n) for n in frame["attribute"]), vectors, frame["positives"].to_numpy(np.int64),
                   frame["negatives"].to_numpy(np.int64), str(frame["model_uri"].iloc[0]),
                   str(frame["dataset"].iloc[0]), pairs, methods)  # fmt: skip


class _PartialSums:
    """``mapInPandas`` function: per Arrow batch, the image count, the sum of ``mu``, and per attribute
    the images with it and the sum of their ``mu`` (a flat ``attributes × z`` array)."""

    def __init__(self, n_attributes: int) -> None:
        self.n_attributes = n_attributes

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for frame in batches:
            if frame.empty:
                continue
            mu = np.stack(frame["mu"].to_numpy()).astype(np.float64)
            has = (np.stack(frame["attributes"].to_numpy()).astype(np.float64) > 0.5).astype(np.float64)
            yield pd.DataFrame({
                "n": [len(mu)],
                "total": [mu.sum(axis=0).tolist()],
                "positives": [has.sum(axis=0).astype(np.int64).tolist()],
                "positive_sum": [(has.T @ mu).reshape(-1).tolist()],
            })  # fmt: skip


class _IdentityDifferences:
    """``mapInPandas`` function over rows partitioned by ``identity``: per partition, for each attribute,
    the people with images both with and without it and the sum over them of (mean ``mu`` with it minus
    mean ``mu`` without it), flat ``attributes × z``."""

    def __init__(self, n_attributes: int) -> None:
        self.n_attributes = n_attributes

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        frames = [f for f in batches if not f.empty]
        if not frames:
            return
        frame = pd.concat(frames, ignore_index=True)  # one partition: a few thousand small rows
        mu = np.stack(frame["mu"].to_numpy()).astype(np.float64)
        has = np.stack(frame["attributes"].to_numpy()).astype(np.float64) > 0.5
        pairs = np.zeros(self.n_attributes, np.int64)
        total = np.zeros((self.n_attributes, mu.shape[1]))
        for rows in frame.groupby("identity").indices.values():
            h, m = has[rows], mu[rows]
            n_pos = h.sum(axis=0)
            both = (n_pos > 0) & (n_pos < len(rows))
            if not both.any():
                continue
            pos_mean = (h[:, both].T.astype(np.float64) @ m) / n_pos[both, None]
            neg_mean = ((~h[:, both]).T.astype(np.float64) @ m) / (len(rows) - n_pos[both])[:, None]
            total[both] += pos_mean - neg_mean
            pairs[both] += 1
        yield pd.DataFrame({"pairs": [pairs.tolist()], "difference_sum": [total.reshape(-1).tolist()]})


def compute_vectors(
    spark: SparkSession, model: ResolvedModel, data: str, cfg: ScoreConfig, split: str = "train"
) -> tuple[Vectors, dict[str, Any]]:
    """Attribute vectors of ``model`` over the ``split`` rows of an ingested CelebA dataset (a Spark job).

    Args:
        spark: The session; ``model`` already shipped to its executors (``batch.resolve_model``).
        model: A resolved VAE.
        data: An ingested CelebA dataset (its current version is read).
        cfg: Batch sizes and partitioning of the scoring job.
        split: The split whose images are used.

    Returns:
        The vectors and the job's counts (``rows``, ``used``, ``failed``, ``dataset``).

    Raises:
        LatentError: The model is not a VAE, or the dataset has no ``attributes`` column or no such rows.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from sparkvision.scoring import batch
    from sparkvision.spark import session_conf

    if model.task != "vae":
        raise LatentError(f"{model.uri}: expected a VAE (task vae), found a {model.task} model")
    version = batch.dataset_version(data)
    if version is None:
        raise LatentError(f"{data}: expected an ingested CelebA dataset (manifest.json), found none")
    rows = spark.read.parquet(version.location.join("data").spark)
    if "attributes" not in rows.columns:
        raise LatentError(f"{data}: expected a CelebA table with an 'attributes' column, found {sorted(rows.columns)}")
    rows = rows.where(F.col("split") == split)
    n_attr = len(CELEBA_ATTRIBUTES)
    keep = ["attributes", *(["identity"] if "identity" in rows.columns else [])]
    # Persisted (mu and labels only, no image bytes): counted and summed without scoring twice.
    with session_conf(spark, batch.job_conf(spark, cfg)):
        scored = batch.apply_model(rows, model, cfg, keep=keep).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counted = scored.groupBy(F.col(ERROR_CODE).isNull().alias("ok")).count().collect()
            ok = scored.where(F.col(ERROR_CODE).isNull()).select("mu", *keep)
            parts = ok.select("mu", "attributes").mapInPandas(
                _PartialSums(n_attr), "n long, total array<double>, positives array<long>, positive_sum array<double>"
            ).collect()  # fmt: skip
            within = []
            if "identity" in keep:  # all images of one person in one partition
                within = (
                    ok.repartition(spark.sparkContext.defaultParallelism, "identity")
                    .mapInPandas(_IdentityDifferences(n_attr), "pairs array<long>, difference_sum array<double>")
                    .collect()
                )
        finally:
            scored.unpersist()
    failed = sum(r["count"] for r in counted if not r["ok"])
    if not parts:
        raise LatentError(f"{data}: expected {split} images the model could read, found none ({failed} failed)")
    n = sum(int(p["n"]) for p in parts)
    total = np.sum([np.asarray(p["total"]) for p in parts], axis=0)
    pos = np.sum([np.asarray(p["positives"], np.int64) for p in parts], axis=0)
    pos_sum = np.sum([np.asarray(p["positive_sum"]) for p in parts], axis=0).reshape(n_attr, -1)
    neg = n - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        vectors = pos_sum / pos[:, None] - (total[None, :] - pos_sum) / neg[:, None]
    vectors[(pos == 0) | (neg == 0)] = np.nan
    pairs = np.sum([np.asarray(w["pairs"], np.int64) for w in within], axis=0) if within else np.zeros(n_attr, int)
    methods = ["global"] * n_attr
    if within:
        differences = np.sum([np.asarray(w["difference_sum"]) for w in within], axis=0).reshape(n_attr, -1)
        for i in np.flatnonzero(pairs >= MIN_PAIRS):
            vectors[i] = differences[i] / pairs[i]
            methods[i] = "identity"
    result = Vectors(CELEBA_ATTRIBUTES, vectors.astype(np.float32), pos, neg, model.pinned_uri, version.url,
                     pairs.astype(np.int64), tuple(methods))  # fmt: skip
    return result, {"rows": n + failed, "used": n, "failed": failed, "dataset": version.url,
                    "version": version.version}  # fmt: skip


def save_vectors(vectors: Vectors, out: str | Path, tracking: Tracking | None, run_id: str | None) -> Path:
    """Write the vectors table to ``out/attribute_vectors.parquet`` and log it as ``latent/`` of the model's run."""
    path = Path(out) / VECTORS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors.to_frame().to_parquet(path, index=False)
    if tracking is not None and run_id:
        tracking.log_artifact(run_id, path, LATENT_DIR)
    return path


def load_vectors(tracking: Tracking | None, run_id: str | None, model_uri: str) -> Vectors:
    """The vectors ``vae vectors`` logged to the model's run.

    Raises:
        LatentError: The run has none (the message says which command makes them).
    """
    import pandas as pd

    if tracking is None or not run_id or VECTORS_ARTIFACT not in tracking.list_artifacts(run_id, LATENT_DIR):
        raise LatentError(f"{model_uri}: expected attribute vectors ({VECTORS_ARTIFACT} on the model's run), found "
                          f"none; run: sparkvision vae vectors --model-uri {model_uri} --data DATASET")  # fmt: skip
    with tempdirs.temporary_directory("sv-vectors-") as tmp:
        return Vectors.from_frame(pd.read_parquet(tracking.download(run_id, VECTORS_ARTIFACT, tmp)))


# --------------------------------------------------------------------------- the model on the driver


@dataclass
class LatentModel:
    """A registered VAE loaded on the driver: encoder, decoder, meta and where it came from."""

    encoder: Any
    decoder: Any
    meta: dict[str, Any]
    resolved: ResolvedModel

    @property
    def run_id(self) -> str | None:
        return self.resolved.run_id

    @property
    def latent_dim(self) -> int:
        return int(self.decoder.inputs[0].shape[-1])

    def prepare(self, data: bytes, name: str = "image") -> np.ndarray:
        """An encoded image prepared exactly as the model's training data: ``float32 (S, S, 3)`` in [0, 1].

        Raises:
            LatentError: The image cannot be used (the reason code and message of ``images.ImageError``).
        """
        from sparkvision.data import images

        rules = images.Rules.of(self.meta.get("image_rules", {}))
        try:
            return images.prepare_image(data, int(self.meta["image_size"]), self.meta.get("crop", "center_square"),
                                        rules)  # fmt: skip
        except images.ImageError as exc:
            raise LatentError(f"{name}: {exc.reason}: {exc.message}") from exc

    def encode(self, x: np.ndarray) -> np.ndarray:
        from sparkvision.models import vae

        return vae.encode(self.encoder, x)

    def decode(self, z: np.ndarray) -> np.ndarray:
        from sparkvision.models import vae

        return vae.decode(self.decoder, z)


def load_model(model_uri: str, tracking: Tracking | None) -> LatentModel:
    """Resolve, download and load a registered VAE on the driver (no Spark).

    Raises:
        LatentError: The model is not a VAE.
    """
    import mlflow.pyfunc

    from sparkvision.scoring import batch

    resolved = batch.resolve_model(None, model_uri, tracking)
    if resolved.task != "vae":
        raise LatentError(f"{model_uri}: expected a VAE (task vae), found a {resolved.task} model")
    vision = mlflow.pyfunc.load_model(resolved.local_path).unwrap_python_model()
    return LatentModel(vision.model.encoder, vision.model.decoder, dict(vision.meta), resolved)


def read_image(path_or_url: str) -> bytes:
    """The bytes of a local file, a filesystem URL (``storage``) or an ``http(s)://`` address.

    Raises:
        LatentError: Nothing readable there.
    """
    try:
        if path_or_url.lower().startswith(("http://", "https://")):
            with urllib.request.urlopen(path_or_url, timeout=30) as response:  # noqa: S310 - scheme checked
                return response.read()
        where = storage.location(path_or_url)
        if not where.is_file():
            raise LatentError(f"{path_or_url}: expected an image file, found nothing there")
        return where.read_bytes()
    except OSError as exc:
        raise LatentError(f"{path_or_url}: could not read the image: {exc}") from exc


# --------------------------------------------------------------------------- requests


def parse_steps(text: str) -> np.ndarray:
    """``START:STOP:COUNT`` (``-3:3:7``), or comma-separated factors (``-1,0,2``), as ``float32``.

    Raises:
        LatentError: Anything else.
    """
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            if int(count) < 1:
                raise ValueError
            return np.linspace(float(start), float(stop), int(count), dtype=np.float32)
        return np.asarray([float(v) for v in text.split(",") if v.strip()], np.float32)
    except ValueError:
        raise LatentError(f"--steps: expected START:STOP:COUNT (e.g. -3:3:7) or factors (-1,0,2), found {text!r}") \
            from None  # fmt: skip


def parse_attributes(text: str) -> dict[str, float]:
    """``Smiling`` or ``Smiling=+2,Eyeglasses=+1`` → ``{name: weight}`` (a bare name weighs 1).

    Raises:
        LatentError: An empty list or a weight that is not a number.
    """
    out: dict[str, float] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, weight = item.partition("=")
        try:
            out[name.strip()] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise LatentError(f"--attribute {item!r}: expected NAME or NAME=WEIGHT (e.g. Smiling=+2), found a "
                              f"weight that is not a number") from None  # fmt: skip
    if not out:
        raise LatentError(f"--attribute: expected NAME or NAME=WEIGHT,... (e.g. Smiling=+2,Eyeglasses=+1), "
                          f"found {text!r}")  # fmt: skip
    return out


def direction(vectors: Vectors, weights: Mapping[str, float]) -> np.ndarray:
    """``Σ weight × vector``: one step of the morph (a weight of 1 moves by the attribute's mean difference)."""
    return np.sum([w * vectors.vector(n) for n, w in weights.items()], axis=0).astype(np.float32)


def generate(model: LatentModel, count: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
    """``count`` new faces decoded from codes drawn with ``seed`` where the training faces' codes lie
    (``models.vae.sample_codes``: the fitted Gaussian, its spread times ``temperature``)."""
    from sparkvision.models import vae

    return model.decode(vae.sample_codes(model.meta, model.latent_dim, count, seed, temperature))


def sampling(model: LatentModel) -> str:
    """How ``generate`` draws codes, for titles and messages."""
    if model.meta.get("latent_mean") is not None:
        return "the Gaussian fitted to the validation faces' codes"
    return "the prior N(0, I) (a model trained before codes were fitted)"


def morph(model: LatentModel, x: np.ndarray, step: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Decode ``mu(x) + f × step`` for every factor: ``(N, len(factors), S, S, 3)`` for ``N`` images."""
    mu = model.encode(np.asarray(x, np.float32).reshape(-1, *np.shape(x)[-3:]))
    z = mu[:, None, :] + np.asarray(factors, np.float32)[None, :, None] * np.asarray(step, np.float32)[None, None, :]
    out = model.decode(z.reshape(-1, mu.shape[1]))
    return out.reshape(len(mu), len(factors), *out.shape[1:])


def interpolate(model: LatentModel, a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """Decode ``steps`` points from ``mu(a)`` to ``mu(b)``, both ends included: ``(steps, S, S, 3)``."""
    mu = model.encode(np.stack([a, b]))
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return model.decode((1 - t) * mu[0] + t * mu[1])


# --------------------------------------------------------------------------- judging the vectors


def judged_moves(model: LatentModel, judge: Any, x: np.ndarray, step: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mean probability the attribute CNN ``judge`` gives each of its attributes to ``x`` moved by each factor
    times ``step``: ``(len(factors), attributes)``.

    Args:
        model: The VAE.
        judge: A loaded attributes ``VisionModel`` (``unwrap_python_model()``).
        x: Held-out prepared images at the VAE's size.
        step: One step in z (a vector, or ``direction``).
        factors: Steps along it.
    """
    import pandas as pd

    moved = morph(model, x, step, factors)
    # As image files through the judge's own preprocessing (its size may differ from the VAE's).
    frame = pd.DataFrame({"image": [png_bytes(img) for img in moved.reshape(-1, *moved.shape[2:])]})
    probs = np.stack(judge.predict(None, frame)["probabilities"].to_numpy())
    return probs.reshape(len(x), len(factors), -1).mean(axis=0)


def judge_vectors(
    spark: SparkSession,
    tracking: Tracking | None,
    vae_uri: str,
    judge_uri: str,
    data: str,
    attributes: Sequence[str],
    factors: Sequence[float],
    cfg: ScoreConfig,
    rows: int = 48,
    moved: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Vectors of ``vae_uri`` over the train split (``compute_vectors``), then each ``moved`` attribute's
    vector judged on ``rows`` test faces that do not have it: the check that the vectors do what they say
    and leave the rest of the face alone (tests and ``benchmarks/quality.py``).

    Args:
        attributes: Attributes the judge must predict: the moved ones and those that must stay put.
        factors: Steps along each vector; 0 (the reconstruction) must be among them.
        rows: Test faces per moved attribute (fewer when the split has fewer without it).
        moved: Attributes moved along their vectors (default: all of ``attributes``).

    Returns:
        ``curves`` (``{moved: [its judged probability per factor]}``), ``rise`` (``{moved: at the largest
        factor minus at 0}``), ``others`` (``{moved: {other attribute: its change at the largest factor
        minus at 0}}``), ``counts`` (of ``compute_vectors``), ``faces`` (fewest judged per attribute),
        ``vectors`` and ``x`` (the faces judged for the first moved attribute).

    Raises:
        LatentError: An attribute the judge does not predict, or no factor 0.
    """
    import mlflow.pyfunc

    from sparkvision.models.common import decode_column, stack_column
    from sparkvision.scoring import batch

    moved = list(moved or attributes)
    factor_array = np.asarray(factors, np.float32)
    if not np.any(factor_array == 0):
        raise LatentError(f"factors: expected 0 (the reconstruction) among them, found {list(factors)}")
    zero, top = int(np.flatnonzero(factor_array == 0)[0]), int(np.argmax(factor_array))
    vectors, counts = compute_vectors(spark, batch.resolve_model(spark, vae_uri, tracking), data, cfg)
    model = load_model(vae_uri, tracking)
    judge = mlflow.pyfunc.load_model(batch.resolve_model(None, judge_uri, tracking).local_path).unwrap_python_model()
    names = list(judge.meta.get("attribute_names") or [])
    missing = [a for a in (*attributes, *moved) if a not in names]
    if missing:
        raise LatentError(f"judge: expected an attribute model that predicts {missing}, found {names}")
    version = batch.dataset_version(data)
    assert version is not None  # compute_vectors checked it
    test = spark.read.parquet(version.location.join("data").spark).where("split = 'test'")
    frame = test.select("image", "attributes").orderBy("id").limit(max(20 * rows, 1000)).toPandas()
    has = stack_column(frame, "attributes").reshape(len(frame), -1) > 0.5
    curves, rise, others, faces, first = {}, {}, {}, [], None
    for name in moved:
        pick = frame[~has[:, CELEBA_ATTRIBUTES.index(name)]].head(rows)
        x = decode_column(pick, int(model.meta["image_size"]))
        probs = judged_moves(model, judge, x, vectors.vector(name), factor_array)
        j = names.index(name)
        curves[name] = [float(v) for v in probs[:, j]]
        rise[name] = float(probs[top, j] - probs[zero, j])
        others[name] = {o: float(probs[top, names.index(o)] - probs[zero, names.index(o)])
                        for o in attributes if o not in moved}  # fmt: skip
        faces.append(len(x))
        first = x if first is None else first
    return {"curves": curves, "rise": rise, "others": others, "counts": counts, "faces": min(faces),
            "vectors": vectors, "x": first}  # fmt: skip


# --------------------------------------------------------------------------- pictures


def save_and_log(
    rows: Sequence[Sequence[np.ndarray]], out: str | Path, name: str, model: LatentModel, tracking: Tracking | None,
    **grid: Any,
) -> tuple[Path, str | None]:  # fmt: skip
    """Save a grid as ``out/name`` and log it to the model's run as ``latent/name``.

    Returns:
        The local file and the artifact path on the run (None when the model has no run).
    """
    from sparkvision import pictures

    path = pictures.save_grid(rows, Path(out) / name, **grid)
    if tracking is None or not model.run_id:
        return path, None
    tracking.log_artifact(model.run_id, path, LATENT_DIR)
    return path, f"{LATENT_DIR}/{name}"


def png_bytes(image: np.ndarray) -> bytes:
    """A ``[0, 1]`` float image as PNG bytes (what a notebook or a test hands back to ``prepare``)."""
    from PIL import Image

    from sparkvision.pictures import to_uint8

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()
