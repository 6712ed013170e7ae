"""Evaluation metrics in plain numpy: AUROC and ROC curves, the per-region overlap (PRO) curve
and its normalised area (AUPRO), box IoU, confusion matrices and the box of the largest region
of a binary mask."""

from __future__ import annotations

from collections.abc import Sequence

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


def pro_curve(
    masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], valid: Sequence[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap against false positive rate at every distinct threshold (highest first).

    As in MVTec AD (Bergmann et al., 2021): each 8-connected region of every ground-truth
    mask is one region; at a threshold, its overlap is the fraction of its pixels whose map
    value is at least the threshold, and PRO is the mean overlap over all regions of all
    images. The false positive rate is the fraction of all defect-free pixels at or above the
    threshold.

    Args:
        masks: Boolean ``(H, W)`` ground truth per image (shapes may differ between images).
        maps: Anomaly maps of the same shapes, higher means more anomalous.
        valid: Optional boolean ``(H, W)`` per image: only these pixels count.

    Returns:
        ``(fpr, pro)``, both starting at 0 and ending at 1 (when regions and defect-free pixels exist).

    Raises:
        ValueError: When the lists differ in length or a map and its mask differ in shape.
    """
    from scipy import ndimage

    if len(masks) != len(maps) or (valid is not None and len(valid) != len(maps)):
        raise ValueError(f"pro_curve: expected as many masks as maps, found {len(masks)} and {len(maps)}")
    scores, negatives, weights = [], [], []
    regions = 0
    per_image: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (mask, amap) in enumerate(zip(masks, maps, strict=True)):
        mask, amap = np.asarray(mask, bool), np.asarray(amap, np.float64)
        if mask.shape != amap.shape:
            raise ValueError(f"pro_curve: image {i}: mask shape {mask.shape} differs from map shape {amap.shape}")
        keep = np.ones(mask.shape, bool) if valid is None else np.asarray(valid[i], bool)
        labels, n = ndimage.label(mask & keep, structure=np.ones((3, 3), bool))
        scores.append(amap[keep])
        negatives.append(~mask[keep])
        per_image.append((labels[keep], np.bincount(labels[keep], minlength=n + 1).astype(np.float64)))
        regions += n
    # A defect pixel adds 1 / (its region's size * number of regions) to PRO once it is above
    # the threshold, so PRO at a threshold is the mean over regions of their found fraction.
    for labels, sizes in per_image:
        w = np.zeros(len(labels))
        inside = labels > 0
        w[inside] = 1.0 / (sizes[labels[inside]] * max(regions, 1))
        weights.append(w)
    score = np.concatenate(scores) if scores else np.zeros(0)
    negative = np.concatenate(negatives) if negatives else np.zeros(0, bool)
    weight = np.concatenate(weights) if weights else np.zeros(0)
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, dtype=int)
    fpr = np.cumsum(negative[order])[last] / max(int(negative.sum()), 1)
    pro = np.cumsum(weight[order])[last]
    return np.r_[0.0, fpr], np.r_[0.0, np.minimum(pro, 1.0)]


def aupro(
    masks: Sequence[np.ndarray],
    maps: Sequence[np.ndarray],
    max_fpr: float = 0.3,
    valid: Sequence[np.ndarray] | None = None,
) -> float:
    """Area under the PRO curve up to ``max_fpr``, divided by ``max_fpr`` (1 is perfect).

    The MVTec AD definition (see ``pro_curve``); the curve is interpolated linearly at
    ``max_fpr``. A random map gives about ``max_fpr / 2``. ``nan`` without defect regions or
    without defect-free pixels.

    Args:
        masks: Boolean ``(H, W)`` ground truth per image.
        maps: Anomaly maps of the same shapes.
        max_fpr: Upper end of the false positive rate range, in ``(0, 1]``.
        valid: Optional boolean ``(H, W)`` per image: only these pixels count.

    Raises:
        ValueError: On a ``max_fpr`` outside ``(0, 1]`` (and as ``pro_curve``).
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"aupro: expected max_fpr in (0, 1], found {max_fpr}")
    fpr, pro = pro_curve(masks, maps, valid)
    if len(fpr) < 2 or fpr[-1] <= 0 or pro[-1] <= 0:
        return float("nan")
    # Several points may share one fpr (regions found before any false positive): keep their order.
    end = int(np.searchsorted(fpr, max_fpr, side="right"))
    xs, ys = fpr[:end], pro[:end]
    if end < len(fpr) and xs[-1] < max_fpr:
        x0, x1, y0, y1 = fpr[end - 1], fpr[end], pro[end - 1], pro[end]
        xs, ys = np.r_[xs, max_fpr], np.r_[ys, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)]
    return float(np.trapz(ys, xs) / max_fpr)


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


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of the true positive and true negative rates of binary predictions (``nan`` when a
    class is absent): 0.5 for a constant or random predictor whatever the class balance."""
    y = np.asarray(y_true).reshape(-1) > 0.5
    p = np.asarray(y_pred).reshape(-1) > 0.5
    if y.all() or not y.any():
        return float("nan")
    return float((p[y].mean() + (~p[~y]).mean()) / 2.0)


def balanced_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """The score threshold (``score > t`` is positive) that maximises balanced accuracy
    (Youden's J) on these labels; 0.5 when a class is absent."""
    y = np.asarray(y_true).reshape(-1) > 0.5
    if y.all() or not y.any():
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, score)
    best = int(np.argmax(tpr - fpr))
    # roc_curve's thresholds are "score >= t": halfway to the next lower score keeps ">" right.
    s = np.sort(np.unique(np.asarray(score, dtype=np.float64)))[::-1]
    t = thresholds[best]
    if not np.isfinite(t):
        return float(s[0])
    lower = s[s < t]
    return float((t + lower[0]) / 2.0) if len(lower) else float(np.nextafter(t, -np.inf))


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall`` and ``f1`` of single-label predictions (``nan`` where
    a class is never predicted, or never true)."""
    m = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / m.sum(axis=0)
        recall = tp / m.sum(axis=1)
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where((precision + recall) == 0, 0.0, f1)
    return {"precision": precision, "recall": recall, "f1": f1}


SIMILARITY_NOISE = 1e-5
"""How far a cosine similarity may move when the same image is embedded again in another batch."""


def threshold_at_far(impostor_similarities: np.ndarray, target_far: float) -> tuple[float, float]:
    """The smallest similarity threshold that accepts at most ``target_far`` of the impostors.

    Args:
        impostor_similarities: Best gallery similarity of each probe whose identity is not enrolled.
        target_far: Allowed fraction of those probes at or above the threshold.

    Returns:
        ``(threshold, achieved false-accept rate)``.

    Raises:
        ValueError: No impostor similarities.
    """
    sims = np.sort(np.asarray(impostor_similarities, np.float64))[::-1]
    if len(sims) == 0:
        raise ValueError("cannot choose a threshold: no impostor probes (images of identities not enrolled)")
    k = int(np.floor(target_far * len(sims) + 1e-9))  # impostors we may accept
    # Just above the first rejected impostor, by more than the noise of recomputing its similarity:
    # the same image embedded in another batch (identify after enroll) differs in the last float32
    # digits, and one unit in the last place let it through.
    threshold = float(sims[k]) + SIMILARITY_NOISE if k < len(sims) else float(sims[-1])
    threshold = min(threshold, 1.0)
    return threshold, float(np.mean(sims >= threshold))


def open_set_identification(
    embeddings: np.ndarray,
    identities: np.ndarray,
    enrolled: np.ndarray,
    *,
    gallery_images: int = 1,
    far: float = 0.01,
) -> dict[str, float]:
    """Identification figures of unit embeddings: enroll, identify the rest, reject impostors.

    Each enrolled identity's first ``gallery_images`` rows (in the given order) make its gallery
    centroid (mean of unit vectors, re-normalised); its other rows are genuine probes. Rows of
    identities not enrolled are impostors. A probe is identified as its most similar centroid.

    Args:
        embeddings: ``(N, d)`` unit vectors.
        identities: ``(N,)`` identity of each row.
        enrolled: ``(N,)`` bool, whether the row's identity is enrolled.
        gallery_images: Gallery rows per enrolled identity.
        far: False-accept rate the threshold is chosen for on the impostors.

    Returns:
        ``rank1`` (closed set: best centroid is the probe's own), ``tar`` (genuine probes
        identified correctly with similarity >= the threshold), ``far`` (impostors accepted at
        it), ``threshold``, ``identities`` (enrolled), ``probes`` and ``impostors``; rates are
        ``nan`` without probes or impostors.
    """
    e = np.asarray(embeddings, np.float64)
    ids = np.asarray(identities)
    enrolled = np.asarray(enrolled, bool)
    gallery = np.zeros(len(ids), bool)
    for ident in np.unique(ids[enrolled]):
        rows = np.flatnonzero(enrolled & (ids == ident))
        gallery[rows[:gallery_images]] = True
    names = np.unique(ids[gallery])
    out = {"rank1": float("nan"), "tar": float("nan"), "far": float("nan"), "threshold": float("nan"),
           "identities": float(len(names)), "probes": 0.0, "impostors": float((~enrolled).sum())}  # fmt: skip
    if not len(names):
        return out
    centroids = np.stack([e[gallery & (ids == n)].mean(axis=0) for n in names])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    probes = enrolled & ~gallery
    out["probes"] = float(probes.sum())
    sims = e @ centroids.T
    best, best_sim = names[sims.argmax(axis=1)], sims.max(axis=1)
    correct = best[probes] == ids[probes]
    if probes.any():
        out["rank1"] = float(correct.mean())
    if (~enrolled).any():
        threshold, achieved = threshold_at_far(best_sim[~enrolled], far)
        out.update(threshold=threshold, far=achieved)
        if probes.any():
            out["tar"] = float(np.mean(correct & (best_sim[probes] >= threshold)))
    return out


def alternate_identities(identities: np.ndarray) -> np.ndarray:
    """``enrolled`` mask for ``open_set_identification`` within one set: every other identity
    (in sorted order) enrolled, the rest impostors."""
    ids = np.asarray(identities)
    order = {v: i for i, v in enumerate(np.unique(ids))}
    return np.array([order[v] % 2 == 0 for v in ids], bool)
