"""Whole-image fabric inspection with real registered fabric_ae versions (``fabric_models``):
an MVTec category's test images (with a broken file, one smaller than a tile and a hidden one)
and new unlabelled images of another size, through ``sparkvision inspect``."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sparkvision.cli import main
from sparkvision.data import publish, tiling

MIN_PEAK_IN_MASK = 0.8
"""Share of defective test images whose heatmap peaks inside the (2 px dilated) defect mask: a
check of where the stitched map lands. Measured 18 of 21 for the trained model and for the untrained
one too (any reconstruction errs most on holes and stains), so it does not judge the model:"""
MIN_PIXEL_AUROC = 0.86
"""Pixel AUROC over the whole images: trained 0.90, untrained 0.81 (AUPRO 0.85 and 0.74)."""


@pytest.fixture(scope="module")
def category(fabric_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the category's test/ and ground_truth/ with three odd files added to test/good/."""
    from PIL import Image

    root = tmp_path_factory.mktemp("inspect-category")
    for part in ("test", "ground_truth"):
        shutil.copytree(fabric_models["raw"] / part, root / part)
    good = (root / "test" / "good" / "000.png").read_bytes()
    (root / "test" / "good" / "broken.png").write_bytes(good[: len(good) // 3])
    Image.new("RGB", (20, 20), (90, 90, 90)).save(root / "test" / "good" / "tiny.png")
    (root / "test" / "good" / ".hidden.png").write_bytes(good)
    return root


def _inspect(capsys: pytest.CaptureFixture[str], uri: str, input: Path, output: Path) -> str:
    code = main(["inspect", "--model-uri", uri, "--input", str(input), "--output", str(output), "--env", "test"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _rows(output: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(publish.current(output).location.path).to_pylist()


def _peak_in_mask(row: dict, ground_truth: Path) -> bool:
    from PIL import Image
    from scipy import ndimage

    kind, file = row["id"].split("/")
    mask = np.asarray(Image.open(ground_truth / kind / file.replace(".png", "_mask.png"))) > 0
    mask = ndimage.binary_dilation(mask, iterations=2)
    h, w = mask.shape
    return bool(mask[min(h - 1, int(row["peak_y"] * h)), min(w - 1, int(row["peak_x"] * w))])


@pytest.mark.parametrize(("which", "localises"), [("trained", True), ("untrained", False)])
def test_an_mvtec_test_folder_is_inspected_and_evaluated(
    fabric_models: dict, category: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str,
    localises: bool,
) -> None:  # fmt: skip
    from PIL import Image

    model = fabric_models[which]
    uri = f"models:/{fabric_models['name']}/{model['version']}"
    out = _inspect(capsys, uri, category, tmp_path / "inspections")
    rows = {r["id"]: r for r in _rows(tmp_path / "inspections")}
    images = {p.relative_to(category / "test").as_posix() for p in (category / "test").rglob("*.png")}
    assert set(rows) == images  # one row per file, the hidden one too; train/ and ground_truth/ not read
    assert rows["good/broken.png"]["error_code"] in ("truncated", "unreadable")
    assert rows["good/tiny.png"]["error_code"] == "unexpected_size" and "32" in rows["good/tiny.png"]["error_message"]
    assert rows["good/.hidden.png"]["error_code"] == "hidden_file"
    ok = [r for r in rows.values() if r["error_code"] is None]
    assert len(ok) == len(images) - 3
    for r in ok:
        assert (r["width"], r["height"], r["tiles"]) == (128, 128, 16)
        assert r["model_version"] == model["version"] and r["model_run_id"] == model["run_id"]
        assert r["is_defect"] == (r["anomaly_score"] > r["threshold"])
        assert r["threshold"] == pytest.approx(model["meta"]["threshold"])
        assert bool(r["defect_boxes"]) == r["is_defect"]
        png = Image.open(io.BytesIO(Path(r["heatmap_path"].removeprefix("file://")).read_bytes()))
        assert png.format == "PNG" and png.size == (128, 128)
    defective = [r for r in ok if not r["id"].startswith("good/")]
    share = np.mean([_peak_in_mask(r, category / "ground_truth") for r in defective])
    ev = json.loads((Path(publish.current(tmp_path / "inspections").location.path)
                                   / "_evaluation.json").read_text())["by_defect_type"]  # fmt: skip
    assert share >= MIN_PEAK_IN_MASK, share
    assert (ev["all"]["pixel_auroc"] >= MIN_PIXEL_AUROC) == localises, ev["all"]
    assert set(ev) == {"all", *{r["id"].split("/")[0] for r in defective}}
    assert ev["all"]["images"] == len(ok) and set(ev["all"]) == {"images", "image_auroc", "pixel_auroc", "aupro"}
    assert "pixel_auroc" in out and out.startswith(f"inspected {len(images)} image(s) with {uri}")


def test_new_images_of_another_size_are_tiled_as_in_training(
    fabric_models: dict, tracking, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparkvision.data.generators.fabric import generate_new_fabric
    from sparkvision.reporting import write_report

    model = fabric_models["trained"]
    paths = generate_new_fabric(tmp_path / "camera", seed=1, count=4, width=200, height=136, image_size=128)
    out = _inspect(capsys, f"models:/{fabric_models['name']}/{model['version']}", tmp_path / "camera",
                   tmp_path / "today")  # fmt: skip
    rows = _rows(tmp_path / "today")
    assert sorted(r["id"] for r in rows) == [p.name for p in paths] and "evaluation" not in out
    assert all(r["error_code"] is None and r["tiles"] == len(tiling.tile_grid(200, 136, 32, 32)) for r in rows)
    assert all((r["width"], r["height"]) == (200, 136) for r in rows)
    # Logged to the model's run: the summary and the top overlays, which its report shows.
    files = tracking.list_artifacts(model["run_id"], "inspection/today")
    assert "inspection/today/_summary.json" in files and sum(f.endswith(".png") for f in files) == 4, files
    page = write_report(tracking, model["run_id"], tmp_path / "report.html", log_to_run=False).read_text()
    assert "<h2 id='inspection'>Inspection</h2>" in page and page.count("data:image/png") >= 4
