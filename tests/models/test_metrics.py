"""Numpy metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparkvision.models import metrics


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        # positives at 0.8 and 0.4, negatives at 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) = 3/4
        ([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2], 0.75),
        ([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2], 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.9, 0.8], 0.0),
        # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
        ([1, 1, 0, 0], [0.5, 0.9, 0.5, 0.1], 0.875),
    ],
)
def test_auroc_hand_computed(labels: list[int], scores: list[float], expected: float) -> None:
    assert metrics.auroc(np.array(labels), np.array(scores)) == pytest.approx(expected)


def test_auroc_single_class_is_nan_and_matches_roc_area() -> None:
    assert math.isnan(metrics.auroc(np.ones(3), np.arange(3.0)))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y * 0.5 + rng.random(200)
    fpr, tpr, _ = metrics.roc_curve(y, s)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.trapz(tpr, fpr) == pytest.approx(metrics.auroc(y, s))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5], 1.0),
        ([0, 0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], 0.0625 / (0.25 + 0.25 - 0.0625)),
        ([0, 0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),
    ],
)
def test_box_iou(a: list[float], b: list[float], expected: float) -> None:
    assert metrics.box_iou(np.array([a]), np.array([b]))[0] == pytest.approx(expected)


def test_confusion_matrix_counts() -> None:
    m = metrics.confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_largest_region_box() -> None:
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = True
    mask[4:7, 2:6] = True
    np.testing.assert_allclose(metrics.largest_region_box(mask), [2 / 8, 4 / 8, 6 / 8, 7 / 8])
    np.testing.assert_array_equal(metrics.largest_region_box(np.zeros((4, 4), bool)), np.zeros(4))


# A 2x4 image with two ground-truth regions, A = {(0,0), (0,1)} and B = {(1,3)} (not 8-connected
# to A), and five defect-free pixels. Scores in descending order: 0.9 (A), 0.8 (B), 0.7 (free),
# 0.5 (A), 0.4, 0.3, 0.2, 0.1 (free). The PRO curve (fpr, pro) therefore runs
# (0, 0) → (0, 0.25) → (0, 0.75) → (0.2, 0.75) → (0.2, 1) → ... → (1, 1), so the area up to
# fpr 0.3 is 0.2 * 0.75 + 0.1 * 1 = 0.25, normalised 0.25 / 0.3; up to fpr 1 it is 0.15 + 0.8.
PRO_MASK = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], bool)
PRO_MAP = np.array([[0.9, 0.5, 0.7, 0.1], [0.2, 0.3, 0.4, 0.8]])


def test_pro_curve_hand_computed() -> None:
    fpr, pro = metrics.pro_curve([PRO_MASK], [PRO_MAP])
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.2, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(pro, [0, 0.25, 0.75, 0.75, 1, 1, 1, 1, 1])


@pytest.mark.parametrize(("max_fpr", "expected"), [(0.3, 0.25 / 0.3), (1.0, 0.95), (0.1, 0.75)])
def test_aupro_hand_computed(max_fpr: float, expected: float) -> None:
    assert metrics.aupro([PRO_MASK], [PRO_MAP], max_fpr=max_fpr) == pytest.approx(expected)


def test_aupro_counts_regions_not_pixels_and_pools_images() -> None:
    # A large region found first and a one-pixel region found last (after every defect-free
    # pixel): PRO stays at 1/2 over the whole range, although 99% of defect pixels are found.
    big = np.zeros((16, 16), bool)
    big[2:12, 2:12] = True
    small = np.zeros((8, 8), bool)
    small[4, 4] = True
    maps = [np.where(big, 1.0, 0.5), np.where(small, 0.0, 0.5)]
    assert metrics.aupro([big, small], maps) == pytest.approx(0.5)
    # ... while a pixel-level AUROC calls the same maps nearly perfect.
    assert metrics.auroc(np.r_[big.ravel(), small.ravel()], np.r_[maps[0].ravel(), maps[1].ravel()]) > 0.99


def test_aupro_perfect_random_and_invalid_pixels() -> None:
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(40):
        m = np.zeros((32, 32), bool)
        y, x = rng.integers(2, 24, size=2)
        m[y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = True
        masks.append(m)
    assert metrics.aupro(masks, [m.astype(float) for m in masks]) == pytest.approx(1.0)
    random = metrics.aupro(masks, [rng.random(m.shape) for m in masks])
    assert random == pytest.approx(0.15, abs=0.05)  # max_fpr / 2 for a map that knows nothing
    # Pixels outside ``valid`` do not count: a wrong score there changes nothing.
    spoiled = [m.astype(float) for m in masks]
    spoiled[0][0, 0] = 5.0
    valid = [np.ones(m.shape, bool) for m in masks]
    valid[0][0, 0] = False
    assert metrics.aupro(masks, spoiled) < 1.0
    assert metrics.aupro(masks, spoiled, valid=valid) == pytest.approx(1.0)


def test_aupro_undefined_and_bad_input() -> None:
    empty = np.zeros((4, 4), bool)
    assert math.isnan(metrics.aupro([empty], [np.zeros((4, 4))]))
    assert math.isnan(metrics.aupro([np.ones((4, 4), bool)], [np.zeros((4, 4))]))
    with pytest.raises(ValueError, match=r"image 0: mask shape \(4, 4\) differs from map shape \(4, 5\)"):
        metrics.aupro([empty], [np.zeros((4, 5))])
    with pytest.raises(ValueError, match="max_fpr in"):
        metrics.aupro([empty], [np.zeros((4, 4))], max_fpr=0.0)


def test_open_set_identification_counts_rank1_tar_and_far() -> None:
    """Identities 0-2 enrolled (first 2 rows each as gallery), 3-4 impostors; unit vectors on axes."""
    axes = np.eye(6)
    rows = [(i, axes[i]) for i in range(3) for _ in range(4)]  # genuine: exactly on their axis
    rows[3] = (2 - 2, axes[1])  # identity 0's last probe looks like identity 1: a rank-1 miss
    rows += [(3, axes[3]), (3, axes[3]), (4, 0.8 * axes[0] + 0.6 * axes[4])]  # one impostor close to 0
    ids = np.array([i for i, _ in rows])
    emb = np.stack([v for _, v in rows])
    f = metrics.open_set_identification(emb, ids, ids < 3, gallery_images=2, far=0.34)
    assert f["identities"] == 3 and f["probes"] == 6 and f["impostors"] == 3
    assert f["rank1"] == pytest.approx(5 / 6)
    # FAR 0.34 of 3 impostors: one may be accepted (the 0.8 one), the threshold sits just above 0.0
    assert f["far"] == pytest.approx(1 / 3) and 0.0 < f["threshold"] < 0.8
    assert f["tar"] == pytest.approx(5 / 6)
    strict = metrics.open_set_identification(emb, ids, ids < 3, gallery_images=2, far=0.0)
    assert strict["far"] == 0.0 and 0.8 < strict["threshold"] <= 1.0 and strict["tar"] == pytest.approx(5 / 6)
    assert metrics.alternate_identities(np.array([7, 3, 7, 5])).tolist() == [True, True, True, False]  # 3, 7 of 3 5 7


def test_threshold_rejects_the_first_rejected_impostor_recomputed() -> None:
    """The first impostor over the allowed FAR stays rejected when its similarity is recomputed in
    another batch (a few units in float32's last place higher), not only at the value seen."""
    sims = np.array([0.9874122, 0.5, 0.3, 0.2], np.float32)
    threshold, far = metrics.threshold_at_far(sims, 0.05)
    assert far == 0.0 and threshold > float(np.float32(0.9874122) + np.float32(8 * 6e-8))
    assert threshold - 0.9874122 < 1e-4
    assert metrics.threshold_at_far(sims, 0.3) == (pytest.approx(0.5 + metrics.SIMILARITY_NOISE), 0.25)
