"""BatchNorm recalibration and the weighted multi-label loss, in-process."""

from __future__ import annotations

import numpy as np
import pytest


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four classes told apart by which colour channel is brighter (and by how much)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0.5, 0.1, (n, 16, 16, 3)).astype("float32")
    for c in range(4):
        x[y == c, :, :, c % 3] += 0.2 * (1 + c // 3)
    return np.clip(x, 0, 1), y


@pytest.fixture(scope="module")
def briefly_trained():
    """A classifier after 30 Adam steps: its training-mode outputs are right, its Keras moving
    statistics (momentum 0.99) still mostly hold their initial values."""
    import tensorflow as tf

    from sparkvision.models.attributes import build_classifier

    tf.keras.utils.set_random_seed(0)
    x, y = _data(1280)
    model = build_classifier((16, 16, 3), 4, multi_label=False)
    model.compile(optimizer=tf.keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    model.fit(x[:960], y[:960], batch_size=32, epochs=1, steps_per_epoch=30, verbose=0)
    return model, x, y


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model(x, training=False).numpy().argmax(axis=1) == y))


def test_recalibration_restores_inference_mode_accuracy(briefly_trained) -> None:
    import tensorflow as tf

    from sparkvision.models.layers import batchnorm_layers, recalibrate_batchnorm

    model, x, y = briefly_trained
    weights = [w.numpy().copy() for w in model.trainable_weights]
    before = _accuracy(model, x[960:], y[960:])
    train_mode = float(np.mean(model(x[960:], training=True).numpy().argmax(axis=1) == y[960:]))
    batches = tf.data.Dataset.from_tensor_slices((x[:960], y[:960])).batch(32)
    assert recalibrate_batchnorm(model, batches, max_batches=10) == 10
    after = _accuracy(model, x[960:], y[960:])
    assert train_mode >= 0.9
    assert before <= 0.6 < 0.9 <= after, (before, train_mode, after)
    # The weights are frozen; only the moving statistics changed, and momentum/dropout are back.
    for w, old in zip(model.trainable_weights, weights, strict=True):
        np.testing.assert_array_equal(w.numpy(), old)
    assert {bn.momentum for bn in batchnorm_layers(model)} == {0.99}
    assert model.get_layer("head_dropout").rate == 0.25


def test_recalibration_averaged_over_ranks_equals_pooled_statistics(briefly_trained) -> None:
    """Two "ranks" with half the batches each, joined by an averaging allreduce, end with the
    statistics one process computes over all batches."""
    from sparkvision.models.layers import batchnorm_layers, recalibrate_batchnorm

    model, x, _ = briefly_trained
    batches = [x[i : i + 32] for i in range(0, 256, 32)]
    recalibrate_batchnorm(model, batches, max_batches=8)
    pooled = [(bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()) for bn in batchnorm_layers(model)]

    sent: list = []
    recalibrate_batchnorm(model, batches[4:], max_batches=8, allreduce=lambda t: sent.append(t) or t)
    other = list(sent)
    recalibrate_batchnorm(model, batches[:4], max_batches=8, allreduce=lambda t: (t + other.pop(0)) / 2.0)
    for bn, (mean, var) in zip(batchnorm_layers(model), pooled, strict=True):
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-3, atol=1e-5)


def test_model_without_batchnorm_is_left_alone() -> None:
    import tensorflow as tf

    from sparkvision.models.layers import recalibrate_batchnorm

    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    assert recalibrate_batchnorm(model, [np.zeros((2, 4), np.float32)], max_batches=4) == 0


def test_weighted_binary_crossentropy_weights_positive_terms_and_reloads() -> None:
    import tensorflow as tf

    from sparkvision.models.layers import WeightedBinaryCrossentropy, custom_objects_dict

    y = np.array([[1.0, 0.0]], np.float32)
    p = np.array([[0.2, 0.2]], np.float32)
    plain = tf.keras.losses.BinaryCrossentropy()(y, p).numpy()
    loss = WeightedBinaryCrossentropy([1.0, 1.0])
    assert float(loss(y, p)) == pytest.approx(float(plain), rel=1e-5)
    heavy = WeightedBinaryCrossentropy([3.0, 1.0])
    assert float(heavy(y, p)) == pytest.approx((3 * -np.log(0.2) - np.log(0.8)) / 2, rel=1e-5)
    again = tf.keras.losses.deserialize(tf.keras.losses.serialize(heavy), custom_objects=custom_objects_dict())
    assert again.pos_weight == [3.0, 1.0]
