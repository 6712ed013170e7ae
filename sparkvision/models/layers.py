"""Keras building blocks and custom objects: the ``Sampling`` layer, the ``VAE`` and
``FaceEmbedder`` models with their own ``train_step``, and the Conv+BN+activation block every family uses.

This module imports TensorFlow at the top: import it inside functions only. Every custom
class is registered (package ``sparkvision``) and listed in ``custom_objects()`` so saved
models reload in MLflow, in Horovod workers and in scoring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

TapeWrapper = Callable[[tf.GradientTape], Any]


@tf.keras.utils.register_keras_serializable(package="sparkvision")
class Sampling(tf.keras.layers.Layer):
    """Draws ``z = mu + exp(log_var / 2) * eps`` with ``eps ~ N(0, I)``."""

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        mu, log_var = inputs
        return mu + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mu))

    def get_config(self) -> dict[str, Any]:
        return super().get_config()


def _identity_tape(tape: tf.GradientTape) -> tf.GradientTape:
    return tape


@tf.keras.utils.register_keras_serializable(package="sparkvision")
class VAE(tf.keras.Model):
    """Variational autoencoder: ``encoder`` (image → ``[mu, log_var, z]``) and ``decoder`` (z → image).

    Loss per batch = ``r_loss_factor`` × mean over images of the per-image pixel MSE + mean KL,
    with ``KL = -0.5 Σ (1 + log_var - mu² - exp(log_var))`` per image, computed in float32 under
    any dtype policy (with loss scaling under ``mixed_float16``). ``train_step`` and
    ``test_step`` return ``{"loss", "r_loss", "kl_loss"}``.

    ``tape_wrapper`` is applied to the ``tf.GradientTape`` before gradients are taken; the
    Horovod trainer sets it to ``hvd.DistributedGradientTape`` (as an attribute after ``build``
    or as the constructor argument) so gradients are averaged across workers. Default: identity.

    Calling the model returns the reconstruction: decoded from a sample ``z`` when training,
    from ``mu`` otherwise (so predictions are deterministic).
    """

    def __init__(
        self,
        encoder: tf.keras.Model,
        decoder: tf.keras.Model,
        r_loss_factor: float = 10000.0,
        tape_wrapper: TapeWrapper | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "vae")
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.r_loss_factor = float(r_loss_factor)
        self.tape_wrapper: TapeWrapper = tape_wrapper or _identity_tape
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.r_loss_tracker = tf.keras.metrics.Mean(name="r_loss")
        self.kl_loss_tracker = tf.keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        return [self.loss_tracker, self.r_loss_tracker, self.kl_loss_tracker]

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        mu, _, z = self.encoder(inputs, training=training)
        return self.decoder(z if training else mu, training=training)

    def compute_losses(self, x: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(loss, r_loss, kl_loss)`` of a batch, each averaged over its images."""
        mu, log_var, z = self.encoder(x, training=training)
        reconstruction = self.decoder(z, training=training)
        # float32 whatever the dtype policy (the builders' output layers are float32 already)
        x, reconstruction = tf.cast(x, tf.float32), tf.cast(reconstruction, tf.float32)
        mu, log_var = tf.cast(mu, tf.float32), tf.cast(log_var, tf.float32)
        r_loss = tf.reduce_mean(tf.reduce_mean(tf.square(x - reconstruction), axis=[1, 2, 3]))
        kl = -0.5 * tf.reduce_sum(1.0 + log_var - tf.square(mu) - tf.exp(log_var), axis=1)
        kl_loss = tf.reduce_mean(kl)
        return self.r_loss_factor * r_loss + kl_loss, r_loss, kl_loss

    def _record(self, loss: tf.Tensor, r_loss: tf.Tensor, kl_loss: tf.Tensor) -> dict[str, tf.Tensor]:
        self.loss_tracker.update_state(loss)
        self.r_loss_tracker.update_state(r_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x = data[0] if isinstance(data, tuple) else data
        # Under mixed_float16, compile wrapped the optimizer in a LossScaleOptimizer: scale the
        # float32 loss so float16 gradients do not underflow, and unscale them before applying.
        scaling = hasattr(self.optimizer, "get_scaled_loss")
        with tf.GradientTape() as tape:
            loss, r_loss, kl_loss = self.compute_losses(x, training=True)
            target = self.optimizer.get_scaled_loss(loss) if scaling else loss
        tape = self.tape_wrapper(tape)
        grads = tape.gradient(target, self.trainable_weights)
        if scaling:
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        return self._record(loss, r_loss, kl_loss)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        x = data[0] if isinstance(data, tuple) else data
        return self._record(*self.compute_losses(x, training=False))

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "encoder": tf.keras.saving.serialize_keras_object(self.encoder),
            "decoder": tf.keras.saving.serialize_keras_object(self.decoder),
            "r_loss_factor": self.r_loss_factor,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> VAE:
        config = dict(config)
        objects = {**custom_objects_dict(), **(custom_objects or {})}
        for key in ("encoder", "decoder"):
            config[key] = tf.keras.saving.deserialize_keras_object(config[key], custom_objects=objects)
        return cls(**config)


def conv_block(
    x: tf.Tensor,
    filters: int,
    name: str,
    *,
    strides: int = 1,
    transpose: bool = False,
    activation: str = "relu",
    dropout: float = 0.0,
    pool: bool = False,
) -> tf.Tensor:
    """Conv2D (or Conv2DTranspose) 3x3 'same' → BatchNormalization → activation
    (``relu``/``leaky_relu``) → optional Dropout → optional 2x2 MaxPool; layers named ``{name}_*``."""
    conv = tf.keras.layers.Conv2DTranspose if transpose else tf.keras.layers.Conv2D
    x = conv(filters, 3, strides=strides, padding="same", name=f"{name}_conv")(x)
    x = tf.keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation == "leaky_relu":
        x = tf.keras.layers.LeakyReLU(name=f"{name}_lrelu")(x)
    else:
        x = tf.keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    if dropout > 0:
        x = tf.keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    if pool:
        x = tf.keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return x


@tf.keras.utils.register_keras_serializable(package="sparkvision")
class WeightedBinaryCrossentropy(tf.keras.losses.Loss):
    """Multi-label binary cross-entropy with each label's positive term weighted by
    ``pos_weight[j]`` (rare attributes count as much as common ones)."""

    def __init__(self, pos_weight: Sequence[float], name: str = "weighted_binary_crossentropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.pos_weight = [float(w) for w in pos_weight]

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        eps = tf.keras.backend.epsilon()
        p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
        y = tf.cast(y_true, p.dtype)
        w = tf.constant(self.pos_weight, p.dtype)
        return -tf.reduce_mean(w * y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pos_weight": self.pos_weight}


@tf.keras.utils.register_keras_serializable(package="sparkvision")
class FaceEmbedder(tf.keras.Model):
    """A face embedding network trained with a large-margin cosine softmax (CosFace) over identities.

    ``backbone`` maps an image to a ``dim`` vector; calling the model returns it L2-normalised.
    Training adds a head of ``n_classes`` unit class centres (the training identities):
    ``margin_loss`` = cross-entropy of ``scale * (cos(e, c_j) - margin * [j = label])``, which
    pulls each embedding towards its identity's centre and at least ``margin`` (in cosine)
    away from every other. Batches are ``(x, y)`` with ``y = [identity number, class index]``
    (``int32 (N, 2)``; class index -1 for an identity outside the head, such as the held-out
    identities of the val split).

    ``nca_loss`` needs no class index: for every image with another image of its identity in
    the batch, ``-log`` of the softmax mass (``scale`` x cosine, itself excluded) that falls on
    those same-identity images. It measures on never-seen identities what identification
    needs, so ``test_step`` reports it as ``loss`` (``val_loss`` ranks checkpoints); ``train_step``
    minimises and reports ``margin_loss`` as ``loss``. Both steps also report both terms.

    ``tape_wrapper`` is applied to the ``tf.GradientTape`` before gradients are taken, as in
    ``VAE`` (the Horovod trainer sets ``hvd.DistributedGradientTape``).
    """

    def __init__(
        self,
        backbone: tf.keras.Model,
        n_classes: int,
        scale: float = 30.0,
        margin: float = 0.25,
        tape_wrapper: TapeWrapper | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "face_embed")
        super().__init__(**kwargs)
        self.backbone = backbone
        self.n_classes = int(n_classes)
        self.scale = float(scale)
        self.margin = float(margin)
        self.tape_wrapper: TapeWrapper = tape_wrapper or _identity_tape
        dim = int(backbone.outputs[0].shape[-1])
        self.centres = self.add_weight(name="class_centres", shape=(dim, self.n_classes),
                                       initializer="glorot_uniform", trainable=True, dtype="float32")  # fmt: skip
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.margin_tracker = tf.keras.metrics.Mean(name="margin_loss")
        self.nca_tracker = tf.keras.metrics.Mean(name="nca_loss")

    @property
    def metrics(self) -> list[tf.keras.metrics.Metric]:
        return [self.loss_tracker, self.margin_tracker, self.nca_tracker]

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        e = tf.cast(self.backbone(inputs, training=training), tf.float32)
        return tf.math.l2_normalize(e, axis=-1)

    def compute_losses(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """``(margin_loss, nca_loss)`` of a batch; each 0 when no image of the batch counts."""
        e = self(x, training=training)
        y = tf.cast(tf.reshape(y, (-1, 2)), tf.int32)
        identity, label = y[:, 0], y[:, 1]
        known = label >= 0
        cos = tf.matmul(e, tf.math.l2_normalize(self.centres, axis=0))
        onehot = tf.one_hot(tf.maximum(label, 0), self.n_classes, dtype=tf.float32)
        logits = self.scale * (cos - self.margin * onehot)
        ce = tf.nn.softmax_cross_entropy_with_logits(onehot, logits)
        known_f = tf.cast(known, tf.float32)
        margin_loss = tf.reduce_sum(ce * known_f) / tf.maximum(tf.reduce_sum(known_f), 1.0)
        n = tf.shape(e)[0]
        not_self = 1.0 - tf.eye(n)
        same = tf.cast(tf.equal(identity[:, None], identity[None, :]), tf.float32) * not_self
        sims = self.scale * tf.matmul(e, e, transpose_b=True) - 1e9 * tf.eye(n)
        log_all = tf.reduce_logsumexp(sims, axis=1)
        log_pos = tf.reduce_logsumexp(sims + tf.math.log(same + 1e-30), axis=1)
        has_pos = tf.cast(tf.reduce_sum(same, axis=1) > 0, tf.float32)
        nca = tf.reduce_sum((log_all - log_pos) * has_pos) / tf.maximum(tf.reduce_sum(has_pos), 1.0)
        return margin_loss, nca

    def _record(self, loss: tf.Tensor, margin_loss: tf.Tensor, nca: tf.Tensor) -> dict[str, tf.Tensor]:
        self.loss_tracker.update_state(loss)
        self.margin_tracker.update_state(margin_loss)
        self.nca_tracker.update_state(nca)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        x, y = data[0], data[1]
        scaling = hasattr(self.optimizer, "get_scaled_loss")
        with tf.GradientTape() as tape:
            margin_loss, nca = self.compute_losses(x, y, training=True)
            target = self.optimizer.get_scaled_loss(margin_loss) if scaling else margin_loss
        tape = self.tape_wrapper(tape)
        grads = tape.gradient(target, self.trainable_weights)
        if scaling:
            grads = self.optimizer.get_unscaled_gradients(grads)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        return self._record(margin_loss, margin_loss, nca)

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        margin_loss, nca = self.compute_losses(data[0], data[1], training=False)
        return self._record(nca, margin_loss, nca)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backbone": tf.keras.saving.serialize_keras_object(self.backbone),
            "n_classes": self.n_classes,
            "scale": self.scale,
            "margin": self.margin,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None) -> FaceEmbedder:
        config = dict(config)
        objects = {**custom_objects_dict(), **(custom_objects or {})}
        config["backbone"] = tf.keras.saving.deserialize_keras_object(config["backbone"], custom_objects=objects)
        return cls(**config)


def custom_objects_dict() -> dict[str, Any]:
    """Every custom Keras class of sparkvision, for ``load_model(..., custom_objects=...)``."""
    return {
        "Sampling": Sampling,
        "VAE": VAE,
        "WeightedBinaryCrossentropy": WeightedBinaryCrossentropy,
        "FaceEmbedder": FaceEmbedder,
    }


def pooled_conv_stack(input_shape: tuple[int, int, int], filters: Sequence[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Input ``image`` → Conv+BN+ReLU+MaxPool blocks ``block_<i>``: one per entry of ``filters``,
    fewer on small inputs so at least a 4x4 map is left. Returns ``(inputs, features)``."""
    n_blocks = max(1, min(len(filters), int(math.log2(input_shape[0])) - 2))
    inputs = tf.keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, n in enumerate(filters[:n_blocks]):
        x = conv_block(x, n, f"block_{i}", pool=True)
    return inputs, x


def batchnorm_layers(model: tf.keras.Model) -> list[tf.keras.layers.BatchNormalization]:
    """Every ``BatchNormalization`` layer of ``model``, nested models included, in a stable order."""
    return [m for m in model.submodules if isinstance(m, tf.keras.layers.BatchNormalization)]


def recalibrate_batchnorm(
    model: tf.keras.Model,
    batches: Any,
    *,
    max_batches: int,
    allreduce: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> int:
    """Recompute every BatchNorm layer's moving mean and variance over ``batches`` with the
    weights frozen: the exact average of the batch statistics instead of Keras' exponential
    moving average, whose default momentum (0.99) needs thousands of steps to forget the
    initial values and lags behind weights that still change.

    The network runs in training mode (batch statistics) with dropout switched off, so each
    BatchNorm layer sees the activations it sees at inference. ``allreduce`` (Horovod's
    average over ranks) turns each rank's statistics into the statistics of all ranks' data:
    mean = average of means, variance = average of (variance + mean²) - mean².

    Args:
        model: A built model; its BatchNorm moving statistics are replaced in place.
        batches: An iterable of ``x`` or ``(x, y[, w])`` batches (inference preprocessing).
        max_batches: Batches to use at most.
        allreduce: Averages a tensor over Horovod ranks; None for one process.

    Returns:
        The number of batches used (0 when the model has no BatchNorm layer).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    dropouts = [m for m in model.submodules if isinstance(m, tf.keras.layers.Dropout)]
    saved_rates = [d.rate for d in dropouts]
    saved_momentum = [bn.momentum for bn in layers]
    sums = [(tf.zeros_like(bn.moving_mean), tf.zeros_like(bn.moving_variance)) for bn in layers]
    used = 0
    try:
        for d in dropouts:
            d.rate = 0.0
        for bn in layers:
            bn.momentum = 0.0  # moving value := this batch's statistic, read back below
        for batch in batches:
            if used >= max_batches:
                break
            x = batch[0] if isinstance(batch, tuple) else batch
            model(x, training=True)
            sums = [(m + bn.moving_mean, v + bn.moving_variance + tf.square(bn.moving_mean))
                    for (m, v), bn in zip(sums, layers, strict=True)]  # fmt: skip
            used += 1
    finally:
        for d, rate in zip(dropouts, saved_rates, strict=True):
            d.rate = rate
        for bn, momentum in zip(layers, saved_momentum, strict=True):
            bn.momentum = momentum
    flat = tf.concat([tf.concat([m, v], 0) for m, v in sums], 0)
    count = tf.constant(float(used))
    if allreduce is not None:
        flat, count = allreduce(flat), allreduce(count)
    if float(count.numpy()) <= 0:
        return 0
    flat = flat / count
    sizes = [int(m.shape[0]) for m, _ in sums]
    means = [(p[:s], p[s:]) for p, s in zip(tf.split(flat, [2 * s for s in sizes]), sizes, strict=True)]
    for bn, (mean, second) in zip(layers, means, strict=True):
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(tf.maximum(second - tf.square(mean), 0.0))
    return used
