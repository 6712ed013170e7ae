"""Evaluation metrics in plain numpy: AUROC and ROC curves, box IoU, confusion matrices and
the box of the largest region of a binary mask."""

from __future__ import annotations

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count 1/2). ``nan`` when only one class is present.

    Args:
        y_true: Labels, anything > 0.5 is positive.
        score: Scores, higher means more positive.
    """
    y = np.asarray(y_true).reshape(-1) > 0.5
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"auroc: expected labels and scores of one length, found {y.shape} and {s.shape}")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score threshold (highest first).

    Returns:
        ``(fpr, tpr, thresholds)``; both rates start at 0 and end at 1.
    """
    y = np.asarray(y_true).reshape(-1) > 0.5
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, dtype=int)
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fp / max(int((~y).sum()), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise intersection over union of ``(N, 4)`` ``x_min, y_min, x_max, y_max`` boxes
    (0 where both are empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih

    def area(x: np.ndarray) -> np.ndarray:
        return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)

    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` counts, rows = true class, columns = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=int).reshape(-1), np.asarray(y_pred, dtype=int).reshape(-1)), 1)
    return m


def largest_region_box(mask: np.ndarray) -> np.ndarray:
    """Normalised ``[x_min, y_min, x_max, y_max]`` of the largest 8-connected region of a 2-D
    boolean mask (pixel edges, so a single pixel at (0, 0) of a 4x4 mask is
    ``[0, 0, .25, .25]``); zeros when the mask is empty."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros(4, dtype=np.float32)
    sizes = np.bincount(labels.reshape(-1))[1:]
    rows, cols = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    h, w = mask.shape
    return np.array([cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h], dtype=np.float32)


def nanmean(values: list[float]) -> float:
    """Mean of the finite values; ``nan`` when there are none (without a numpy warning)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
