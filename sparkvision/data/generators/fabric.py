"""Woven fabric images with pixel-exact defect masks, in the MVTec AD and AITEX layouts.

The weave is rendered analytically with numpy: warp yarns run vertically and weft yarns
horizontally (slightly skewed), each yarn with its own colour and thickness, crossings
decided by the weave (plain 1/1 or twill 2/2), cylinder shading across each yarn and
dimming where it dives under its neighbour, fibre streaks along the yarn, an illumination
gradient and sensor noise.

Defects change either the weave parameters (a missing yarn, thinner or thicker picks) or
composite onto it (hole, stain, knot, dye bleeding). Each defect is a boolean array that
decides which pixels are painted; the mask written to disk is that same array.

MVTec AD (one texture category)::

    OUT/train/good/000.png
    OUT/test/good/000.png
    OUT/test/<defect>/000.png
    OUT/ground_truth/<defect>/000_mask.png     mode L, 0/255, same size

AITEX::

    OUT/Defect_images/nnnn_ccc_ss.png          grayscale, width = 8 x height
    OUT/NODefect_images/<roll>/nnnn_000_ss.png
    OUT/Mask_images/nnnn_ccc_ss_mask.png       0/255
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sparkvision.data.schema import AITEX_DEFECT_CODES

MVTEC_DEFECTS: tuple[str, ...] = (
    "hole",
    "stain",
    "broken_yarn",
    "knot",
    "thin_place",
    "thick_place",
    "color_bleeding",
)
"""Defect folder names of the generated MVTec-style category."""

AITEX_FABRIC_CODES = 7
"""AITEX fabric codes ``ss`` (00..06): one material each."""


@dataclass(frozen=True)
class Material:
    """One fabric: weave, yarn pitch, palette and variation (a category is one material)."""

    weave: str  # "plain" | "twill"
    pitch: float  # pixels per yarn at 256 px image size
    skew: float  # radians the weave is rotated by
    warp_rgb: tuple[float, float, float]
    weft_rgb: tuple[float, float, float]
    gap_rgb: tuple[float, float, float]
    thickness: float  # fraction of the pitch a yarn covers
    thickness_var: float
    colour_var: float
    fibre: float  # strength of fibre streaks
    noise: float  # sensor noise, in 0..1 units


def sample_material(rng: np.random.Generator, gray: bool = False) -> Material:
    """Draw one material (weave, palette, pitch); ``gray`` for undyed AITEX-like fabric."""
    hue = rng.uniform(0, 1)
    base = np.array([0.5 + 0.35 * math.cos(2 * math.pi * (hue + k / 3)) for k in range(3)])
    base = 0.25 + 0.6 * base * rng.uniform(0.6, 1.0)
    if gray:
        base = np.full(3, rng.uniform(0.45, 0.75))
    weft = base * rng.uniform(0.7, 0.88) if rng.random() < 0.6 else np.clip(base[::-1] * 1.05, 0, 1)
    if gray:
        weft = base * rng.uniform(0.85, 1.0)
    return Material(
        weave="twill" if rng.random() < 0.5 else "plain",
        pitch=float(rng.uniform(7.0, 11.0)),
        skew=float(rng.uniform(-0.03, 0.03)),
        warp_rgb=tuple(float(c) for c in np.clip(base, 0, 1)),  # type: ignore[arg-type]
        weft_rgb=tuple(float(c) for c in np.clip(weft, 0, 1)),  # type: ignore[arg-type]
        gap_rgb=tuple(float(c) for c in np.clip(base * 0.25, 0, 1)),  # type: ignore[arg-type]
        thickness=float(rng.uniform(0.78, 0.9)),
        thickness_var=float(rng.uniform(0.02, 0.06)),
        colour_var=float(rng.uniform(0.02, 0.06)),
        fibre=float(rng.uniform(0.04, 0.09)),
        noise=float(rng.uniform(0.008, 0.018)),
    )


class Weave:
    """The per-image geometry of a woven texture: yarn indices and phases for every pixel.

    ``render`` turns it into a float RGB image in [0, 1]; defects pass modified per-yarn
    thickness/colour arrays or pixel masks of missing yarns.
    """

    def __init__(self, mat: Material, height: int, width: int, rng: np.random.Generator, scale: float) -> None:
        self.mat = mat
        self.height, self.width = height, width
        self.pitch = mat.pitch * scale
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        c, s = math.cos(mat.skew), math.sin(mat.skew)
        xr = (xx * c + yy * s) / self.pitch + rng.uniform(0, 1)
        yr = (-xx * s + yy * c) / self.pitch + rng.uniform(0, 1)
        self.i = np.floor(xr).astype(np.int32)
        self.j = np.floor(yr).astype(np.int32)
        self.u = (xr - self.i).astype(np.float32)
        self.v = (yr - self.j).astype(np.float32)
        self.i -= self.i.min()
        self.j -= self.j.min()
        self.n_warp = int(self.i.max()) + 1
        self.n_weft = int(self.j.max()) + 1
        self.warp_t = np.clip(mat.thickness + rng.normal(0, mat.thickness_var, self.n_warp), 0.4, 0.98)
        self.weft_t = np.clip(mat.thickness + rng.normal(0, mat.thickness_var, self.n_weft), 0.4, 0.98)
        # yarn colours: per-yarn variation plus the occasional slightly different yarn lot
        self.warp_col = np.asarray(mat.warp_rgb) * (1 + rng.normal(0, mat.colour_var, (self.n_warp, 1)))
        self.weft_col = np.asarray(mat.weft_rgb) * (1 + rng.normal(0, mat.colour_var, (self.n_weft, 1)))
        # fibre streaks: noise smooth along the yarn, independent across it
        self.warp_fibre = _smooth_1d(rng.normal(0, 1, (height, self.n_warp)), axis=0, k=5) * mat.fibre
        self.weft_fibre = _smooth_1d(rng.normal(0, 1, (self.n_weft, width)), axis=1, k=5) * mat.fibre
        if mat.weave == "plain":
            self.warp_up = (self.i + self.j) % 2 == 0
        else:  # 2/2 twill: diagonal ribs
            self.warp_up = (self.i + self.j) % 4 < 2
        self.rows = np.arange(height)[:, None]
        self.cols = np.arange(width)[None, :]

    def render(
        self,
        warp_t: np.ndarray | None = None,
        weft_t: np.ndarray | None = None,
        warp_col: np.ndarray | None = None,
        weft_col: np.ndarray | None = None,
        warp_gone: np.ndarray | None = None,
        weft_gone: np.ndarray | None = None,
    ) -> np.ndarray:
        """Float ``(H, W, 3)`` image of the weave; the optional arguments override yarn properties.

        Args:
            warp_t: Thickness per warp yarn (fraction of the pitch).
            weft_t: Thickness per weft yarn.
            warp_col: RGB per warp yarn.
            weft_col: RGB per weft yarn.
            warp_gone: Pixels where the warp yarn is missing (broken).
            weft_gone: Pixels where the weft yarn is missing.
        """
        warp_t = self.warp_t if warp_t is None else warp_t
        weft_t = self.weft_t if weft_t is None else weft_t
        warp_col = self.warp_col if warp_col is None else warp_col
        weft_col = self.weft_col if weft_col is None else weft_col
        tw = warp_t[self.i]
        tf = weft_t[self.j]
        dw = np.abs(self.u - 0.5) * 2  # 0 at the yarn axis, 1 at the cell edge
        df = np.abs(self.v - 0.5) * 2
        in_warp = dw < tw
        in_weft = df < tf
        if warp_gone is not None:
            in_warp &= ~warp_gone
        if weft_gone is not None:
            in_weft &= ~weft_gone
        show_warp = in_warp & (self.warp_up | ~in_weft)
        show_weft = in_weft & ~show_warp
        # cylinder shading across the yarn, dimming along it where it dives under the crossing yarn
        prof_w = np.sqrt(np.clip(1 - (dw / tw) ** 2, 0, 1))
        prof_f = np.sqrt(np.clip(1 - (df / tf) ** 2, 0, 1))
        dive_w = 0.78 + 0.22 * np.sin(np.pi * self.v)
        dive_f = 0.78 + 0.22 * np.sin(np.pi * self.u)
        shade_w = (0.55 + 0.5 * prof_w) * dive_w * (1 + self.warp_fibre[self.rows, self.i])
        shade_f = (0.55 + 0.5 * prof_f) * dive_f * (1 + self.weft_fibre[self.j, self.cols])
        gap = np.asarray(self.mat.gap_rgb, np.float32)
        img = np.empty((self.height, self.width, 3), np.float32)
        img[:] = gap
        img[show_warp] = (warp_col[self.i] * shade_w[..., None])[show_warp]
        img[show_weft] = (weft_col[self.j] * shade_f[..., None])[show_weft]
        return img


def _smooth_1d(a: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Box-smooth along one axis (wrap-around), keeping unit-ish variance."""
    out = np.zeros_like(a)
    for s in range(-(k // 2), k // 2 + 1):
        out += np.roll(a, s, axis=axis)
    return out / math.sqrt(k)


def _finish(img: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Illumination gradient (smooth low-frequency field) and sensor noise -> uint8."""
    h, w = img.shape[:2]
    coarse = rng.uniform(0.82, 1.12, (3, 3)).astype(np.float32)
    light = np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BICUBIC), np.float32)
    out = img * light[..., None] + rng.normal(0, noise, (h, w, 1)).astype(np.float32)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- defects


Defect = Callable[[Weave, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
"""``(weave, clean image, rng) -> (defective image, boolean mask)``."""


def blob_mask(h: int, w: int, rng: np.random.Generator, radius: float, elong: float = 1.0, wobble: float = 0.3,
          centre: tuple[float, float] | None = None) -> np.ndarray:  # fmt: skip
    """Irregular closed polygon as a boolean mask (drawn with PIL, so the mask is the shape)."""
    if centre is None:
        margin = radius * max(1.0, elong) + 4
        cx = rng.uniform(min(margin, w / 2), max(w - margin, w / 2))
        cy = rng.uniform(min(margin, h / 2), max(h - margin, h / 2))
    else:
        cx, cy = centre
    n = 24
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = radius * (1 + wobble * _smooth_1d(rng.normal(0, 1, n), axis=0, k=3) / 1.7)
    rot = rng.uniform(0, math.pi)
    x = r * elong * np.cos(t)
    y = r * np.sin(t)
    pts = np.stack([cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)], axis=1)
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(pts.ravel().tolist(), fill=255)
    return np.asarray(canvas) > 0


def _scale(g: Weave) -> float:
    return min(g.height, g.width) / 256


def defect_hole(g: Weave, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Yarns torn away: the dark backing shows through an irregular opening with a frayed rim."""
    mask = blob_mask(g.height, g.width, rng, rng.uniform(7, 16) * _scale(g), rng.uniform(0.8, 1.6), 0.45)
    out = img.copy()
    backing = np.asarray(g.mat.gap_rgb, np.float32) * 0.35
    out[mask] = backing + rng.normal(0, 0.01, (int(mask.sum()), 1)).astype(np.float32)
    # frayed rim: the yarns at the edge of the opening are pulled and darker
    rim = mask & ~erode_mask(mask, 2)
    out[rim] = img[rim] * 0.45
    return out, mask


def defect_stain(g: Weave, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An oil or dirt stain: the weave stays visible under a darker, tinted, soft-edged blob."""
    mask = blob_mask(g.height, g.width, rng, rng.uniform(14, 30) * _scale(g), rng.uniform(0.7, 1.8), 0.35)
    tint = np.array([0.55, 0.45, 0.3], np.float32) * rng.uniform(0.7, 1.1)
    alpha = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(3)), np.float32)
    alpha = (0.35 + 0.4 * alpha / 255)[..., None]
    out = img.copy()
    stained = img * (1 - alpha) + img * tint * alpha
    out[mask] = stained[mask]
    return out, mask


def defect_broken_yarn(g: Weave, img: np.ndarray, rng: np.random.Generator, horizontal: bool | None = None,
                       length: float | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One warp (or weft) yarn broken over a stretch: the gap is dark, crossing yarns float loose."""
    if horizontal is None:
        horizontal = bool(rng.random() < 0.4)
    along, n, index = (g.cols, g.n_weft, g.j) if horizontal else (g.rows, g.n_warp, g.i)
    extent = g.width if horizontal else g.height
    k = int(rng.integers(2, max(3, n - 2)))
    span = (length if length is not None else rng.uniform(0.25, 0.7)) * extent
    start = rng.uniform(0, extent - span)
    seg = (along >= start) & (along < start + span)
    # the whole cell of the yarn is the defect: the yarn is gone and its neighbours close in
    gone = (index == k) & seg
    kw = {"weft_gone": gone} if horizontal else {"warp_gone": gone}
    out = img.copy()
    broken = g.render(**kw) * 0.8
    out[gone] = broken[gone]
    return out, gone


def defect_knot(g: Weave, img: np.ndarray, rng: np.random.Generator, size: float = 1.0,
                bright: float | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A slub/knot: a thick, bright, fibrous lump on one yarn, elongated along it."""
    s = _scale(g) * size
    h, w = g.height, g.width
    radius = rng.uniform(5.0, 8.0) * s + g.pitch * 0.3
    mask = blob_mask(h, w, rng, radius, rng.uniform(1.6, 2.6), 0.25)
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    dist = np.sqrt((g.rows - cy) ** 2 + (g.cols - cx) ** 2) / (radius * 2.0)
    base = np.asarray(g.mat.warp_rgb, np.float32) * (bright if bright is not None else rng.uniform(1.35, 1.6))
    fibres = 1 + 0.12 * np.sin(g.cols * 1.7 + np.sin(g.rows * 0.6) * 2) * np.cos(g.rows * 0.9)
    lump = np.clip(base * ((1.05 - 0.55 * dist) * fibres)[..., None], 0, 1)
    out = img.copy()
    out[mask] = lump[mask]
    return out, mask


def _band(g: Weave, rng: np.random.Generator, horizontal: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Indices of 2-4 adjacent picks (weft yarns) and the pixel mask of their cells."""
    n = g.n_weft if horizontal else g.n_warp
    width = int(rng.integers(2, 5))
    k0 = int(rng.integers(1, max(2, n - width - 1)))
    picks = np.arange(k0, k0 + width)
    index = g.j if horizontal else g.i
    return picks, (index >= k0) & (index < k0 + width)


def defect_thin_place(g: Weave, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A few picks spun too thin: more gap shows, the band looks darker and sparser."""
    picks, mask = _band(g, rng)
    weft_t = g.weft_t.copy()
    weft_t[picks] *= rng.uniform(0.35, 0.5)
    weft_col = g.weft_col.copy()
    weft_col[picks] *= 0.8
    out = img.copy()
    thin = g.render(weft_t=weft_t, weft_col=weft_col)
    out[mask] = thin[mask] * 0.85
    return out, mask


def defect_thick_place(g: Weave, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A few picks spun too thick: they cover the crossings, look denser, brighter and coarser."""
    picks, mask = _band(g, rng)
    weft_t = g.weft_t.copy()
    weft_t[picks] = 1.0
    weft_col = g.weft_col.copy()
    weft_col[picks] = weft_col[picks] * 1.2 + 0.05
    warp_gone = mask  # thick picks lie on top of the warp all along the band
    out = img.copy()
    thick = g.render(weft_t=weft_t, weft_col=weft_col, warp_gone=warp_gone)
    out[mask] = np.clip(thick[mask], 0, 1)
    return out, mask


def defect_color_bleeding(g: Weave, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dye bled from one yarn: a strongly coloured smear along it, fading outwards."""
    h, w = g.height, g.width
    s = _scale(g)
    horizontal = bool(rng.random() < 0.5)
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    la, lc = rng.uniform(30, 60) * s, rng.uniform(7, 12) * s
    da, dc = ((g.cols - cx), (g.rows - cy)) if horizontal else ((g.rows - cy), (g.cols - cx))
    wobble = 1 + 0.3 * np.sin(da / (6 * s) + rng.uniform(0, 6))
    alpha = np.exp(-((da / la) ** 2) - (dc / (lc * wobble)) ** 2)
    mask = alpha > 0.2
    dyes = np.array([(0.85, 0.1, 0.15), (0.1, 0.2, 0.8), (0.1, 0.6, 0.2), (0.6, 0.1, 0.7), (0.9, 0.6, 0.05)])
    hue = np.asarray(g.mat.warp_rgb) / max(1e-6, float(np.mean(g.mat.warp_rgb)))
    far = np.argsort(-np.abs(dyes / dyes.mean(axis=1, keepdims=True) - hue).sum(axis=1))[:2]
    dye = dyes[int(far[rng.integers(2)])].astype(np.float32)  # a dye that contrasts with the cloth
    a = (np.clip(alpha, 0, 1) * 0.85)[..., None]
    bled = img * (1 - a) + dye * img.mean(axis=2, keepdims=True) * 1.6 * a
    out = img.copy()
    out[mask] = np.clip(bled[mask], 0, 1)
    return out, mask


def erode_mask(mask: np.ndarray, px: int) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(2 * px + 1))
    return np.asarray(img) > 0


MVTEC_DEFECT_FUNCS: dict[str, Defect] = {
    "hole": defect_hole,
    "stain": defect_stain,
    "broken_yarn": defect_broken_yarn,
    "knot": defect_knot,
    "thin_place": defect_thin_place,
    "thick_place": defect_thick_place,
    "color_bleeding": defect_color_bleeding,
}


# --------------------------------------------------------------------------- MVTec AD


def save_png(path: Path, arr: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, format="PNG", compress_level=6)


def _fabric_image(mat: Material, size: tuple[int, int], rng: np.random.Generator, defect: Defect | None,
                  scale: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    h, w = size
    weave = Weave(mat, h, w, rng, scale)
    img = weave.render()
    mask = np.zeros((h, w), bool)
    if defect is not None:
        for _ in range(20):  # a defect too small to see (clipped at a border) is drawn again
            img2, mask = defect(weave, img, rng)
            if mask.sum() >= 12:
                img = img2
                break
    return _finish(img, rng, mat.noise), mask


def generate_mvtec(out: Path, seed: int, train_count: int, test_count: int, image_size: int) -> Path:
    """Write one MVTec-AD-style texture category of woven fabric.

    Args:
        out: Category folder to write (created).
        seed: Seed; picks the material and every image. Same seed, same bytes.
        train_count: Defect-free images in ``train/good``.
        test_count: Images in ``test/good`` and in ``test/<defect>`` for each of ``MVTEC_DEFECTS``.
        image_size: Side of the square RGB images.

    Returns:
        ``out``.

    Raises:
        ValueError: When ``image_size`` is below 32 or a count is negative.
    """
    if image_size < 32 or train_count < 0 or test_count < 0:
        raise ValueError(
            f"expected image_size >= 32 and counts >= 0, found image_size={image_size}, "
            f"train_count={train_count}, test_count={test_count}"
        )
    out = Path(out)
    mat = sample_material(np.random.default_rng([seed, 0]))
    scale = image_size / 256
    size = (image_size, image_size)
    for n in range(train_count):
        img, _ = _fabric_image(mat, size, np.random.default_rng([seed, 1, n]), None, scale)
        save_png(out / "train" / "good" / f"{n:03d}.png", img, "RGB")
    for n in range(test_count):
        img, _ = _fabric_image(mat, size, np.random.default_rng([seed, 2, n]), None, scale)
        save_png(out / "test" / "good" / f"{n:03d}.png", img, "RGB")
    for d, name in enumerate(MVTEC_DEFECTS):
        for n in range(test_count):
            rng = np.random.default_rng([seed, 3, d, n])
            img, mask = _fabric_image(mat, size, rng, MVTEC_DEFECT_FUNCS[name], scale)
            save_png(out / "test" / name / f"{n:03d}.png", img, "RGB")
            save_png(out / "ground_truth" / name / f"{n:03d}_mask.png", mask.astype(np.uint8) * 255, "L")
    return out


def generate_new_fabric(out: Path, seed: int, count: int, width: int, height: int, image_size: int = 256,
                        defect_share: float = 0.5) -> list[Path]:  # fmt: skip
    """New, unlabelled camera images of the fabric of ``generate_mvtec(seed=seed)``, flat in one folder.

    The material and yarn pitch are those of the category ``generate_mvtec`` writes with the same
    ``seed`` and ``image_size``, so a model trained on it sees its own cloth; the images are
    ``width`` x ``height`` (any size) and about ``defect_share`` of them carry one defect of a
    random ``MVTEC_DEFECTS`` type. Nothing says which: no labels, no masks.

    Args:
        out: Folder to write ``new-000.png``, ... into (created).
        seed: The category's seed (material); the images differ from the category's own.
        count: Images to write.
        width: Image width in pixels (>= 32).
        height: Image height in pixels (>= 32).
        image_size: The category's image side: sets the yarn pitch.
        defect_share: Fraction of images with a defect, in [0, 1].

    Returns:
        The written files, in order.

    Raises:
        ValueError: On sides below 32, a negative count or a share outside [0, 1].
    """
    if min(width, height, image_size) < 32 or count < 0 or not 0.0 <= defect_share <= 1.0:
        raise ValueError(f"expected sides >= 32, count >= 0 and defect_share in [0, 1], found width={width}, "
                         f"height={height}, image_size={image_size}, count={count}, defect_share={defect_share}")  # fmt: skip
    out = Path(out)
    mat = sample_material(np.random.default_rng([seed, 0]))
    paths = []
    for n in range(count):
        rng = np.random.default_rng([seed, 4, n])
        defect = None
        if rng.random() < defect_share:
            defect = MVTEC_DEFECT_FUNCS[MVTEC_DEFECTS[int(rng.integers(len(MVTEC_DEFECTS)))]]
        img, _ = _fabric_image(mat, (height, width), rng, defect, image_size / 256)
        paths.append(out / f"new-{n:03d}.png")
        save_png(paths[-1], img, "RGB")
    return paths


# --------------------------------------------------------------------------- AITEX


def _aitex_crease(g: Weave, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fold line: a long narrow band lit on one side and shadowed on the other."""
    h, w = g.height, g.width
    angle = rng.uniform(-0.35, 0.35)
    x0 = rng.uniform(0.15, 0.85) * w
    half = rng.uniform(2.5, 4.5) * _scale(g)
    d = (g.cols - x0) * math.cos(angle) + (g.rows - h / 2) * math.sin(angle) * 3
    mask = np.abs(d) < half
    out = img.copy()
    shade = np.where(d < 0, 1.35, 0.55)[..., None]
    out[mask] = np.clip(img * shade, 0, 1)[mask]
    return out, mask


def _aitex_cut_selvage(g: Weave, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A cut at the fabric edge: an opening that touches the top or bottom border."""
    h = g.height
    r = rng.uniform(0.12, 0.22) * h
    cy = -r * 0.3 if rng.random() < 0.5 else h + r * 0.3
    cx = rng.uniform(0.1, 0.9) * g.width
    mask = blob_mask(g.height, g.width, rng, r, rng.uniform(1.5, 3.0), 0.3, centre=(cx, cy))
    out = img.copy()
    out[mask] = np.asarray(g.mat.gap_rgb, np.float32) * 0.3
    return out, mask


AITEX_DEFECT_FUNCS: dict[int, Defect] = {
    2: lambda g, im, r: defect_broken_yarn(g, im, r, horizontal=False, length=r.uniform(0.5, 1.0)),  # broken_end
    6: defect_broken_yarn,  # broken_yarn
    10: lambda g, im, r: defect_broken_yarn(g, im, r, horizontal=True, length=r.uniform(0.2, 0.6)),  # broken_pick
    16: defect_thick_place,  # weft_curling: bunched picks
    19: lambda g, im, r: defect_knot(g, im, r, size=1.6),  # fuzzyball
    22: _aitex_cut_selvage,  # cut_selvage
    23: _aitex_crease,  # crease
    25: lambda g, im, r: defect_knot(g, im, r, size=1.3, bright=0.6),  # warp_ball: a dark lump
    27: defect_knot,  # knots
    29: defect_stain,  # contamination
    30: lambda g, im, r: defect_knot(g, im, r, size=0.7, bright=1.5),  # nep: a small white speck
    36: defect_thin_place,  # weft_crack
}


def _to_gray(img: np.ndarray) -> np.ndarray:
    return np.rint(img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


def _roll_name(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(2_300_000, 2_700_000))}-{int(rng.integers(100, 999))}0{int(rng.integers(10, 99))}u"


def generate_aitex(out: Path, seed: int, count: int, image_size: int) -> Path:
    """Write an AITEX-style fabric data set: grayscale strips 8x wider than high.

    ``count`` defect-free images go to ``NODefect_images/<roll>/nnnn_000_ss.png`` (one roll
    folder per fabric code ``ss``), and ``count`` defect images cycling over the defect codes
    of ``AITEX_DEFECT_CODES`` to ``Defect_images/nnnn_ccc_ss.png`` with their masks in
    ``Mask_images/nnnn_ccc_ss_mask.png``. The height is ``max(32, image_size // 2)``.

    Args:
        out: Folder to write (created).
        seed: Seed; same seed, same bytes.
        count: Defect-free images, and defect images.
        image_size: Controls the height (half of it); the real data set is 4096 x 256.

    Returns:
        ``out``.

    Raises:
        ValueError: When ``count`` is negative or ``image_size`` below 64.
    """
    if count < 0 or image_size < 64:
        raise ValueError(f"expected count >= 0 and image_size >= 64, found count={count}, image_size={image_size}")
    out = Path(out)
    h = max(32, image_size // 2)
    size = (h, 8 * h)
    scale = h / 256 * 1.6
    mats = [sample_material(np.random.default_rng([seed, 10, ss]), gray=True) for ss in range(AITEX_FABRIC_CODES)]
    rolls = [_roll_name(np.random.default_rng([seed, 11, ss])) for ss in range(AITEX_FABRIC_CODES)]
    codes = [c for c in sorted(AITEX_DEFECT_CODES) if c != 0]
    for n in range(count):
        ss = n % AITEX_FABRIC_CODES
        img, _ = _fabric_image(mats[ss], size, np.random.default_rng([seed, 12, n]), None, scale)
        save_png(out / "NODefect_images" / rolls[ss] / f"{n + 1:04d}_000_{ss:02d}.png", _to_gray(img), "L")
    for n in range(count):
        code = codes[n % len(codes)]
        ss = (n // len(codes) + n) % AITEX_FABRIC_CODES
        rng = np.random.default_rng([seed, 13, n])
        img, mask = _fabric_image(mats[ss], size, rng, AITEX_DEFECT_FUNCS[code], scale)
        stem = f"{n + 1:04d}_{code:03d}_{ss:02d}"
        save_png(out / "Defect_images" / f"{stem}.png", _to_gray(img), "L")
        save_png(out / "Mask_images" / f"{stem}_mask.png", mask.astype(np.uint8) * 255, "L")
    return out
