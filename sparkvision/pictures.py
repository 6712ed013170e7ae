"""Pictures people look at: image grids, boxes and points drawn on images, heatmap overlays,
confusion matrices and ROC curves, written as PNG files (matplotlib with the Agg backend,
imported inside the functions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

Color = tuple[int, int, int]
TRUE_COLOR: Color = (0, 200, 0)
PRED_COLOR: Color = (255, 0, 0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] (or uint8) → ``uint8 (H, W, 3)``."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


def _pyplot():  # noqa: ANN202 - matplotlib module
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | Path,
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    title: str = "",
    cell_inches: float = 1.6,
) -> Path:
    """Save a grid of images (one inner sequence per row) as a PNG and return its path.

    Args:
        rows: Images as float [0, 1] or uint8 arrays, ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``.
        path: Output file; parent folders are created.
        row_titles: One label per row, shown on the left.
        col_titles: One label per column, shown on top.
        captions: One caption per cell (same nesting as ``rows``), shown under it.
        title: Figure title.
        cell_inches: Size of one cell.
    """
    plt = _pyplot()
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"save_grid {path}: expected at least one image, found {n_rows} rows")
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(cell_inches * n_cols, cell_inches * n_rows + (0.4 if title else 0)), squeeze=False
    )
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(rows[r]):
                ax.imshow(to_uint8(rows[r][c]))
            else:
                ax.axis("off")
            if captions is not None and c < len(captions[r]):
                ax.set_xlabel(captions[r][c], fontsize=6)
            if row_titles is not None and c == 0:
                ax.set_ylabel(row_titles[r], fontsize=7)
            if col_titles is not None and r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:  # noqa: ANN001 - matplotlib figure
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    return out


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[np.ndarray, Color]], width: int = 1) -> np.ndarray:
    """Draw normalised ``x_min, y_min, x_max, y_max`` boxes on a copy of ``image`` (uint8 result)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(to_uint8(image))
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for box, color in boxes:
        x0, y0, x1, y1 = (float(v) for v in np.asarray(box).reshape(4))
        if x1 <= x0 or y1 <= y0:
            continue
        left, top = x0 * w, y0 * h  # a box thinner than a pixel is still drawn, one pixel wide
        draw.rectangle([left, top, max(left, x1 * w - 1), max(top, y1 * h - 1)], outline=color, width=width)
    return np.asarray(img)


def draw_points(image: np.ndarray, points: Sequence[tuple[np.ndarray, Color]], radius: float = 1.5) -> np.ndarray:
    """Draw normalised ``(x, y)`` points (flat ``[x0, y0, x1, y1, ...]``) on a copy of ``image``."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(to_uint8(image))
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for pts, color in points:
        for x, y in np.asarray(pts, dtype=np.float64).reshape(-1, 2):
            draw.ellipse([x * w - radius, y * h - radius, x * w + radius, y * h + radius], outline=color)
    return np.asarray(img)


def heatmap_rgb(heat: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """A 2-D map → ``uint8`` RGB with the 'inferno' colour map, scaled to ``[0, vmax]``."""
    import matplotlib

    heat = np.asarray(heat, dtype=np.float64)
    top = float(vmax) if vmax is not None and vmax > 0 else float(heat.max()) or 1.0
    rgba = matplotlib.colormaps["inferno"](np.clip(heat / top, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, vmax: float | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend ``heatmap_rgb(heat)`` over ``image`` (uint8 result)."""
    base = to_uint8(image).astype(np.float64)
    return (base * (1 - alpha) + heatmap_rgb(heat, vmax).astype(np.float64) * alpha + 0.5).astype(np.uint8)


def save_confusion_matrices(
    matrices: Sequence[np.ndarray], titles: Sequence[str], labels: Sequence[Sequence[str]], path: str | Path
) -> Path:
    """Save one annotated confusion matrix (rows = true, columns = predicted) per title in a grid."""
    plt = _pyplot()
    n = len(matrices)
    cols = min(n, 5)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.reshape(-1)):
        if i >= n:
            ax.axis("off")
            continue
        m = np.asarray(matrices[i])
        ax.imshow(m, cmap="Blues")
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=7)
        ticks = list(range(len(labels[i])))
        ax.set_xticks(ticks, labels[i], fontsize=6, rotation=45)
        ax.set_yticks(ticks, labels[i], fontsize=6)
        ax.set_xlabel("predicted", fontsize=6)
        ax.set_ylabel("true", fontsize=6)
        ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def save_roc_grid(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], titles: Sequence[str], aucs: Sequence[float], path: str | Path
) -> Path:
    """Save one ROC curve (``(fpr, tpr)``) per title in a grid, with its AUROC in the title."""
    plt = _pyplot()
    n = len(curves)
    cols = min(n, 5)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.reshape(-1)):
        if i >= n:
            ax.axis("off")
            continue
        fpr, tpr = curves[i]
        ax.plot(fpr, tpr, color="tab:blue")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=5)
        ax.set_title(f"{titles[i]}\nAUROC {aucs[i]:.3f}", fontsize=6)
    fig.tight_layout()
    return _save(fig, path)
