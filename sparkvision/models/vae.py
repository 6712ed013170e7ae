"""The CelebA variational autoencoder (as in the talks): builders, capabilities (encode, decode,
generate new faces, interpolation) and its ``Task``. Attribute vectors over a whole train split
and faces moved along them are ``sparkvision.latent`` (``sparkvision vae``): the training-time
pictures have only a few evaluation rows, too few for an attribute vector.

At 128x128x3 and z=200 the encoder has 1,732,944 parameters and the decoder 917,123.
The scoring output ``mu`` is the face embedding used by face identification
(``sparkvision.identification``); ``recon_error`` is the per-image reconstruction MSE.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision.models import common
from sparkvision.models.base import ModelSpec

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

    from sparkvision.config import TrainConfig
    from sparkvision.models.base import Meta

ENCODER_FILTERS = (32, 64, 64, 64)
DECODER_FILTERS = (64, 64, 32)


def __getattr__(name: str) -> Any:
    # ``VAE`` and ``Sampling`` live in ``layers`` (which imports TensorFlow); expose them lazily.
    if name in ("VAE", "Sampling"):
        from sparkvision.models import layers

        return getattr(layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_encoder(input_shape: tuple[int, int, int], latent_dim: int, dropout: float = 0.25) -> tf.keras.Model:
    """Image → ``[mu, log_var, z]``: four stride-2 Conv+BN+LeakyReLU+Dropout blocks, Flatten,
    Dense ``mu`` and ``log_var``, and a ``Sampling`` layer (the last three float32 under any policy)."""
    import tensorflow as tf

    from sparkvision.models.layers import Sampling, conv_block

    inputs = tf.keras.Input(shape=input_shape, name="encoder_input")
    x = inputs
    for i, filters in enumerate(ENCODER_FILTERS):
        x = conv_block(x, filters, f"encoder_{i}", strides=2, activation="leaky_relu", dropout=dropout)
    x = tf.keras.layers.Flatten(name="encoder_flatten")(x)
    # float32 under a mixed policy: the KL term's exp(log_var) overflows float16 (Keras' advice:
    # keep the outputs a loss is computed from in float32).
    mu = tf.keras.layers.Dense(latent_dim, name="mu", dtype="float32")(x)
    log_var = tf.keras.layers.Dense(latent_dim, name="log_var", dtype="float32")(x)
    z = Sampling(name="z", dtype="float32")([mu, log_var])
    return tf.keras.Model(inputs, [mu, log_var, z], name="encoder")


def build_decoder(output_shape: tuple[int, int, int], latent_dim: int, dropout: float = 0.25) -> tf.keras.Model:
    """z → image: Dense to ``(S/16, S/16, 64)``, three stride-2 Conv2DTranspose+BN+LeakyReLU
    (+Dropout) blocks and a stride-2 Conv2DTranspose to the channels with a float32 sigmoid."""
    import tensorflow as tf

    from sparkvision.models.layers import conv_block

    side = output_shape[0] // 16
    inputs = tf.keras.Input(shape=(latent_dim,), name="decoder_input")
    x = tf.keras.layers.Dense(side * side * ENCODER_FILTERS[-1], name="decoder_dense")(inputs)
    x = tf.keras.layers.Reshape((side, side, ENCODER_FILTERS[-1]), name="decoder_reshape")(x)
    for i, filters in enumerate(DECODER_FILTERS):
        x = conv_block(x, filters, f"decoder_{i}", strides=2, transpose=True, activation="leaky_relu", dropout=dropout)
    x = tf.keras.layers.Conv2DTranspose(output_shape[2], 3, strides=2, padding="same", name="decoder_output_conv")(x)
    outputs = tf.keras.layers.Activation("sigmoid", name="decoder_output", dtype="float32")(x)
    return tf.keras.Model(inputs, outputs, name="decoder")


def build_vae(
    input_shape: tuple[int, int, int] = (128, 128, 3),
    latent_dim: int = 200,
    dropout: float = 0.25,
    r_loss_factor: float = 10000.0,
) -> tf.keras.Model:
    """An uncompiled, built ``VAE`` (see ``layers.VAE`` for the loss and the ``tape_wrapper`` hook)."""
    from sparkvision.models.layers import VAE

    common.check_divisible("vae", input_shape[0], 16)
    vae = VAE(build_encoder(input_shape, latent_dim, dropout), build_decoder(input_shape, latent_dim, dropout),
              r_loss_factor=r_loss_factor)  # fmt: skip
    vae.build((None, *input_shape))
    return vae


# --------------------------------------------------------------------------- capabilities


def encode(encoder: tf.keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``mu`` of every image (inference mode), ``float32 (N, z)``."""
    parts = common.predict_batches(lambda b: encoder(b, training=False)[0].numpy(), np.asarray(x, np.float32),
                                   batch_size)  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros((0, int(encoder.outputs[0].shape[-1])), np.float32)


def decode(decoder: tf.keras.Model, z: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Images decoded from latent vectors (inference mode), ``float32 (N, H, W, C)`` in [0, 1]."""
    parts = common.predict_batches(lambda b: decoder(b, training=False).numpy(), np.asarray(z, np.float32),
                                   batch_size)  # fmt: skip
    return np.concatenate(parts)


MAX_LATENT_AXES = 64
"""Principal axes of the fitted code distribution kept in the meta (``fit_codes``)."""


def fit_codes(mu: np.ndarray) -> dict[str, list[Any]]:
    """The Gaussian of ``mu`` (``(N, z)`` codes of real faces) as meta entries: ``latent_mean`` and
    ``latent_axes``, its principal axes scaled by their standard deviations (at most ``MAX_LATENT_AXES``,
    those above 1e-6 of the largest variance), so ``mean + Σ εᵢ axisᵢ`` draws from it.

    A diagonal fit is not enough: measured on generated faces (64 px, z=200), the attribute CNN's mean
    per-attribute probabilities on decoded draws differed from those on reconstructions by up to 0.26 with
    a diagonal Gaussian, 0.14 with the full covariance and 0.53 with the prior N(0, I).
    """
    mu = np.asarray(mu, np.float64)
    values, vectors = np.linalg.eigh(np.cov(mu, rowvar=False) if len(mu) > 1 else np.zeros((mu.shape[1],) * 2))
    order = np.argsort(values)[::-1][:MAX_LATENT_AXES]
    keep = [i for i in order if values[i] > 1e-6 * max(values.max(), 1e-12)]
    axes = (vectors[:, keep] * np.sqrt(values[keep])).T
    return {"latent_mean": [round(float(v), 5) for v in mu.mean(axis=0)],
            "latent_axes": [[round(float(v), 5) for v in axis] for axis in axes]}  # fmt: skip


def sample_codes(meta: Meta, latent_dim: int, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
    """``n`` latent codes where the encoder puts faces: from the Gaussian fitted to the validation images'
    ``mu`` at training time (``fit_codes``), its spread times ``temperature``; or ``temperature × ε``, the
    prior ``N(0, I)``, for a model trained before that fit existed.

    With the reconstruction weighted far above the KL term (``r_loss_factor``) the codes of real faces
    do not fill the prior: decoding ``N(0, I)`` then gives blurs and mixtures, not faces.
    """
    rng = np.random.default_rng(seed)
    mean, axes = meta.get("latent_mean"), meta.get("latent_axes")
    if mean is None or axes is None or len(mean) != latent_dim:
        return (rng.standard_normal((n, latent_dim)) * temperature).astype(np.float32)
    axes = np.asarray(axes, np.float64).reshape(-1, latent_dim)
    eps = rng.standard_normal((n, len(axes))) * temperature
    return (np.asarray(mean, np.float64) + eps @ axes).astype(np.float32)


def generate(decoder: tf.keras.Model, n: int, seed: int = 0, meta: Meta | None = None) -> np.ndarray:
    """``n`` new images decoded from codes drawn with ``seed`` (``sample_codes``)."""
    return decode(decoder, sample_codes(meta or {}, int(decoder.inputs[0].shape[-1]), n, seed))


def interpolate(
    encoder: tf.keras.Model, decoder: tf.keras.Model, a: np.ndarray, b: np.ndarray, steps: int = 8
) -> np.ndarray:
    """Decode ``steps`` points on the line from ``mu(a)`` to ``mu(b)`` (both ends included): ``(steps, H, W, C)``."""
    mu = encode(encoder, np.stack([a, b]))
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return decode(decoder, (1 - t) * mu[0] + t * mu[1])


# --------------------------------------------------------------------------- task


class VaeTask:
    """The CelebA VAE as a ``Task``; see ``base.Task`` for the contract."""

    name = "vae"
    tables = ("celeba", "folder")
    columns = ("image",)

    def prepare_meta(self, manifest: dict[str, Any], cfg: TrainConfig) -> Meta:
        meta = common.base_meta(self.name, self.tables, manifest, cfg)
        common.check_divisible(self.name, meta["image_size"], 16)
        meta.update(latent_dim=cfg.latent_dim, r_loss_factor=cfg.r_loss_factor)
        return meta

    def columns_for(self, table: str) -> tuple[str, ...]:
        """``("image",)``: every table has it."""
        return self.columns

    def fit_statistics(self, meta: Meta, train: pd.DataFrame, cfg: TrainConfig) -> Meta:
        """``meta`` unchanged: the loss needs nothing from the train split."""
        return meta

    def build(self, cfg: TrainConfig, meta: Meta) -> ModelSpec:
        """The VAE computes its own loss (``train_step``) and takes a ``tape_wrapper``."""
        size = meta["image_size"]
        vae = build_vae((size, size, 3), meta.get("latent_dim", cfg.latent_dim), cfg.dropout, cfg.r_loss_factor)
        return ModelSpec(vae)

    def keep_for_training(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        return common.keep_every_row(row)

    def parse_row(self, row: dict[str, tf.Tensor], meta: Meta, cfg: TrainConfig, training: bool) -> tuple[Any, Any]:
        image = common.row_image(row, meta, cfg, training)
        return image, image

    def arrays(self, frame: pd.DataFrame, meta: Meta) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        x = common.decode_column(frame, meta["image_size"])
        y: dict[str, np.ndarray] = {}
        for column, dtype in (("attributes", "float32"), ("identity", "int32"), ("label", "int32")):
            if column in frame:
                y[column] = common.stack_column(frame, column, dtype)
        return x, y

    def evaluate(self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta) -> dict[str, float]:
        out = self.predict(model, x, meta)
        mu = out["mu"]
        if meta.get("latent_mean") is None and len(mu) > 1:  # the first split evaluated (val): where codes lie
            meta.update(fit_codes(mu))
        log_var = np.concatenate(
            common.predict_batches(lambda b: model.encoder(b, training=False)[1].numpy(), x)
        )  # fmt: skip
        kl = -0.5 * np.sum(1.0 + log_var - mu**2 - np.exp(log_var), axis=1)
        r_loss = float(out["recon_error"].mean())
        # The error of always answering the mean image of these rows: a model that learnt
        # nothing beyond the average face scores a ratio of 1 or more.
        baseline = float(np.mean((np.asarray(x, np.float32) - np.asarray(x, np.float32).mean(axis=0)) ** 2))
        return {
            "recon_mse": r_loss,
            "mean_image_mse": baseline,
            "recon_mse_ratio": r_loss / max(baseline, 1e-12),
            "kl_loss": float(kl.mean()),
            "loss": float(model.r_loss_factor * r_loss + kl.mean()),
            "mu_std": float(mu.std(axis=0).mean()),
        }

    def pictures(
        self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta, out_dir: Path
    ) -> list[Path]:
        from sparkvision import pictures

        out_dir = Path(out_dir)
        n = min(8, len(x))
        paths = []
        recon = decode(model.decoder, encode(model.encoder, x[:n]))
        paths.append(pictures.save_grid([list(x[:n]), list(recon)], out_dir / "vae_reconstructions.png",
                                        row_titles=["input", "reconstruction"], title="VAE reconstructions"))  # fmt: skip
        new = generate(model.decoder, 16, seed=0, meta=meta)
        paths.append(pictures.save_grid([list(new[:8]), list(new[8:])], out_dir / "vae_generated.png",
                                        title="new faces: z drawn where the validation faces' codes lie"))  # fmt: skip
        if n >= 2:
            row = interpolate(model.encoder, model.decoder, x[0], x[1], steps=8)
            paths.append(pictures.save_grid([[x[0], *row, x[1]]], out_dir / "vae_interpolation.png",
                                            title="interpolation between two images in z"))  # fmt: skip
        return paths

    def predict(self, model: tf.keras.Model, x: np.ndarray, meta: Meta) -> dict[str, np.ndarray]:
        x = np.asarray(x, np.float32)
        mu = encode(model.encoder, x)
        recon = decode(model.decoder, mu) if len(x) else np.zeros_like(x)
        return {"mu": mu, "recon_error": np.mean((x - recon) ** 2, axis=(1, 2, 3)).astype(np.float32)}

    def output_schema(self, meta: Meta) -> list[tuple[str, str]]:
        return [("mu", "array<float>"), ("recon_error", "float")]
