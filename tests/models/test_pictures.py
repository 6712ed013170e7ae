"""Picture helpers draw where they are told and write real PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparkvision import pictures


def test_draw_boxes_outlines_the_normalised_box() -> None:
    img = np.zeros((20, 20, 3), np.float32)
    out = pictures.draw_boxes(img, [(np.array([0.25, 0.5, 0.75, 1.0]), (255, 0, 0))])
    red = np.argwhere(out[..., 0] == 255)
    assert (red[:, 0].min(), red[:, 0].max(), red[:, 1].min(), red[:, 1].max()) == (10, 19, 5, 14)
    assert out[15, 10, 0] == 0  # inside stays untouched
    assert pictures.draw_boxes(img, [(np.zeros(4), (255, 0, 0))]).max() == 0  # empty box: nothing drawn


def test_overlay_is_hotter_where_the_heat_is() -> None:
    heat = np.zeros((8, 8))
    heat[2, 3] = 1.0
    out = pictures.overlay(np.zeros((8, 8, 3)), heat)
    assert out.dtype == np.uint8 and out[2, 3].sum() > out[0, 0].sum()


@pytest.mark.parametrize("kind", ["grid", "confusion", "roc"])
def test_figures_are_written_as_png(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "grid":
        path = pictures.save_grid([[rng.random((8, 8, 3))] * 3, [rng.random((8, 8))]], tmp_path / "g.png",
                                  row_titles=["a", "b"], captions=[["x", "y", "z"], ["w"]])  # fmt: skip
    elif kind == "confusion":
        path = pictures.save_confusion_matrices([np.eye(2, dtype=int)] * 3, ["a", "b", "c"], [["no", "yes"]] * 3,
                                                tmp_path / "c.png")  # fmt: skip
    else:
        curve = (np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0]))
        path = pictures.save_roc_grid([curve] * 2, ["a", "b"], [0.9, 0.8], tmp_path / "r.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 2000
    with pytest.raises(ValueError, match="at least one image"):
        pictures.save_grid([], tmp_path / "empty.png")


@pytest.mark.parametrize("box", [[0.49, 0.49, 0.495, 0.5], [0.5, 0.5, 0.5001, 0.52]], ids=["sub-pixel", "hair-thin"])
def test_draw_boxes_handles_boxes_thinner_than_a_pixel(box: list[float]) -> None:
    drawn = pictures.draw_boxes(np.zeros((32, 32, 3), np.float32), [(np.array(box), (255, 0, 0))])
    assert drawn[..., 0].max() == 255
