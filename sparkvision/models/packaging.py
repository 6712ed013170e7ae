"""The MLflow pyfunc that carries a trained model, its meta and its preprocessing.

``log_vision_model`` logs ``VisionModel`` into the active run with the sparkvision package as
code, so ``mlflow.pyfunc.load_model("models:/NAME@ALIAS").predict(df)`` works anywhere: ``df``
has an ``image`` column of encoded image bytes (any size or format), each image is prepared
exactly like the training data (``sparkvision.data.images.prepare_image`` with the model's
``image_size``, ``crop`` and ``image_rules``: the ingest validation of its training data,
ingest's defaults for a model without them) and the Task's ``predict`` gives the output columns. Rows whose
image cannot be used get null outputs and an ``error_code``/``error_message`` instead of
failing the batch.

This module imports MLflow at the top; import it inside functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

from sparkvision import tempdirs
from sparkvision.data import schema

if TYPE_CHECKING:
    import tensorflow as tf
    from mlflow.models.model import ModelInfo

    from sparkvision.models.base import Meta, Task

MODEL_ARTIFACT = "keras_model"
META_ARTIFACT = "meta"
ERROR_COLUMNS: list[tuple[str, str]] = [(f.name, f.spark_type.simpleString()) for f in schema.ERRORS]
"""Added to every task's outputs (``schema.ERRORS``): null for a scored row, a reason code and a
message for a row that could not be scored."""
REQUIREMENTS = ("tensorflow-cpu", "mlflow", "numpy", "pandas", "pillow", "scipy", "pyyaml", "pyspark")


class VisionModel(mlflow.pyfunc.PythonModel):
    """A Keras model + meta + Task behind the pyfunc interface.

    After ``mlflow.pyfunc.load_model(uri)``, ``loaded.unwrap_python_model()`` is this object:
    ``model`` (Keras), ``meta``, ``task``, ``predict_arrays(x)`` and ``output_schema()``.

    Args:
        batch_size: Images per Keras call inside ``predict``.
    """

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self.model: tf.keras.Model | None = None
        self.meta: Meta = {}
        self.task: Task | None = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the Keras model and ``meta.json`` from the model's artifacts."""
        self.load(context.artifacts[MODEL_ARTIFACT], context.artifacts[META_ARTIFACT])

    def load(self, model_path: str | Path, meta_path: str | Path) -> None:
        """Load a saved Keras model (custom sparkvision layers included) and its meta file."""
        import tensorflow as tf

        from sparkvision.models import get_task
        from sparkvision.models.layers import custom_objects_dict

        self.meta = json.loads(Path(meta_path).read_text())
        self.task = get_task(self.meta["task"])
        self.model = tf.keras.models.load_model(str(model_path), custom_objects=custom_objects_dict(), compile=False)

    def output_schema(self) -> list[tuple[str, str]]:
        """``(column, Spark DDL type)`` of ``predict``'s result: the task's outputs, then the error columns."""
        assert self.task is not None, "VisionModel is not loaded"
        return [*self.task.output_schema(self.meta), *ERROR_COLUMNS]

    def predict_arrays(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Task outputs for already prepared ``float32 (N, S, S, 3)`` images in [0, 1].

        Raises:
            ValueError: When the images do not have the model's shape.
        """
        assert self.task is not None and self.model is not None, "VisionModel is not loaded"
        x = np.asarray(x, dtype=np.float32)
        size = int(self.meta["image_size"])
        if x.ndim != 4 or x.shape[1:] != (size, size, 3):
            raise ValueError(f"predict_arrays: expected images of shape (N, {size}, {size}, 3), found {x.shape}")
        parts = [self.task.predict(self.model, x[i : i + self.batch_size], self.meta)
                 for i in range(0, len(x), self.batch_size)]  # fmt: skip
        if not parts:
            return {name: np.zeros(0) for name, _ in self.task.output_schema(self.meta)}
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Score a DataFrame with an ``image`` column of encoded bytes; one output row per input row.

        Raises:
            ValueError: When there is no ``image`` column.
        """
        if not isinstance(model_input, pd.DataFrame) or "image" not in model_input.columns:
            found = list(model_input.columns) if isinstance(model_input, pd.DataFrame) else type(model_input).__name__
            raise ValueError(f"VisionModel.predict: expected a DataFrame with an 'image' column, found {found}")
        prepared = self.prepare(model_input["image"].tolist())
        return self.assemble(prepared, self.predict_arrays(prepared.x) if prepared.good else {})

    def prepare(self, values: list[Any]) -> Prepared:
        """Decode and prepare encoded images exactly like the training data (no TensorFlow involved).

        Scoring calls it on a thread for the next batch while ``predict_arrays`` runs on this one;
        ``predict`` is ``assemble(prepare(values), predict_arrays(prepared.x))``.
        """
        from sparkvision.data import images

        size, crop = int(self.meta["image_size"]), self.meta.get("crop", "center_square")
        rules = images.Rules.of(self.meta.get("image_rules", {}))
        n = len(values)
        codes: list[str | None] = [None] * n
        messages: list[str | None] = [None] * n
        good: list[int] = []
        arrays: list[np.ndarray] = []
        for i, value in enumerate(values):
            try:
                if value is None or (isinstance(value, float) and np.isnan(value)):
                    raise images.ImageError(images.MISSING_IMAGE, "image is null")
                arrays.append(images.prepare_image(bytes(value), size, crop, rules))
                good.append(i)
            except images.ImageError as exc:
                codes[i], messages[i] = exc.reason, exc.message
            except Exception as exc:  # noqa: BLE001 - one odd value must not fail the batch
                codes[i], messages[i] = images.UNREADABLE, f"{type(exc).__name__}: {exc}"[:1000]
        x = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32)
        return Prepared(x, good, codes, messages)

    def assemble(self, prepared: Prepared, outputs: dict[str, np.ndarray]) -> pd.DataFrame:
        """The output rows of ``prepare``'s images: task outputs where prepared, null and the error elsewhere."""
        n = len(prepared.codes)
        frame = pd.DataFrame(index=range(n))
        for name, ddl in self.task.output_schema(self.meta):  # type: ignore[union-attr]
            frame[name] = _column(outputs.get(name), prepared.good, n, ddl)
        frame[schema.ERROR_CODE] = pd.Series(prepared.codes, dtype=object)
        frame[schema.ERROR_MESSAGE] = pd.Series(prepared.messages, dtype=object)
        return frame


@dataclass(frozen=True)
class Prepared:
    """A batch of images as ``VisionModel.prepare`` left them.

    Attributes:
        x: ``float32 (len(good), S, S, 3)`` images in [0, 1].
        good: Row positions of ``x``'s images in the batch.
        codes: Per row, the reason it cannot be scored (None when prepared).
        messages: Per row, what was expected and what was found (None when prepared).
    """

    x: np.ndarray
    good: list[int]
    codes: list[str | None]
    messages: list[str | None]


def _column(values: np.ndarray | None, rows: list[int], n: int, ddl: str) -> pd.Series:
    """Scatter per-image outputs into a column of ``n`` rows, null where there is no output."""
    if ddl.startswith("array<"):
        cells: list[Any] = [None] * n
        for j, i in enumerate(rows):
            cells[i] = np.asarray(values[j]).tolist() if values is not None else None  # type: ignore[index]
        return pd.Series(cells, dtype=object)
    dtype = {"float": "float32", "double": "float64", "boolean": "boolean", "int": "Int32", "bigint": "Int64"}
    series = pd.Series([None] * n, dtype=dtype.get(ddl, object))
    if values is not None and rows:
        series.iloc[rows] = np.asarray(values).tolist()
    return series


_MLFLOW_TYPES = {"float": "float", "double": "double", "boolean": "boolean", "int": "integer", "bigint": "long",
                 "string": "string", "binary": "binary"}  # fmt: skip


def signature_for(output_schema: list[tuple[str, str]]) -> Any:
    """The MLflow ``ModelSignature``: input ``image`` (binary), outputs as given (Spark DDL types)."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    cols = []
    for name, ddl in output_schema:
        if ddl.startswith("array<"):
            cols.append(ColSpec(Array(DataType[_MLFLOW_TYPES[ddl[6:-1]]]), name))
        else:
            cols.append(ColSpec(_MLFLOW_TYPES[ddl], name, required=False))
    # The input is optional so a null image reaches ``predict`` and becomes an error row.
    return ModelSignature(inputs=Schema([ColSpec("binary", "image", required=False)]), outputs=Schema(cols))


def _inference_copy(model: tf.keras.Model, image_size: int) -> tf.keras.Model:
    """The same network and weights without the optimizer (which may be a Horovod wrapper)."""
    import tensorflow as tf

    from sparkvision.models.layers import custom_objects_dict

    objects = custom_objects_dict()
    with tf.keras.utils.custom_object_scope(objects):
        copy = type(model).from_config(model.get_config())
    copy(np.zeros((1, image_size, image_size, 3), np.float32), training=False)
    copy.set_weights(model.get_weights())
    return copy


def _requirements() -> list[str]:
    found = []
    for dist in REQUIREMENTS:
        try:
            found.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def _example_png(size: int) -> bytes:
    from PIL import Image

    from sparkvision.data.images import encode_png

    return encode_png(Image.new("RGB", (size, size), (128, 128, 128)))


def log_vision_model(
    model: tf.keras.Model,
    task_name: str,
    meta: Meta,
    registered_model_name: str | None = None,
    artifact_path: str = "model",
    input_example_images: list[bytes] | None = None,
) -> ModelInfo:
    """Log ``model`` as a ``VisionModel`` pyfunc into the active MLflow run and register it.

    Aliases and version tags are the registry's business: ``sparkvision.tracking.Tracking.log_model``
    calls this and then tags the version with its task and points the alias at it.

    Args:
        model: The trained Keras model (from ``Task.build``).
        task_name: Its ``REGISTRY`` key; must equal ``meta["task"]`` when meta has one.
        meta: The Task's meta (after ``evaluate``: fabric_ae needs its threshold); saved as ``meta.json``.
        registered_model_name: Register the logged model under this name (None: only log).
        artifact_path: Name of the logged model within the run.
        input_example_images: Encoded images for the input example (default: one grey PNG).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``, ...).

    Raises:
        ValueError: On a task name that disagrees with meta or a meta that is not JSON-serialisable.
    """
    import sparkvision
    from sparkvision.models import get_task

    if meta.get("task", task_name) != task_name:
        raise ValueError(f"log_vision_model: task_name '{task_name}' but meta is for '{meta['task']}'")
    task = get_task(task_name)
    meta = {**meta, "task": task_name}
    try:
        meta_text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
    except TypeError as exc:
        raise ValueError(f"log_vision_model: meta is not JSON-serialisable: {exc}") from exc
    examples = input_example_images or [_example_png(int(meta["image_size"]))]
    with tempdirs.temporary_directory("sv-model-") as tmp:
        model_path = Path(tmp) / "model.keras"
        _inference_copy(model, int(meta["image_size"])).save(model_path)
        meta_path = Path(tmp) / "meta.json"
        meta_path.write_text(meta_text)
        info = mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=VisionModel(),
            artifacts={MODEL_ARTIFACT: str(model_path), META_ARTIFACT: str(meta_path)},
            code_paths=[str(Path(sparkvision.__file__).parent)],
            signature=signature_for([*task.output_schema(meta), *ERROR_COLUMNS]),
            input_example=pd.DataFrame({"image": examples}),
            pip_requirements=_requirements(),
            registered_model_name=registered_model_name,
            metadata={"task": task_name, "image_size": int(meta["image_size"]), "crop": meta.get("crop")},
        )
    return info


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} value {value!r}")


def load_vision_model(model_uri: str) -> tuple[tf.keras.Model, Meta, Task]:
    """The raw Keras model, meta and Task of a logged ``VisionModel``.

    Args:
        model_uri: Any MLflow model URI (``models:/NAME@ALIAS``, ``runs:/...``) or a local model folder.
    """
    vision = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    # Duck-typed: the class may come from the model's own copy of the package (code_paths).
    if getattr(vision, "model", None) is None or getattr(vision, "task", None) is None:
        raise ValueError(f"{model_uri}: expected a sparkvision VisionModel, found {type(vision).__name__}")
    return vision.model, vision.meta, vision.task


def read_meta(local_path: str | Path) -> Meta:
    """The meta of a downloaded ``VisionModel`` folder, read without TensorFlow.

    Args:
        local_path: A folder holding the model's ``MLmodel`` file.

    Raises:
        ValueError: The folder is not a sparkvision vision model (no meta artifact).
    """
    from mlflow.models import Model

    flavors = Model.load(str(Path(local_path) / "MLmodel")).flavors
    entry = (flavors.get("python_function", {}).get("artifacts") or {}).get(META_ARTIFACT) or {}
    path = Path(local_path) / str(entry.get("path", ""))
    if not entry.get("path") or not path.is_file():
        raise ValueError(f"{local_path}: expected a sparkvision VisionModel with a '{META_ARTIFACT}' artifact, "
                         f"found a model with flavors {sorted(flavors)} and none")  # fmt: skip
    return json.loads(path.read_text())
