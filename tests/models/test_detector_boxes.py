"""The detector's four sigmoid outputs may cross; what it reports is always a valid box."""

from __future__ import annotations

import numpy as np


def test_crossed_outputs_are_reported_as_an_ordered_box() -> None:
    import tensorflow as tf

    from sparkvision.models import get_task

    logits = np.log(np.array([0.8, 0.7, 0.2, 0.1]) / (1 - np.array([0.8, 0.7, 0.2, 0.1])))
    inputs = tf.keras.Input((8, 8, 3))
    flat = tf.keras.layers.Flatten()(inputs)
    dense = tf.keras.layers.Dense(4, activation="sigmoid", kernel_initializer="zeros",
                                  bias_initializer=tf.keras.initializers.Constant(logits))(flat)  # fmt: skip
    model = tf.keras.Model(inputs, dense)
    out = get_task("detector").predict(model, np.zeros((3, 8, 8, 3), np.float32), {"target": "bbox", "image_size": 8})
    np.testing.assert_allclose(out["bbox"], [[0.2, 0.1, 0.8, 0.7]] * 3, rtol=1e-5)
    np.testing.assert_allclose(out["bbox_pixels"], out["bbox"] * 8, rtol=1e-5)
