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
