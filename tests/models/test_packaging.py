"""The pyfunc round trip against the real MLflow server: log, register, alias, load by alias,
predict on encoded images of any format with the predictions made before saving; bad images
become error rows."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest

from sparkvision.config import Config
from sparkvision.data.images import prepare_image
from sparkvision.models import get_task

SIZE = 32


def _encode(arr: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _inputs() -> tuple[list[object], list[int]]:
    """Encoded images of several sizes/formats/modes plus unusable values; indexes of the good ones."""
    rng = np.random.default_rng(0)
    arrays = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in ((32, 32), (48, 40), (64, 80), (20, 20))]
    values: list[object] = [
        _encode(arrays[0], "PNG"),
        b"this is not an image",
        _encode(arrays[1], "JPEG"),
        _encode(arrays[2], "PNG", "L"),
        b"",
        _encode(arrays[3], "PNG", "RGBA"),
        None,
    ]
    return values, [0, 2, 3, 5]


CASES = [("vae", "celeba", {}), ("attributes", "celeba", {"attributes": ("Smiling", "Male")}),
         ("attributes", "folder", {}), ("detector", "celeba", {}), ("fabric_ae", "fabric", {})]  # fmt: skip


@pytest.mark.parametrize(("name", "table", "overrides"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_round_trip_through_the_registry(
    mlflow_server: str, cfg: Config, name: str, table: str, overrides: dict
) -> None:
    import mlflow
    import tensorflow as tf
    from mlflow.tracking import MlflowClient

    from sparkvision.models.packaging import load_vision_model, log_vision_model

    tf.keras.utils.set_random_seed(0)
    task = get_task(name)
    fmt = {"celeba": "celeba", "fabric": "mvtec", "folder": "folder"}[table]
    manifest = {"format": fmt, "image_size": SIZE, "class_names": ["cat", "dog", "owl"]}
    meta = task.prepare_meta(manifest, dataclasses.replace(cfg.train, **overrides))
    model = task.build(cfg.train, meta).model
    values, good = _inputs()
    x = np.stack([prepare_image(values[i], SIZE, meta["crop"]) for i in good])
    if name == "fabric_ae":
        task.evaluate(model, x, {"label": np.zeros(len(x), np.int32)}, meta)
    expected = task.predict(model, x, meta)

    registered = f"pkgtest-{name}-{table}"
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("packaging-tests")
    with mlflow.start_run():
        info = log_vision_model(model, name, meta, registered_model_name=registered,
                                input_example_images=[values[0]])  # fmt: skip
    uri = f"models:/{registered}/{info.registered_model_version}"
    assert MlflowClient().get_model_version(registered, str(info.registered_model_version)).run_id

    loaded = mlflow.pyfunc.load_model(uri)
    out = loaded.predict(pd.DataFrame({"image": values}))
    columns = [c for c, _ in task.output_schema(meta)]
    assert list(out.columns) == columns + ["error_code", "error_message"]
    assert len(out) == len(values)
    for j, i in enumerate(good):
        assert out["error_code"][i] is None and out["error_message"][i] is None
        for column in columns:
            got, want = out[column][i], expected[column][j]
            if isinstance(want, (list, str)) or np.asarray(want).dtype == object:
                assert got == want, column
            else:
                np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), rtol=1e-4,
                                           atol=1e-5, err_msg=column)  # fmt: skip
    bad = {1: "not_an_image", 4: "zero_bytes", 6: "missing_image"}
    for i, code in bad.items():
        assert out["error_code"][i] == code and out["error_message"][i]
        assert all(out[c].isna()[i] for c in columns), out.iloc[i]

    vision = loaded.unwrap_python_model()
    assert vision.output_schema() == [*task.output_schema(meta), ("error_code", "string"), ("error_message", "string")]
    arrays = vision.predict_arrays(x)
    for column in columns:
        if np.asarray(expected[column]).dtype != object:
            np.testing.assert_allclose(arrays[column], expected[column], rtol=1e-4, atol=1e-5)

    keras_model, loaded_meta, loaded_task = load_vision_model(uri)
    assert loaded_task.name == name and loaded_meta == {**meta, "task": name}
    assert keras_model.count_params() == model.count_params()


def test_signature_lists_image_input_and_task_outputs() -> None:
    from sparkvision.models.packaging import ERROR_COLUMNS, signature_for

    sig = signature_for([("mu", "array<float>"), ("recon_error", "float"), *ERROR_COLUMNS])
    assert sig.inputs.input_names() == ["image"]
    assert sig.outputs.input_names() == ["mu", "recon_error", "error_code", "error_message"]
