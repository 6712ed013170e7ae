"""Cutting fabric images into patches and describing the defect regions of a patch mask.

Pure numpy/scipy; used on executors by ingest for the MVTec AD and AITEX formats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Offsets of patches of side ``tile`` every ``stride`` pixels along an axis of ``length``.

    When the stride does not reach the far edge exactly, one more patch is aligned to the
    edge, so every pixel is covered. Empty when ``length < tile``.
    """
    if length < tile:
        return []
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def tile_grid(width: int, height: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """``(x, y)`` top-left corners of all patches, row by row."""
    return [(x, y) for y in tile_starts(height, tile, stride) for x in tile_starts(width, tile, stride)]


@dataclass(frozen=True)
class Regions:
    """Connected defect regions of a binary patch mask, boxes normalised to the patch side.

    Attributes:
        coverage: Fraction of patch pixels set.
        largest: ``[x_min, y_min, x_max, y_max]`` of the region with most pixels; zeros if none.
        boxes: All region boxes flattened (4 numbers each), in raster order of first pixel.
    """

    coverage: float
    largest: list[float]
    boxes: list[float]


def mask_regions(mask: np.ndarray) -> Regions:
    """Describe the 8-connected regions of a boolean ``(H, W)`` mask.

    Args:
        mask: Boolean (or 0/1) array of one patch.

    Returns:
        Coverage, largest region box and all region boxes, normalised by width and height.
    """
    from scipy import ndimage

    binary = np.asarray(mask, dtype=bool)
    h, w = binary.shape
    coverage = float(binary.mean()) if binary.size else 0.0
    if not binary.any():
        return Regions(coverage, [0.0, 0.0, 0.0, 0.0], [])
    labels, count = ndimage.label(binary, structure=np.ones((3, 3), dtype=int))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    boxes: list[list[float]] = []
    for sl in ndimage.find_objects(labels):
        ys, xs = sl
        boxes.append([xs.start / w, ys.start / h, xs.stop / w, ys.stop / h])
    largest = boxes[int(np.argmax(sizes))]
    return Regions(coverage, largest, [v for b in boxes for v in b])
