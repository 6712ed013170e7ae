"""The model families: exact VAE sizes, the registry, and for every task a short fit on tiny
learnable rows made of real PNG bytes (through keep_for_training → parse_row → fit), then
arrays → evaluate → pictures → predict with the declared output schema."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparkvision.config import Config, TrainConfig
from sparkvision.data import schema
from sparkvision.data.images import encode_png
from sparkvision.models import REGISTRY, ModelSpec, get_task
from sparkvision.training.optim import make_optimizer

SIZE = 32
SMILING = schema.CELEBA_ATTRIBUTES.index("Smiling")
MALE = schema.CELEBA_ATTRIBUTES.index("Male")


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    return encode_png(Image.fromarray(arr))


def make_frame(table: str, n: int, seed: int = 0) -> pd.DataFrame:
    """Rows of an ingested table whose targets can be learnt from the pixels: a coloured
    rectangle gives the box, landmarks, 'Smiling' (red vs green), 'Male' (left half) and the
    folder class; fabric patches are stripes, defective ones carry a dark blotch (the mask)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img = (rng.random((SIZE, SIZE, 3)) * 40 + 60).astype(np.uint8)
        row: dict[str, object] = {"id": f"{table}_{i}", "height": SIZE, "width": SIZE, "channels": 3}
        if table == "fabric":
            img[:, :, :] = (120 + 60 * np.sin(np.arange(SIZE) / 2.0))[None, :, None].astype(np.uint8)
            label = int(i % 3 == 0)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            if label:
                x0, y0 = rng.integers(2, SIZE - 12, size=2)
                mask[y0 : y0 + 10, x0 : x0 + 10] = 255
                img[mask > 0] = 10
            ys, xs = np.nonzero(mask)
            box = (
                [xs.min() / SIZE, ys.min() / SIZE, (xs.max() + 1) / SIZE, (ys.max() + 1) / SIZE] if label else [0.0] * 4
            )
            row.update(
                label=label, mask=_png(mask), bbox=np.array(box, np.float32), defect_type="x" if label else "good"
            )
        else:
            w, h = rng.integers(8, 16, size=2)
            x0, y0 = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
            cls = int(rng.integers(0, 2))
            img[y0 : y0 + h, x0 : x0 + w] = (230, 30, 30) if cls else (30, 230, 30)
            attrs = np.zeros(40, np.float32)
            attrs[SMILING] = cls
            attrs[MALE] = float(x0 + w / 2 < SIZE / 2)
            box = np.array([x0, y0, x0 + w, y0 + h], np.float32) / SIZE
            pts = np.array([x0, y0, x0 + w, y0, x0 + w / 2, y0 + h / 2, x0, y0 + h, x0 + w, y0 + h], np.float32) / SIZE
            row.update(attributes=attrs, bbox=box, landmarks=pts, identity=i % 4, label=cls,
                       label_name=["green", "red"][cls])  # fmt: skip
        row["image"] = _png(img)
        rows.append(row)
    return pd.DataFrame(rows)


def manifest(table: str) -> dict[str, object]:
    fmt = {"celeba": "celeba", "fabric": "mvtec", "folder": "folder"}[table]
    return {"output": f"/data/{table}", "format": fmt, "image_size": SIZE, "class_names": ["green", "red"]}


def dataset(task, frame: pd.DataFrame, meta: dict, cfg: TrainConfig, table: str):
    import tensorflow as tf

    columns = task.columns_for(table) if hasattr(task, "columns_for") else task.columns
    data = {}
    for c in columns:
        values = frame[c].tolist()
        data[c] = tf.constant(values) if c in ("image", "mask") else tf.constant(np.stack(values))
    ds = tf.data.Dataset.from_tensor_slices(data).filter(task.keep_for_training)
    ds = ds.map(lambda row: task.parse_row(row, meta, cfg, True))
    return ds.shuffle(64, seed=0).repeat().batch(8)


CASES = [
    ("vae", "celeba", {}),
    ("vae", "folder", {}),
    ("attributes", "celeba", {"attributes": ("Smiling", "Male")}),
    ("attributes", "folder", {}),
    ("detector", "celeba", {"detector_target": "bbox"}),
    ("detector", "celeba", {"detector_target": "landmarks"}),
    ("detector", "fabric", {"detector_target": "bbox"}),
    ("fabric_ae", "fabric", {}),
    ("face_embed", "celeba", {}),
]


@pytest.mark.parametrize(("name", "table", "overrides"), CASES, ids=[f"{c[0]}-{c[1]}-{len(c[2])}" for c in CASES])
def test_task_trains_evaluates_and_predicts(
    cfg: Config, tmp_path: Path, name: str, table: str, overrides: dict
) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    train_cfg = dataclasses.replace(cfg.train, augment_shift=0.0, dropout=0.0, learning_rate=2e-3, **overrides)
    task = get_task(name)
    meta = task.prepare_meta(manifest(table), train_cfg)
    frame = make_frame(table, 48)
    meta = task.fit_statistics(meta, frame[[c for c in task.columns_for(table) if c != "image"]], train_cfg)
    model = task.build(train_cfg, meta).compile(make_optimizer(train_cfg, 1))
    history = model.fit(dataset(task, frame, meta, train_cfg, table), epochs=12, steps_per_epoch=4, verbose=0)
    losses = history.history["loss"]
    assert min(losses[-2:]) < 0.85 * losses[0], losses

    x, y = task.arrays(make_frame(table, 24, seed=1), meta)
    assert x.shape[1:] == (SIZE, SIZE, 3) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    scores = task.evaluate(model, x, y, meta)
    assert scores and all(np.isfinite(v) for v in scores.values())
    paths = task.pictures(model, x, y, meta, tmp_path)
    pngs = [p for p in paths if p.suffix == ".png"]
    assert pngs and all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in pngs)

    out = task.predict(model, x[:5], meta)
    assert [c for c, _ in task.output_schema(meta)] == list(out)
    for column, ddl in task.output_schema(meta):
        assert len(out[column]) == 5, column
        if ddl == "array<float>":
            assert np.asarray(out[column]).dtype == np.float32


@pytest.mark.parametrize(
    ("image_size", "latent_dim", "encoder_params", "decoder_params"),
    [(128, 200, 1_732_944, 917_123), (32, 16, 94_144 + 2 * (256 * 16 + 16), 16 * 256 + 256 + 93_827)],
)
def test_vae_parameter_counts(image_size: int, latent_dim: int, encoder_params: int, decoder_params: int) -> None:
    from sparkvision.models.vae import build_decoder, build_encoder

    shape = (image_size, image_size, 3)
    assert build_encoder(shape, latent_dim, 0.25).count_params() == encoder_params
    assert build_decoder(shape, latent_dim, 0.25).count_params() == decoder_params


def test_vae_loss_matches_formula() -> None:
    import tensorflow as tf

    from sparkvision.models.vae import build_vae

    vae = build_vae((32, 32, 3), 8, 0.0, r_loss_factor=100.0)
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    tf.keras.utils.set_random_seed(1)
    loss, r_loss, kl = (float(v) for v in vae.compute_losses(tf.constant(x), training=False))
    tf.keras.utils.set_random_seed(1)
    mu, log_var, z = (t.numpy() for t in vae.encoder(x, training=False))
    recon = vae.decoder(z, training=False).numpy()
    expected_r = float(np.mean(np.mean((x - recon) ** 2, axis=(1, 2, 3))))
    expected_kl = float(np.mean(-0.5 * np.sum(1 + log_var - mu**2 - np.exp(log_var), axis=1)))
    assert r_loss == pytest.approx(expected_r, rel=1e-4)
    assert kl == pytest.approx(expected_kl, rel=1e-4, abs=1e-5)
    assert loss == pytest.approx(100.0 * expected_r + expected_kl, rel=1e-4)


def test_vae_tape_wrapper_is_applied(cfg: Config) -> None:
    import tensorflow as tf

    task = get_task("vae")
    meta = task.prepare_meta(manifest("celeba"), cfg.train)
    model = task.build(cfg.train, meta).compile(make_optimizer(cfg.train, 1))
    wrapped: list[tf.GradientTape] = []

    def wrapper(tape: tf.GradientTape) -> tf.GradientTape:
        wrapped.append(tape)
        return tape

    model.tape_wrapper = wrapper
    x = np.random.default_rng(0).random((8, SIZE, SIZE, 3)).astype(np.float32)
    history = model.fit(x, x, batch_size=4, epochs=1, verbose=0)
    assert wrapped, "train_step did not pass its tape through tape_wrapper"
    assert set(history.history) == {"loss", "r_loss", "kl_loss"}


def test_vae_capabilities(cfg: Config) -> None:
    """The model's own capabilities and ``sparkvision.latent``'s moves on a LatentModel of it."""
    from sparkvision import latent
    from sparkvision.models import vae

    model = vae.build_vae((SIZE, SIZE, 3), 16, 0.0)
    x = np.random.default_rng(0).random((6, SIZE, SIZE, 3)).astype(np.float32)
    mu = vae.encode(model.encoder, x)
    vector = mu[:3].mean(0) - mu[3:].mean(0)
    assert vae.generate(model.decoder, 5, seed=3).shape == (5, SIZE, SIZE, 3)
    np.testing.assert_array_equal(vae.generate(model.decoder, 2, seed=3), vae.generate(model.decoder, 2, seed=3))
    row = vae.interpolate(model.encoder, model.decoder, x[0], x[1], steps=4)
    np.testing.assert_allclose(row[0], vae.decode(model.decoder, mu[:1])[0], atol=1e-5)
    np.testing.assert_allclose(row[-1], vae.decode(model.decoder, mu[1:2])[0], atol=1e-5)

    space = latent.LatentModel(model.encoder, model.decoder, {"image_size": SIZE}, resolved=None)
    moved = latent.morph(space, x[:2], vector, np.linspace(-3, 3, 5))
    assert moved.shape == (2, 5, SIZE, SIZE, 3)
    assert not np.allclose(moved[:, 0], moved[:, -1])
    np.testing.assert_allclose(moved[:, 2], vae.decode(model.decoder, mu[:2]), atol=1e-5)  # factor 0: mu itself
    np.testing.assert_allclose(latent.generate(space, 2, seed=1, temperature=0.0),
                               vae.decode(model.decoder, np.zeros((2, 16), np.float32)), atol=1e-6)  # fmt: skip
    line = latent.interpolate(space, x[0], x[1], 4)
    np.testing.assert_allclose(line, row, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "overrides", "table", "message"),
    [
        ("attributes", {"attributes": ("Smilling",)}, "celeba", "did you mean 'Smiling'"),
        ("vae", {"image_size": 64}, "celeba", "image_size 64 requested, 32 ingested"),
        ("fabric_ae", {}, "celeba", "trains on tables \\['fabric'\\], found table 'celeba'"),
        ("detector", {"detector_target": "landmarks"}, "fabric", "fabric tables have only 'bbox'"),
    ],
)
def test_prepare_meta_rejects_with_reason(cfg: Config, name: str, overrides: dict, table: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_task(name).prepare_meta(manifest(table), dataclasses.replace(cfg.train, **overrides))


def test_registry_and_nearest_name() -> None:
    assert sorted(REGISTRY) == ["attributes", "classifier", "detector", "fabric_ae", "face_embed", "vae"]
    assert all(REGISTRY[k].name == k and "image" in REGISTRY[k].columns for k in REGISTRY)
    with pytest.raises(KeyError, match="did you mean 'fabric_ae'"):
        get_task("fabric-ae")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_build_returns_an_uncompiled_model_the_trainer_compiles(cfg: Config, name: str) -> None:
    """Tasks own networks and losses; the optimizer and its rate come from ``training.optim``."""
    import tensorflow as tf

    task = REGISTRY[name]
    table = task.tables[0]
    frame = make_frame(table, 16)
    meta = task.prepare_meta(manifest(table), cfg.train)
    targets = [c for c in task.columns_for(table) if c != "image"]
    meta = task.fit_statistics(meta, frame[targets], cfg.train)
    spec = task.build(cfg.train, meta)
    assert isinstance(spec, ModelSpec) and isinstance(spec.model, tf.keras.Model)
    assert spec.model.optimizer is None and spec.model.compiled_loss is None, "Task.build compiled the model"
    model = spec.compile(make_optimizer(cfg.train, 2))
    assert model is spec.model
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(2 * cfg.train.learning_rate)
    history = model.fit(dataset(task, frame, meta, cfg.train, table), epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_attribute_predictions_name_the_positive_attributes(cfg: Config) -> None:
    task = get_task("attributes")
    meta = task.prepare_meta(manifest("celeba"), dataclasses.replace(cfg.train, attributes=("Smiling", "Male")))
    model = task.build(cfg.train, meta).model
    x = np.random.default_rng(0).random((3, SIZE, SIZE, 3)).astype(np.float32)
    out = task.predict(model, x, meta)
    for probs, names in zip(out["probabilities"], out["predicted"], strict=True):
        assert names == [n for n, p in zip(["Smiling", "Male"], probs, strict=True) if p > 0.5]


def test_fabric_threshold_is_the_quantile_of_defect_free_scores(cfg: Config) -> None:
    from sparkvision.models.fabric_ae import score_and_heatmaps

    task = get_task("fabric_ae")
    meta = task.prepare_meta(manifest("fabric"), dataclasses.replace(cfg.train, anomaly_quantile=0.9))
    model = task.build(cfg.train, meta).model
    x, y = task.arrays(make_frame("fabric", 12), meta)
    with pytest.raises(ValueError, match="threshold"):
        task.predict(model, x, meta)
    task.evaluate(model, x, y, meta)
    scores, _ = score_and_heatmaps(model, x, meta["smooth"])
    assert meta["threshold"] == pytest.approx(float(np.quantile(scores[y["label"] == 0], 0.9)), rel=1e-5)
    chosen = meta["threshold"]
    task.evaluate(model, x[y["label"] == 0][:3], {k: v[y["label"] == 0][:3] for k, v in y.items()}, meta)
    assert meta["threshold"] == chosen  # the test split does not move the threshold chosen on val
    out = task.predict(model, x, meta)
    np.testing.assert_array_equal(out["is_defect"], scores > meta["threshold"])
    assert np.all(out["defect_bbox"][~out["is_defect"]] == 0)
