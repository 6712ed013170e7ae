"""Fabric anomaly detection: a fully convolutional autoencoder trained only on defect-free tiles.

The network has no BatchNorm and no dense bottleneck (strided convolutions down by 8, a 1x1
convolution of ``latent_dim`` channels, transposed convolutions back up, the input mirrored
by ``PAD`` pixels around it); it is trained with ``SSIM_WEIGHT * (1 - SSIM) + (1 -
SSIM_WEIGHT) * L1`` on randomly shifted, flipped and slightly re-lit tiles.

A tile's anomaly map starts from two per-pixel error maps, SSIM dissimilarity and L1, each
smoothed by a Gaussian of ``meta["smooth"]`` pixels. A tile's edge is reconstructed from
mirrored context only, so both run higher and noisier there: the first ``evaluate`` call (on
the validation split) measures their mean and spread on defect-free tiles per distance to
the tile edge (``meta["calibration"]``), and from then on the map is the larger of the two
standardised errors. Calibration needs the tile geometry (``tile_size`` in the manifest's
ingest config, as every ingested fabric table has); without it the map stays the loss's
mixture of the two. The tile score is the maximum of its map.

Evaluation works on whole source images: the tile maps of each image are pasted back at
their ``tile_x``/``tile_y`` (scaled from source pixels to stored pixels when ingest resized
the tiles) and the image score is the maximum of the stitched map, so an image is flagged
exactly when one of its tiles is. The first ``evaluate`` call also picks the image threshold
(and a pixel threshold for the defect box) as the ``anomaly_quantile`` quantile of that
split's defect-free image scores and pixels, and stores them in meta; later calls (the test
split) keep them. Set ``meta["threshold"] = None`` to choose again (``calibration = None``
to measure again).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparkvision.models import common, metrics
from sparkvision.models.base import ModelSpec

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

    from sparkvision.config import TrainConfig
    from sparkvision.models.base import Meta

ENCODER_FILTERS = (32, 64, 128)
"""Channels of the stride-2 stages; the input side must be a multiple of ``2 ** len``."""
SSIM_WEIGHT = 0.85
"""Share of ``1 - SSIM`` in the loss and in the anomaly map (the rest is L1)."""
SSIM_WINDOW = 11
"""Side of the Gaussian SSIM window (sigma 1.5, as ``tf.image.ssim``); smaller on tiny tiles."""
PAD = 4
"""Pixels of reflected border added around the input and cropped off the output (a multiple of
``2 ** len(ENCODER_FILTERS) / 2``), so the convolutions' zero padding does not spoil the edges."""
SEGMENTER_FILTERS = (32, 64, 128)
"""Channels of the defect segmentation head's U-Net levels (full, half and quarter side)."""
CROP_STREAM = 0xC209
"""Folded into a row's augmentation seed for the position of its training crop."""
DEFECT_STREAM = 0xDEFE
"""Folded into a row's augmentation seed for its simulated defect."""
CALIBRATION_EDGE = 5
"""Pixels from the tile edge within which anomaly maps are calibrated per distance (``edge_classes``)."""


Network = Callable[["tf.Tensor"], Any]
"""Layers created once, applied to an input tensor: every model built from one ``Network`` shares
its weights (``FabricAeTask.build``: the training crops' model and the whole tiles' model)."""


def autoencoder_network(latent_dim: int, width: float = 1.0, channels: int = 3) -> Network:
    """The autoencoder's layers (see ``build_autoencoder``), to apply to inputs of any side that
    is a multiple of 8."""
    import tensorflow as tf

    layers = tf.keras.layers
    widths = common.widened(ENCODER_FILTERS, width)
    stack: list[Any] = []
    for i, filters in enumerate(widths):
        stack += [layers.Conv2D(filters, 4, strides=2, padding="same", name=f"encoder_{i}_down"),
                  layers.LeakyReLU(0.2, name=f"encoder_{i}_down_act"),
                  layers.Conv2D(filters, 3, padding="same", name=f"encoder_{i}_conv"),
                  layers.LeakyReLU(0.2, name=f"encoder_{i}_conv_act")]  # fmt: skip
    stack.append(layers.Conv2D(latent_dim, 1, name="bottleneck"))
    for i, filters in enumerate(reversed(widths)):
        stack += [layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=f"decoder_{i}_up"),
                  layers.LeakyReLU(0.2, name=f"decoder_{i}_up_act"),
                  layers.Conv2D(filters, 3, padding="same", name=f"decoder_{i}_conv"),
                  layers.LeakyReLU(0.2, name=f"decoder_{i}_conv_act")]  # fmt: skip
    stack.append(layers.Conv2D(channels, 3, padding="same", name="decoder_output_conv"))
    if PAD:
        stack.append(layers.Cropping2D(PAD, name="crop_pad"))
    stack.append(layers.Activation("sigmoid", name="reconstruction", dtype="float32"))  # float32 under mixed_float16

    def apply(x: tf.Tensor) -> tf.Tensor:
        if PAD:
            x = tf.pad(x, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT", name="reflect_pad")
        for layer in stack:
            x = layer(x)
        return x

    return apply


def network_model(network: Network, side: int, channels: int = 3) -> tf.keras.Model:
    """``network`` on ``side`` x ``side`` images (input ``image``): models built on one network share weights."""
    import tensorflow as tf

    inputs = tf.keras.Input(shape=(side, side, channels), name="image")
    return tf.keras.Model(inputs, network(inputs), name="fabric_ae")


def build_autoencoder(input_shape: tuple[int, int, int], latent_dim: int, width: float = 1.0) -> tf.keras.Model:
    """A fully convolutional autoencoder without BatchNorm.

    Encoder: per entry of ``ENCODER_FILTERS`` (times ``width``) a 4x4 stride-2 convolution and a 3x3
    convolution, both LeakyReLU; ``bottleneck``: a 1x1 convolution to ``latent_dim`` channels
    at 1/8 of the side; decoder: the mirror image with 4x4 stride-2 transposed convolutions,
    then a 3x3 convolution to a sigmoid image. Input ``image``, output ``reconstruction``.

    The input side is fixed: with an open side (None) TensorFlow trains the same network half as
    fast on the CPU (1.0 against 2.0 s a step of 32 crops of 64 px). A family that trains on crops
    and scores whole tiles builds two models on one ``network`` (``autoencoder_network``).

    Args:
        input_shape: ``(side, side, channels)``; ``side`` a multiple of 8.
        latent_dim: Channels of the bottleneck.
        width: Channel multiplier.

    Raises:
        ValueError: When the side is not a multiple of 8.
    """
    common.check_divisible("fabric_ae", input_shape[0], 2 ** len(ENCODER_FILTERS))
    return network_model(autoencoder_network(latent_dim, width, input_shape[2]), input_shape[0], input_shape[2])


def segmenter_network(autoencoder: Network, width: float = 1.0) -> Network:
    """DRAEM's two networks as one: ``autoencoder`` repairs the image, and a small U-Net reads the
    image beside its repair and outputs each pixel's probability of a defect.

    Applied to an image it gives ``{"reconstruction": (N, H, W, 3), "defect": (N, H, W, 1)}``
    (float32); the side must be a multiple of 8 (the autoencoder's).
    """
    import tensorflow as tf

    layers = tf.keras.layers
    filters = common.widened(SEGMENTER_FILTERS, width)

    def block(n: int, name: str) -> list[Any]:
        return [layers.Conv2D(n, 3, padding="same", name=f"{name}_conv0"), layers.LeakyReLU(0.2, name=f"{name}_act0"),
                layers.Conv2D(n, 3, padding="same", name=f"{name}_conv1"), layers.LeakyReLU(0.2, name=f"{name}_act1")]  # fmt: skip

    join = layers.Concatenate(name="image_and_repair")
    down = [layers.MaxPooling2D(2, name=f"seg_down{level}") for level in range(1, len(filters))]
    encoders = [block(n, f"seg_enc{level}") for level, n in enumerate(filters)]
    ups = {level: layers.UpSampling2D(2, interpolation="bilinear", name=f"seg_up{level}")
           for level in range(len(filters) - 1)}  # fmt: skip
    skips = {level: layers.Concatenate(name=f"seg_skip{level}") for level in range(len(filters) - 1)}
    decoders = {level: block(filters[level], f"seg_dec{level}") for level in range(len(filters) - 1)}
    head = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="defect")

    def run(x: tf.Tensor, stack: list[Any]) -> tf.Tensor:
        for layer in stack:
            x = layer(x)
        return x

    def apply(image: tf.Tensor) -> dict[str, tf.Tensor]:
        recon = autoencoder(image)
        x = join([image, recon])
        found = []
        for level, stack in enumerate(encoders):
            x = run(down[level - 1](x) if level else x, stack)
            found.append(x)
        for level in range(len(filters) - 2, -1, -1):
            x = run(skips[level]([ups[level](x), found[level]]), decoders[level])
        return {"reconstruction": recon, "defect": head(x)}  # both float32: their last layers say so

    return apply


def simulate_defect(image: tf.Tensor, seed: tf.Tensor, rate: float) -> tuple[tf.Tensor, tf.Tensor]:
    """With probability ``rate``, paste a simulated defect into a square texture crop (DRAEM-style).

    The mask is smooth random noise (a 4x4 or 8x8 grid, bicubic) above its quantile for a random
    area of 1-12 % of the crop: one or a few irregular blobs. What shows through it, blended over
    the texture with a weight of 0.4-1: the texture from elsewhere in the crop, turned and lit
    differently; a flat colour with grain; the texture blurred flat; or its negative.

    Args:
        image: ``float32 (S, S, 3)`` in [0, 1].
        seed: ``int64 [2]`` stateless seed.
        rate: Share of crops that get a defect.

    Returns:
        ``(image, mask)``: the crop, and ``float32 (S, S, 1)`` 1 where the defect is.
    """
    import tensorflow as tf

    side = int(image.shape[0])
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 11)

    def uniform(i: int, lo: float = 0.0, hi: float = 1.0, shape: Any = ()) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, seeds[i], lo, hi)

    coarse = tf.image.resize(uniform(1, shape=(4, 4, 1)), (side, side), "bicubic")
    fine = tf.image.resize(uniform(2, shape=(8, 8, 1)), (side, side), "bicubic")
    noise = tf.where(uniform(3) < 0.5, coarse, fine)
    flat = tf.sort(tf.reshape(noise, [-1]))
    cut = tf.cast((1.0 - uniform(4, 0.01, 0.12)) * float(side * side - 1), tf.int32)
    mask = tf.cast(noise > flat[cut], tf.float32)

    turned = tf.image.rot90(tf.roll(image, shift=side // 2, axis=0), k=1) * uniform(5, 0.6, 1.5)
    plain = uniform(6, shape=(1, 1, 3)) + 0.05 * tf.random.stateless_normal((side, side, 1), seeds[7])
    blurred = tf.image.resize(tf.nn.avg_pool2d(image[None], 8, 8, "VALID"), (side, side))[0] * uniform(8, 0.6, 1.3)
    sources = tf.stack([turned, plain * tf.ones_like(image), blurred, 1.0 - image])
    source = tf.clip_by_value(sources[tf.cast(uniform(9, 0.0, 4.0), tf.int32) % 4], 0.0, 1.0)
    beta = uniform(0, 0.4, 1.0)
    apply = tf.cast(uniform(10) < rate, tf.float32)
    mask = mask * apply
    out = image * (1.0 - mask) + mask * ((1.0 - beta) * image + beta * source)
    out.set_shape((side, side, 3))
    mask.set_shape((side, side, 1))
    return out, mask


def segments(meta: Meta) -> bool:
    """Whether the model has the defect segmentation head (trained on simulated defects)."""
    return float(meta.get("simulated_defects") or 0.0) > 0.0


def training_patch(cfg: TrainConfig, image_size: int) -> int:
    """Side of the training crops: ``cfg.patch_size`` when set and smaller than the stored tiles,
    else the tile side.

    Raises:
        ValueError: When the crop side is not a multiple of ``2 ** len(ENCODER_FILTERS)``.
    """
    patch = cfg.patch_size if 0 < cfg.patch_size < image_size else image_size
    factor = 2 ** len(ENCODER_FILTERS)
    if patch % factor:
        raise ValueError(f"train.patch_size={cfg.patch_size}: model 'fabric_ae' trains on crops whose side is a "
                         f"multiple of {factor}; set a multiple of {factor}, or 0 for whole {image_size} px tiles")  # fmt: skip
    return patch


def ssim_window(side: int) -> int:
    """SSIM window side for images of ``side`` pixels: ``SSIM_WINDOW``, odd and at most ``side``."""
    return max(1, min(SSIM_WINDOW, side - (1 - side % 2)))


def gaussian_ssim(x: tf.Tensor, y: tf.Tensor, filter_size: int, sigma: float = 1.5) -> tf.Tensor:
    """Per-image mean SSIM of two ``(N, H, W, C)`` batches in [0, 1]: ``tf.image.ssim``'s formula
    (constants k1 0.01, k2 0.03, Gaussian window of ``sigma``, windows inside the image only),
    with the window applied as two 1-D passes. The Gaussian is separable, so the result is the
    same (to float rounding) at a fifth of the cost: TensorFlow's 11x11 depthwise filter and its
    gradient took a fifth of every training step on the CPU."""
    import tensorflow as tf

    channels = int(y.shape[-1])
    taps = np.arange(filter_size, dtype=np.float64) - (filter_size - 1) / 2.0
    g = np.exp(-(taps**2) / (2 * sigma**2))
    g = tf.constant((g / g.sum()).astype(np.float32), dtype=y.dtype)
    down = tf.tile(tf.reshape(g, [filter_size, 1, 1, 1]), [1, 1, channels, 1])
    across = tf.tile(tf.reshape(g, [1, filter_size, 1, 1]), [1, 1, channels, 1])

    def blur(t: tf.Tensor) -> tf.Tensor:
        t = tf.nn.depthwise_conv2d(t, down, [1, 1, 1, 1], "VALID")
        return tf.nn.depthwise_conv2d(t, across, [1, 1, 1, 1], "VALID")

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    num0, den0 = 2.0 * mx * my, mx * mx + my * my
    luminance = (num0 + c1) / (den0 + c1)
    structure = (2.0 * blur(x * y) - num0 + c2) / (blur(x * x + y * y) - den0 + c2)
    return tf.reduce_mean(luminance * structure, axis=[1, 2, 3])


@functools.cache
def ssim_l1_loss() -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The training loss, registered as ``sparkvision>ssim_l1_loss`` on first use.

    ``SSIM_WEIGHT * (1 - SSIM) + (1 - SSIM_WEIGHT) * L1`` per image (``gaussian_ssim`` with a
    window that fits the image, ``max_val=1``). A factory so TensorFlow is imported only when a
    model is built; cached because Keras registers a name once.
    """
    import tensorflow as tf

    @tf.keras.utils.register_keras_serializable(package="sparkvision", name="ssim_l1_loss")
    def ssim_l1_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, y_pred.dtype)
        window = ssim_window(int(y_pred.shape[1]))
        # SSIM only centres windows a half-window inside the border, so edge pixels would count
        # less than inner ones; reflecting both images gives them their share.
        half = (window - 1) // 2
        pad = [[0, 0], [half, half], [half, half], [0, 0]]
        ssim = gaussian_ssim(tf.pad(y_true, pad, "REFLECT"), tf.pad(y_pred, pad, "REFLECT"), window)
        l1 = tf.reduce_mean(tf.abs(y_true - y_pred), axis=[1, 2, 3])
        return SSIM_WEIGHT * (1.0 - ssim) + (1.0 - SSIM_WEIGHT) * l1

    return ssim_l1_loss


def augment_texture(image: tf.Tensor, seed: tf.Tensor, *, flip: bool, shift: float, color: float) -> tf.Tensor:
    """Texture augmentation of one square tile, deterministic in ``seed``.

    A random crop at the tile's own scale (the tile reflected by ``shift`` of its side on
    every edge, then a window of the tile's size anywhere in it): zooming would change the
    yarn pitch the model learns, so nothing is resized. Horizontal and vertical flips (a weave
    looks the same mirrored; no 90-degree turns, which swap warp and weft). A small colour
    jitter: gain ``1 ± color`` (like the illumination of the fabric) and saturation
    ``1 ± color / 2``.

    Args:
        image: ``float32 (S, S, 3)`` in [0, 1].
        seed: ``int64 [2]`` stateless seed (``common.row_seed``).
        flip: Mirror left-right and top-bottom, each with probability 1/2.
        shift: Largest shift as a fraction of the side (``augment_shift``); 0 disables.
        color: ``augment_color``; 0 disables the jitter.
    """
    import tensorflow as tf

    size = int(image.shape[0])
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    margin = min(int(round(shift * size)), size - 1)
    if margin > 0:
        padded = tf.pad(image, [[margin, margin], [margin, margin], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, (size, size, 3), seeds[0])
    if flip:
        image = tf.where(tf.random.stateless_uniform([], seeds[1]) < 0.5, tf.reverse(image, axis=[1]), image)
        image = tf.where(tf.random.stateless_uniform([], seeds[2]) < 0.5, tf.reverse(image, axis=[0]), image)
    if color > 0:
        image = image * tf.random.stateless_uniform([], seeds[3], 1.0 - color, 1.0 + color)
        image = tf.image.stateless_random_saturation(image, 1.0 - color / 2, 1.0 + color / 2, seeds[4])
    image = tf.clip_by_value(image, 0.0, 1.0)
    image.set_shape((size, size, 3))
    return image


def smoothing_size(image_size: int) -> float:
    """Sigma in pixels of the Gaussian that smooths anomaly maps: 1/16 of the side the model is
    trained on (the tile, or the training crop), at least 1."""
    return max(1.0, image_size / 16)


def error_maps(x: np.ndarray, recon: np.ndarray, smooth: float) -> np.ndarray:
    """``(N, 2, H, W)``: per-pixel SSIM dissimilarity ``1 - SSIM`` and L1 error of images ``x``
    against their reconstructions, both averaged over channels and smoothed by a Gaussian of
    sigma ``smooth`` pixels (SSIM of each pixel over a Gaussian window, sigma 1.5, as
    ``tf.image.ssim``, with the borders reflected)."""
    from scipy import ndimage

    x = np.asarray(x, np.float64)
    r = np.asarray(recon, np.float64)
    radius = (ssim_window(x.shape[1]) - 1) // 2
    sigma = (0, 1.5, 1.5, 0)

    def local(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, mode="reflect", radius=(0, radius, radius, 0))

    mx, mr = local(x), local(r)
    vx, vr, cov = local(x * x) - mx * mx, local(r * r) - mr * mr, local(x * r) - mx * mr
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mx * mr + c1) * (2 * cov + c2)) / ((mx * mx + mr * mr + c1) * (vx + vr + c2))
    maps = np.stack([1.0 - ssim.mean(axis=3), np.abs(x - r).mean(axis=3)], axis=1)
    if smooth > 0:
        maps = ndimage.gaussian_filter(maps, (0, 0, smooth, smooth), mode="nearest")
    return maps.astype(np.float32)


def edge_classes(side: int, edge: int) -> np.ndarray:
    """``int (side, side)``: the class of each pixel by its distance to the tile edge.

    With ``a, b`` the distances to the nearest horizontal and vertical edge, capped at
    ``edge``, the class is ``min(a, b) * (edge + 1) + max(a, b)``: corners, edges and the
    interior (class ``edge * (edge + 2)``) fall in separate classes, symmetric in x and y.
    """
    i = np.arange(side)
    d = np.minimum(np.minimum(i, side - 1 - i), edge)
    a, b = d[:, None], d[None, :]
    return np.minimum(a, b) * (edge + 1) + np.maximum(a, b)


def fit_calibration(maps: np.ndarray, edge: int = CALIBRATION_EDGE) -> dict[str, Any]:
    """Mean and standard deviation of defect-free ``error_maps`` ``(N, K, S, S)``, per map kind
    and ``edge_classes`` class: ``{"edge", "mean": K lists, "std": K lists}``."""
    classes = edge_classes(maps.shape[2], edge).ravel()
    flat = maps.reshape(*maps.shape[:2], -1)
    mean = np.zeros((maps.shape[1], (edge + 1) ** 2))
    std = np.ones((maps.shape[1], (edge + 1) ** 2))
    for c in np.unique(classes):
        values = flat[:, :, classes == c]
        mean[:, c], std[:, c] = values.mean(axis=(0, 2)), values.std(axis=(0, 2))
    std = np.maximum(std, 1e-6)
    return {"edge": edge, "mean": mean.tolist(), "std": std.tolist()}


def anomaly_map(maps: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """One anomaly map ``(N, S, S)`` from ``error_maps``.

    Calibrated: each kind standardised per ``edge_classes`` class, then the larger of the
    two, so an error either kind finds counts and the tile edge needs no other threshold than
    the middle (L1 finds flat dark holes and colour, SSIM broken structure once the model
    reconstructs the weave sharply). Without calibration: ``SSIM_WEIGHT * (1 - SSIM) +
    (1 - SSIM_WEIGHT) * L1``, as the loss.
    """
    if not calibration:
        return (SSIM_WEIGHT * maps[:, 0] + (1.0 - SSIM_WEIGHT) * maps[:, 1]).astype(np.float32)
    classes = edge_classes(maps.shape[2], int(calibration["edge"]))
    mean = np.asarray(calibration["mean"], np.float32)[:, classes]
    std = np.asarray(calibration["std"], np.float32)[:, classes]
    return ((maps - mean) / std).max(axis=1).astype(np.float32)


def score_and_heatmaps(
    model: tf.keras.Model, x: np.ndarray, smooth: float, calibration: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tile anomaly score (maximum of its map) and anomaly maps ``(N, H, W)``.

    Args:
        model: The autoencoder, or the autoencoder with its segmentation head (whose map is then
            the anomaly map).
        x: ``float32 (N, S, S, 3)`` tiles in [0, 1].
        smooth: Gaussian sigma of the maps in pixels (``meta["smooth"]``).
        calibration: ``meta["calibration"]`` (see ``anomaly_map``); None: uncalibrated maps.
    """
    from scipy import ndimage

    x = np.asarray(x, np.float32)
    if len(x) == 0:
        return np.zeros(0, np.float32), np.zeros((0, *x.shape[1:3]), np.float32)

    def maps(batch: np.ndarray) -> np.ndarray:
        out = model(batch, training=False)
        if isinstance(out, dict):  # the segmentation head's probability of a defect, smoothed
            found = np.asarray(out["defect"], np.float32)[..., 0]
            return ndimage.gaussian_filter(found, (0, smooth, smooth), mode="nearest") if smooth > 0 else found
        return anomaly_map(error_maps(batch, out.numpy(), smooth), calibration)

    heat = np.concatenate(common.predict_batches(maps, x))
    return heat.max(axis=(1, 2)), heat


def reconstruction_errors(model: tf.keras.Model, x: np.ndarray, smooth: float) -> np.ndarray:
    """``error_maps`` of tiles ``x`` through ``model`` ``(N, 2, S, S)``, in batches."""
    x = np.asarray(x, np.float32)
    return np.concatenate(common.predict_batches(lambda b: error_maps(b, model(b, training=False).numpy(), smooth), x))


# --------------------------------------------------------------------------- whole images


@dataclass(frozen=True)
class SourceImage:
    """Where the tiles of one source image go in its stitched map (stored pixels).

    Attributes:
        source_id: The ``source_id`` of its tiles.
        rows: Indexes of its tiles in the arrays.
        offsets: ``(y, x)`` top-left corner of each tile in the stitched map.
        shape: ``(H, W)`` of the stitched map.
    """

    source_id: str
    rows: np.ndarray
    offsets: np.ndarray
    shape: tuple[int, int]


def source_images(y: dict[str, np.ndarray], meta: Meta, side: int) -> list[SourceImage]:
    """Group tiles by source image (first-seen order) and place them at their stored-pixel offsets.

    Tiles of ``tile_size`` source pixels stored at ``side`` pixels are scaled by
    ``side / tile_size``. Without ``source_id``/``tile_x``/``tile_y`` in ``y`` (a table of
    single images), every row is its own image.
    """
    n = len(y["label"])
    if not all(k in y for k in ("source_id", "tile_x", "tile_y")):
        return [SourceImage(str(i), np.array([i]), np.zeros((1, 2), int), (side, side)) for i in range(n)]
    scale = side / float(meta.get("tile_size") or side)
    ids = [str(s) for s in y["source_id"]]
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(ids):
        groups.setdefault(s, []).append(i)
    out = []
    for s, rows in groups.items():
        r = np.array(rows)
        offsets = np.rint(np.stack([y["tile_y"][r], y["tile_x"][r]], axis=1).astype(np.float64) * scale).astype(int)
        shape = (int(offsets[:, 0].max()) + side, int(offsets[:, 1].max()) + side)
        out.append(SourceImage(s, r, offsets, shape))
    return out


def stitch(tiles: np.ndarray, image: SourceImage) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``tiles[image.rows]`` (``(N, S, S, ...)``) into one array; overlaps keep the maximum.

    Returns:
        ``(stitched, covered)``: the array (0 where no tile lies) and a boolean ``(H, W)`` of
        the pixels some tile covers (a split read only in part may miss tiles).
    """
    side = tiles.shape[1]
    out = np.full((*image.shape, *tiles.shape[3:]), -np.inf, np.float32)
    for i, (oy, ox) in zip(image.rows, image.offsets, strict=True):
        window = out[oy : oy + side, ox : ox + side]
        np.maximum(window, tiles[i], out=window)
    covered = np.isfinite(out) if out.ndim == 2 else np.isfinite(out).all(axis=tuple(range(2, out.ndim)))
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32), covered


class FabricAeTask:
    """The fabric autoencoder as a ``Task``; see ``base.Task`` for the contract.

    Meta keys: ``latent_dim``, ``anomaly_quantile``, ``smooth`` (Gaussian sigma of the maps in
    stored pixels), ``image_size`` (the stored tile side), ``tile_size``/``tile_stride``
    (source pixels, from the ingest config; None when unknown), and after the first
    ``evaluate`` ``calibration`` (see ``fit_calibration``; only when ``tile_size`` is known),
    ``threshold`` (tile/image score) and ``pixel_threshold`` (map value); ``predict`` needs
    the last two.
    """

    name = "fabric_ae"
    tables = ("fabric",)
    columns = ("image", "label")

    def columns_for(self, table: str) -> tuple[str, ...]:
        """The columns the input pipeline reads from ``table``."""
        return self.columns

    def prepare_meta(self, manifest: dict[str, Any], cfg: TrainConfig) -> Meta:
        meta = common.base_meta(self.name, self.tables, manifest, cfg)
        common.check_divisible(self.name, meta["image_size"], 2 ** len(ENCODER_FILTERS))
        tile_size = common.manifest_value(manifest, "tile_size")
        tile_stride = common.manifest_value(manifest, "tile_stride")
        # ``auto``: mirror the tiles (a weave looks the same mirrored; see augment_texture).
        flip = True if cfg.augment_flip == "auto" else bool(cfg.augment_flip)
        meta.update(latent_dim=cfg.latent_dim, anomaly_quantile=cfg.anomaly_quantile, augment_flip=flip,
                    patch_size=training_patch(cfg, meta["image_size"]), samples_per_epoch=cfg.patches_per_epoch,
                    simulated_defects=float(cfg.simulated_defects),
                    tile_size=int(tile_size) if tile_size else None,
                    tile_stride=int(tile_stride) if tile_stride else None,
                    calibration=None, threshold=None, pixel_threshold=None)  # fmt: skip
        meta["smooth"] = smoothing_size(meta["patch_size"])  # the scale the model learnt at, not the tile's
        return meta

    def fit_statistics(self, meta: Meta, train: pd.DataFrame, cfg: TrainConfig) -> Meta:
        """``meta`` unchanged: the threshold and calibration are chosen on val by ``evaluate``."""
        return meta

    def build(self, cfg: TrainConfig, meta: Meta) -> ModelSpec:
        """The network on ``patch_size`` crops (training) and, sharing its weights, on whole
        ``image_size`` tiles (``inference_model``: evaluation, registration, scoring)."""
        import tensorflow as tf

        width = float(meta.get("width", 1.0))
        network = autoencoder_network(int(meta.get("latent_dim", cfg.latent_dim)), width)
        loss: Any = ssim_l1_loss()
        if segments(meta):
            network = segmenter_network(network, width)
            loss = {"reconstruction": loss, "defect": tf.keras.losses.BinaryFocalCrossentropy(gamma=2.0)}

        size = int(meta["image_size"])
        patch = int(meta.get("patch_size") or size)
        return ModelSpec(network_model(network, patch), loss=loss,
                         inference_model=network_model(network, size) if patch != size else None)  # fmt: skip

    def keep_for_training(self, row: dict[str, tf.Tensor]) -> tf.Tensor:
        import tensorflow as tf

        return tf.equal(tf.cast(row["label"], tf.int32), 0)

    def parse_row(self, row: dict[str, tf.Tensor], meta: Meta, cfg: TrainConfig, training: bool) -> tuple[Any, Any]:
        """The tile, or a crop of ``meta["patch_size"]`` of it: at a random place when
        ``training`` (after the texture augmentation), else its centre (per-epoch evaluation)."""
        import tensorflow as tf

        size = meta["image_size"]
        patch = int(meta.get("patch_size") or size)
        image = common.decode_png(row["image"], size)
        if training:
            seed = tf.cast(common.row_seed(cfg, row), tf.int64)
            image = augment_texture(image, seed, flip=bool(meta.get("augment_flip", True)),
                                    shift=cfg.augment_shift, color=cfg.augment_color)  # fmt: skip
            if patch < size:
                crop_seed = tf.random.experimental.stateless_fold_in(seed, CROP_STREAM)
                image = tf.image.stateless_random_crop(image, (patch, patch, 3), seed=crop_seed)
        elif patch < size:
            start = (size - patch) // 2
            image = image[start : start + patch, start : start + patch]
        if not segments(meta):
            return image, image
        if training:  # the repair of a defect is the clean crop; the head learns where it was
            defect_seed = tf.random.experimental.stateless_fold_in(seed, DEFECT_STREAM)
            shown, mask = simulate_defect(image, defect_seed, float(meta["simulated_defects"]))
        else:
            shown, mask = image, tf.zeros_like(image[..., :1])
        return shown, {"reconstruction": image, "defect": mask}

    def arrays(self, frame: pd.DataFrame, meta: Meta) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        size = meta["image_size"]
        x = common.decode_column(frame, size)
        y = {"label": common.stack_column(frame, "label", "int32").reshape(-1)}
        if "mask" in frame:
            y["mask"] = (common.decode_column(frame, size, column="mask", channels=1)[..., 0] > 0.5).astype(np.uint8)
        if "bbox" in frame:
            y["bbox"] = common.stack_column(frame, "bbox").reshape(len(frame), 4)
        if all(c in frame for c in ("source_id", "tile_x", "tile_y")):
            y["source_id"] = np.array([str(s) for s in frame["source_id"].tolist()], dtype=object)
            y["tile_x"] = common.stack_column(frame, "tile_x", "int32").reshape(-1)
            y["tile_y"] = common.stack_column(frame, "tile_y", "int32").reshape(-1)
        return x, y

    def evaluate(self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta) -> dict[str, float]:
        tile_labels = y["label"].astype(int)
        if meta.get("calibration") is None and meta.get("tile_size") and not segments(meta):
            good_tiles = np.flatnonzero(tile_labels == 0)
            if len(good_tiles) == 0:
                raise ValueError("fabric_ae evaluate: expected defect-free rows (label 0) to calibrate the maps")
            meta["calibration"] = fit_calibration(reconstruction_errors(model, x[good_tiles], meta["smooth"]))
        tile_scores, heat = score_and_heatmaps(model, x, meta["smooth"], meta.get("calibration"))
        layout = source_images(y, meta, heat.shape[1])
        maps = [stitch(heat, im) for im in layout]
        scores = np.array([float(m[c].max()) for m, c in maps])
        labels = np.array([int(tile_labels[im.rows].max()) for im in layout])
        good = labels == 0
        q = float(meta["anomaly_quantile"])
        if meta.get("threshold") is None:
            if not good.any():
                raise ValueError("fabric_ae evaluate: expected defect-free images (label 0) to choose the threshold")
            good_pixels = np.concatenate([m[c] for (m, c), g in zip(maps, good, strict=True) if g])
            meta["threshold"] = float(np.quantile(scores[good], q))
            meta["pixel_threshold"] = float(np.quantile(good_pixels, q))
        pred = scores > meta["threshold"]
        out = {
            "threshold": meta["threshold"],
            "pixel_threshold": meta["pixel_threshold"],
            "image_auroc": metrics.auroc(labels, scores),
            "tile_auroc": metrics.auroc(tile_labels, tile_scores),
            "accuracy": float(np.mean(pred == (labels == 1))),
            "false_positive_rate": float(pred[good].mean()) if good.any() else float("nan"),
            "recall": float(pred[~good].mean()) if (~good).any() else float("nan"),
            "mean_score_good": float(scores[good].mean()) if good.any() else float("nan"),
            "mean_score_defect": float(scores[~good].mean()) if (~good).any() else float("nan"),
            "images": float(len(layout)),
        }
        if "mask" in y:
            masks = [stitch(y["mask"].astype(np.float32), im)[0] > 0.5 for im in layout]
            covered = [c for _, c in maps]
            out["pixel_auroc"] = metrics.auroc(
                np.concatenate([mk[c] for mk, c in zip(masks, covered, strict=True)]),
                np.concatenate([m[c] for m, c in maps]),
            )
            out["aupro"] = metrics.aupro(masks, [m for m, _ in maps], valid=covered)
        return {k: v for k, v in out.items() if np.isfinite(v)}

    def pictures(
        self, model: tf.keras.Model, x: np.ndarray, y: dict[str, np.ndarray], meta: Meta, out_dir: Path
    ) -> list[Path]:
        from sparkvision import pictures

        if len(x) == 0:
            return []
        layout = source_images(y, meta, x.shape[1])
        defective = [im for im in layout if y["label"][im.rows].max() == 1][:6] or layout[:6]
        rows_needed = np.concatenate([im.rows for im in defective])
        _, heat_rows = score_and_heatmaps(model, x[rows_needed], meta["smooth"], meta.get("calibration"))
        heat = np.zeros(x.shape[:3], np.float32)
        heat[rows_needed] = heat_rows
        images = [stitch(x, im)[0] for im in defective]
        maps = [stitch(heat, im)[0] for im in defective]
        # Colours saturate at the image threshold: whatever shows bright would flag its tile.
        vmax = meta.get("threshold") or float(np.quantile(np.concatenate([m.ravel() for m in maps]), 0.999))
        rows = [images, [pictures.overlay(im, m, vmax) for im, m in zip(images, maps, strict=True)]]
        titles = ["image", "anomaly map"]
        if "mask" in y:
            rows.append([stitch(y["mask"].astype(np.float32), im)[0] for im in defective])
            titles.append("true mask")
        captions = [[f"{im.source_id[-28:]}\nscore {m.max():.4f}" for im, m in zip(defective, maps, strict=True)]]
        captions += [[""] * len(defective)] * (len(rows) - 1)
        title = f"image threshold {meta.get('threshold') or float('nan'):.4f} = brightest colour"
        path = Path(out_dir) / "fabric_heatmaps.png"
        return [pictures.save_grid(rows, path, row_titles=titles, captions=captions, title=title, cell_inches=2.4)]

    def predict(self, model: tf.keras.Model, x: np.ndarray, meta: Meta) -> dict[str, np.ndarray]:
        if meta.get("threshold") is None or meta.get("pixel_threshold") is None:
            raise ValueError("fabric_ae meta has no 'threshold': run evaluate on the validation split before scoring")
        scores, heat = score_and_heatmaps(model, x, meta["smooth"], meta.get("calibration"))
        is_defect = scores > meta["threshold"]
        boxes = np.zeros((len(scores), 4), np.float32)
        for i in np.flatnonzero(is_defect):
            boxes[i] = metrics.largest_region_box(heat[i] > meta["pixel_threshold"])
        return {"anomaly_score": scores, "is_defect": is_defect, "defect_bbox": boxes}

    def output_schema(self, meta: Meta) -> list[tuple[str, str]]:
        return [("anomaly_score", "float"), ("is_defect", "boolean"), ("defect_bbox", "array<float>")]
