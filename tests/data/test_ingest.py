"""The ingest Spark job end to end on generated data in the public layouts."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sparkvision.config import Config, IngestConfig, config_digest
from sparkvision.data import images, publish, readers, tiling
from sparkvision.data import ingest as ingest_mod
from sparkvision.data.ingest import files_per_split, ingest
from sparkvision.data.schema import AITEX_DEFECT_CODES, CELEBA, SPLITS, describe

WORKERS = 2


def _current(out: Path) -> Path:
    """The folder of the version ``out``'s pointer names now."""
    return Path(publish.current(out).location.path)


def _rows(out: Path, subdir: str = "data") -> list[dict[str, Any]]:
    table = pads.dataset(
        str(_current(out) / subdir), format="parquet", partitioning="hive" if subdir == "data" else None
    ).to_table()
    return table.to_pylist()


def _files(out: Path, split: str) -> list[Path]:
    return sorted((_current(out) / "data" / f"split={split}").glob("*.parquet"))


def _pixels(png: bytes) -> np.ndarray:
    return images.decode_array(png)


def _without_run(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in ("run", "output")}


def _check_invariant(m: dict[str, Any]) -> None:
    assert m["input_files"] == m["source_images"] + m["quarantined"]
    assert m["quarantined"] == sum(m["quarantine_by_reason"].values())
    assert m["output_rows"] == sum(m["splits"].values())


@pytest.mark.parametrize(
    ("rows", "min_row_groups", "per_file", "expected"),
    [(0, 8, 512, 0), (3, 8, 512, 3), (8, 8, 512, 8), (100, 8, 512, 8), (5000, 8, 512, 10), (9, 2, 4, 3)],
)
def test_files_per_split(rows: int, min_row_groups: int, per_file: int, expected: int) -> None:
    cfg = IngestConfig(min_row_groups=min_row_groups, rows_per_row_group=per_file)
    assert files_per_split(rows, cfg, workers=WORKERS) == expected


def test_task_bins_deal_every_group_once_into_balanced_repeatable_tasks() -> None:
    # 5,000 CelebA images: 8 train files of 501 rows, 16 val/test files of 62.
    groups = [{"file": f, "records": [None] * n} for f, n in enumerate([501] * 8 + [62] * 16)]
    bins = ingest_mod._task_bins(groups, parallelism=2)
    assert len(bins) == 4
    dealt = [i for b in bins for i, _ in b]
    assert sorted(dealt) == list(range(24))
    assert all([i for i, _ in b] == sorted(i for i, _ in b) for b in bins)  # plan order inside a task
    loads = [sum(len(g["records"]) for _, g in b) for b in bins]
    assert max(loads) - min(loads) <= 62, loads
    assert bins == ingest_mod._task_bins(groups, parallelism=2)
    # As many cores as files: every group stays its own task.
    assert [len(b) for b in ingest_mod._task_bins(groups, parallelism=12)] == [1] * 24
    assert ingest_mod._task_bins([], parallelism=2) == []
    # A big input on few registered cores still gets one task per TASK_ROWS rows (40,080 rows: 5),
    # in whole rounds of the cores (2 cores: 6).
    big = [{"file": f, "records": [None] * 501} for f in range(80)]
    assert len(ingest_mod._task_bins(big, parallelism=1)) == 5
    assert len(ingest_mod._task_bins(big, parallelism=2)) == 6


# --------------------------------------------------------------------------- CelebA


@pytest.fixture(scope="module")
def celeba_out(spark, cfg: Config, celeba_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("ingest_celeba") / "out"
    return ingest(spark, "celeba", str(celeba_dir), str(out), cfg.ingest, workers=WORKERS), out


def test_celeba_counts_labels_boxes_and_splits(celeba_out: tuple[dict, Path], celeba_dir: Path, cfg: Config) -> None:
    manifest, out = celeba_out
    catalog = readers.list_celeba(celeba_dir)
    n = len(catalog.entries)
    assert (manifest["input_files"], manifest["output_rows"], manifest["quarantined"]) == (n, n, 0)
    _check_invariant(manifest)
    rows = {r["id"]: r for r in _rows(out)}
    assert len(rows) == n
    size = cfg.ingest.image_size
    for entry in catalog.entries.values():
        row = rows[entry.id]
        assert row["split"] == entry.split
        assert row["attributes"] == entry.values["attributes"]
        assert row["identity"] == entry.values["identity"]
        with Image.open(celeba_dir / entry.key) as src:
            crop = images.crop_box(src.width, src.height, "center_square")
        x, y, w, h = entry.values["bbox_raw"]
        assert row["bbox"] == pytest.approx(images.project_box(images.Box(x, y, x + w, y + h), crop), abs=1e-6)
        points = np.asarray(entry.values["landmarks_raw"], dtype=float).reshape(5, 2)
        assert row["landmarks"] == pytest.approx(images.project_points(points, crop).reshape(-1), abs=1e-6)
        assert _pixels(row["image"]).shape == (size, size, 3) == (row["height"], row["width"], row["channels"])
        assert row["source_path"] == str(celeba_dir / entry.key)
    assert manifest["splits"] == {s: sum(e.split == s for e in catalog.entries.values()) for s in SPLITS}


def test_celeba_manifest_and_files(celeba_out: tuple[dict, Path], cfg: Config) -> None:
    manifest, out = celeba_out
    assert json.loads((_current(out) / "manifest.json").read_text()) == manifest
    assert manifest["schema"] == describe(CELEBA)
    assert (manifest["table"], manifest["format"], manifest["image_size"]) == (
        "celeba",
        "celeba",
        cfg.ingest.image_size,
    )
    assert (
        manifest["config_hash"] == config_digest(cfg.ingest, exclude=ingest_mod.RETENTION_KEYS)
        and len(manifest["checksum"]) == 64
    )
    assert _rows(out, "quarantine") == []


@pytest.fixture(scope="module")
def folder_out(folder_parquet: Path) -> tuple[dict, Path]:
    """The shared class-sorted folder data set (conftest ``folder_parquet``) and its manifest."""
    return json.loads((_current(folder_parquet) / "manifest.json").read_text()), folder_parquet


@pytest.mark.parametrize(("out_fixture", "label"), [("celeba_out", None), ("folder_out", "label"),
                                                     ("mvtec_out", "label")], ids=["celeba", "folder", "mvtec"])  # fmt: skip
def test_files_hold_every_class_in_proportion_in_hash_order(
    request: pytest.FixtureRequest, cfg: Config, out_fixture: str, label: str | None
) -> None:
    """Each split has exactly ``files_per_split`` files of balanced size; each file holds the floor
    or ceiling of every class's share and is ordered by the salted hash of the id, not by path."""
    manifest, out = request.getfixturevalue(out_fixture)
    path_ordered = []
    for split in SPLITS:
        files = _files(out, split)
        assert (
            len(files)
            == files_per_split(manifest["splits"][split], cfg.ingest, WORKERS)
            == manifest["files_per_split"][split]
        )
        tables = [pq.read_table(p, columns=["id", *([label] if label else [])]).to_pylist() for p in files]
        sizes = [len(t) for t in tables]
        assert sum(sizes) == manifest["splits"][split]
        assert all(0 < n <= cfg.ingest.rows_per_row_group for n in sizes) and max(sizes) - min(sizes) <= 1
        for table in tables:
            ids = [r["id"] for r in table]
            assert ids == sorted(ids, key=lambda i: readers.order_key(i, cfg.ingest.split_seed))
            path_ordered.append(ids == sorted(ids))
        if label:
            totals = Counter(r[label] for t in tables for r in t)
            for table in tables:
                counts = Counter(r[label] for r in table)
                assert all(abs(counts[c] - n / len(tables)) < 1 for c, n in totals.items()), (split, counts, totals)
    assert not all(path_ordered)


@pytest.mark.parametrize("shards", [1, 2])
def test_petastorm_reads_every_train_row(celeba_out: tuple[dict, Path], cfg: Config, shards: int) -> None:
    from petastorm import make_batch_reader

    manifest, out = celeba_out
    seen: list[list[str]] = []
    for shard in range(shards):
        ids: list[str] = []
        kwargs = {"cur_shard": shard, "shard_count": shards} if shards > 1 else {}
        url = f"file://{_current(out) / 'data' / 'split=train'}"
        with make_batch_reader(
            url, num_epochs=1, reader_pool_type="dummy", shuffle_row_groups=False, **kwargs
        ) as reader:
            for batch in reader:
                ids.extend(str(i) for i in batch.id)
                for png in batch.image[:2]:
                    assert _pixels(bytes(png)).shape == (cfg.ingest.image_size, cfg.ingest.image_size, 3)
        assert ids, f"shard {shard} of {shards} read no rows"
        seen.append(ids)
    everything = [i for ids in seen for i in ids]
    assert len(everything) == len(set(everything)) == manifest["splits"]["train"]


@pytest.mark.parametrize(("fmt", "source_fixture", "out_fixture"),
                         [("celeba", "celeba_dir", "celeba_out"), ("folder", "folder_dir", "folder_out")])  # fmt: skip
def test_rerun_gives_identical_rows_and_checksum(
    request: pytest.FixtureRequest, spark, cfg: Config, tmp_path: Path, fmt: str, source_fixture: str,
    out_fixture: str,
) -> None:  # fmt: skip
    manifest, out = request.getfixturevalue(out_fixture)
    source = request.getfixturevalue(source_fixture)
    again = ingest(spark, fmt, str(source), str(tmp_path / "again"), cfg.ingest, workers=WORKERS)
    assert again["checksum"] == manifest["checksum"]
    assert _without_run(again) == _without_run(manifest)
    for split in SPLITS:
        first = [pq.read_table(p).drop(["source_path"]).to_pylist() for p in _files(out, split)]
        second = [pq.read_table(p).drop(["source_path"]).to_pylist() for p in _files(tmp_path / "again", split)]
        assert first == second


# --------------------------------------------------------------------------- bad inputs


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _corrupt(root: Path) -> None:
    d = root / "img_align_celeba"
    (d / "000002.jpg").write_bytes(b"")
    data = (d / "000003.jpg").read_bytes()
    (d / "000003.jpg").write_bytes(data[: len(data) // 2])
    (d / "000004.jpg").write_text("image_id,attribute\n000004.jpg,1\n")
    with Image.open(d / "000005.jpg") as img:
        (d / "000005.jpg").write_bytes(_jpeg(img.convert("CMYK")))
    with Image.open(d / "000006.jpg") as img:
        (d / "000006.jpg").write_bytes(_jpeg(img.resize((100, 100))))
    with Image.open(d / "000011.jpg") as img:
        (d / "900000.jpg").write_bytes(_jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    (d / "000007.jpg").unlink()
    shutil.copyfile(d / "000008.jpg", d / "000009.jpg")
    attr = root / readers.CELEBA_ATTR_FILE
    lines = attr.read_text().splitlines()
    tokens = lines[11].split()
    assert tokens[0] == "000010.jpg"
    lines[11] = " ".join([tokens[0], "3", *tokens[2:]])
    attr.write_text("\n".join(lines) + "\n")


BAD = [
    ("zero-byte", "img_align_celeba/000002.jpg", images.ZERO_BYTES),
    ("truncated-jpeg", "img_align_celeba/000003.jpg", images.TRUNCATED),
    ("text-as-jpg", "img_align_celeba/000004.jpg", images.NOT_AN_IMAGE),
    ("cmyk-jpeg", "img_align_celeba/000005.jpg", images.UNEXPECTED_MODE),
    ("wrong-size", "img_align_celeba/000006.jpg", images.UNEXPECTED_SIZE),
    ("no-annotation-row", "img_align_celeba/900000.jpg", images.MISSING_ANNOTATION),
    ("row-without-image", f"{readers.CELEBA_ATTR_FILE}:9", images.MISSING_IMAGE),
    ("duplicate", "img_align_celeba/000009.jpg", images.DUPLICATE_CONTENT),
    ("attribute-3", "img_align_celeba/000010.jpg", images.MALFORMED_ANNOTATION),
]


@pytest.fixture(scope="module")
def broken_out(
    spark, cfg: Config, celeba_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path, Path]:
    root = Path(shutil.copytree(celeba_dir, tmp_path_factory.mktemp("broken") / "celeba"))
    _corrupt(root)
    with Image.open(root / "img_align_celeba" / "000001.jpg") as img:
        size = img.size
    icfg = dataclasses.replace(cfg.ingest, expected_size=size)
    out = root.parent / "out"
    return ingest(spark, "celeba", str(root), str(out), icfg, workers=WORKERS), out, root


@pytest.mark.parametrize(("source", "reason"), [(s, r) for _, s, r in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_quarantined_with_reason(broken_out: tuple[dict, Path, Path], source: str, reason: str) -> None:
    manifest, out, root = broken_out
    quarantine = {r["source_path"]: r for r in _rows(out, "quarantine")}
    row = quarantine[str(root / source)]
    assert row["reason"] == reason
    assert row["message"] and row["stage"] in ("read", "decode", "annotate", "dedupe")
    ids = {r["id"] for r in _rows(out)}
    assert source.rsplit("/", 1)[-1] not in ids


def test_bad_inputs_nothing_lost(broken_out: tuple[dict, Path, Path]) -> None:
    manifest, out, root = broken_out
    _check_invariant(manifest)
    files = len(list((root / "img_align_celeba").glob("*.jpg")))
    assert manifest["input_files"] == files + 1  # + the annotation row whose image is gone
    assert manifest["quarantined"] == len(BAD) == len(_rows(out, "quarantine"))
    assert manifest["quarantine_by_reason"] == {r: 1 for _, _, r in sorted(BAD, key=lambda b: b[2])}
    assert manifest["output_rows"] == files - (len(BAD) - 1) == len(_rows(out))
    dup = next(r for r in _rows(out, "quarantine") if r["reason"] == images.DUPLICATE_CONTENT)
    assert dup["message"].endswith(str(root / "img_align_celeba" / "000008.jpg"))


def test_broken_annotation_file_fails_before_publishing(spark, cfg: Config, celeba_dir: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(celeba_dir, tmp_path / "celeba"))
    bbox = root / readers.CELEBA_BBOX_FILE
    lines = bbox.read_text().splitlines()
    lines[5] += " 17"
    bbox.write_text("\n".join(lines) + "\n")
    with pytest.raises(readers.AnnotationError, match=r"^list_bbox_celeba.txt:6: expected 5 fields .*found 6$"):
        ingest(spark, "celeba", str(root), str(tmp_path / "out"), cfg.ingest, workers=WORKERS)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- class-per-folder and crash safety


@pytest.fixture(scope="module")
def mixed_folder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small classes of mixed sizes and extensions, plus an image outside any class."""
    root = tmp_path_factory.mktemp("mixed-folder")
    rng = np.random.default_rng(0)
    for cls, n in (("dog", 5), ("Cat", 4), ("bird", 3)):
        (root / cls).mkdir()
        for i in range(n):
            pixels = rng.integers(0, 255, (24 + i, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.{'PNG' if i % 2 else 'jpg'}")
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(root / "loose.png")
    return root


def test_folder_labels(spark, cfg: Config, mixed_folder_dir: Path, tmp_path: Path) -> None:
    m = ingest(spark, "folder", str(mixed_folder_dir), str(tmp_path / "out"), cfg.ingest, workers=WORKERS)
    _check_invariant(m)
    assert m["classes"] == ["Cat", "bird", "dog"]
    assert (m["input_files"], m["output_rows"], m["quarantine_by_reason"]) == (13, 12, {images.MISSING_ANNOTATION: 1})
    rows = _rows(tmp_path / "out")
    assert sorted((r["id"], r["label"], r["label_name"]) for r in rows) == sorted(
        (p.relative_to(mixed_folder_dir).as_posix(), m["classes"].index(p.parent.name), p.parent.name)
        for p in mixed_folder_dir.glob("*/*")
    )
    for r in rows:
        assert _pixels(r["image"]).shape == (cfg.ingest.image_size, cfg.ingest.image_size, 3)
    # stratified 0.8/0.1/0.1 per class: even the 3-image class has a val and a test image
    per_class = {c: [sum(r["label_name"] == c and r["split"] == s for r in rows) for s in SPLITS] for c in m["classes"]}
    assert per_class == {"Cat": [2, 1, 1], "bird": [1, 1, 1], "dog": [3, 1, 1]}


def test_every_image_extension_is_ingested(spark, cfg: Config, every_format_dir: Path, tmp_path: Path) -> None:
    """TIFF too: one list of extensions for ingest and scoring, so what can be scored can be ingested."""
    m = ingest(spark, "folder", str(every_format_dir), str(tmp_path / "out"), cfg.ingest, workers=WORKERS)
    expected = sorted(p.relative_to(every_format_dir).as_posix() for p in every_format_dir.glob("*/*")
                      if p.suffix != ".txt")  # fmt: skip
    assert (m["input_files"], m["output_rows"]) == (len(expected) + 1, len(expected))
    assert m["quarantine_by_reason"] == {images.UNSUPPORTED_EXTENSION: 1}  # cat/notes.txt
    rows = {r["id"]: r for r in _rows(tmp_path / "out")}
    assert sorted(rows) == expected
    assert {"cat/05.tif", "cat/06.tiff", "dog/05.TIF"} <= rows.keys()
    assert rows["cat/05.tif"]["label_name"] == "cat"
    assert _pixels(rows["cat/05.tif"]["image"]).shape == (cfg.ingest.image_size, cfg.ingest.image_size, 3)


def test_folder_splits_are_stratified_and_every_file_holds_every_class(
    folder_out: tuple[dict, Path], folder_dir: Path, cfg: Config
) -> None:
    manifest, out = folder_out
    _check_invariant(manifest)
    rows = _rows(out)
    files_per_class = Counter(p.parent.name for p in folder_dir.glob("*/*"))
    assert len(rows) == manifest["output_rows"] == sum(files_per_class.values())
    for label, name in enumerate(manifest["classes"]):
        found = [sum(r["label"] == label and r["split"] == s for r in rows) for s in SPLITS]
        assert found == readers.split_sizes(files_per_class[name], cfg.ingest.split_fractions)
        assert all(found), f"class {name} is missing from a split: {found}"
    for split in SPLITS:
        for path in _files(out, split):
            labels = pq.read_table(path, columns=["label"]).column("label").to_pylist()
            assert set(labels) == set(range(len(manifest["classes"]))), f"{path} holds classes {sorted(set(labels))}"


def test_crash_mid_write_keeps_previous_dataset(
    spark, cfg: Config, mixed_folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    first = ingest(spark, "folder", str(mixed_folder_dir), str(out), cfg.ingest, workers=WORKERS)
    before = sorted(_rows(out), key=lambda r: r["id"])
    real_write = ingest_mod._write_quarantine

    def crash(*args: Any) -> None:
        real_write(*args)  # staging data and quarantine fully written ...
        raise OSError("disk full")  # ... then the job dies before publishing

    monkeypatch.setattr(ingest_mod, "_write_quarantine", crash)
    changed = dataclasses.replace(cfg.ingest, image_size=cfg.ingest.image_size * 2)
    with pytest.raises(OSError, match="disk full"):
        ingest(spark, "folder", str(mixed_folder_dir), str(out), changed, workers=WORKERS)
    assert sorted(_rows(out), key=lambda r: r["id"]) == before
    assert json.loads((_current(out) / "manifest.json").read_text()) == first


# --------------------------------------------------------------------------- fabric


@pytest.fixture(scope="module")
def mvtec_out(spark, cfg: Config, fabric_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("ingest_mvtec") / "out"
    return ingest(spark, "mvtec", str(fabric_dir), str(out), cfg.ingest, workers=WORKERS), out


def test_mvtec_tiles_carry_mask_labels(mvtec_out: tuple[dict, Path], fabric_dir: Path, cfg: Config) -> None:
    manifest, out = mvtec_out
    _check_invariant(manifest)
    c = cfg.ingest
    rows = _rows(out)
    sources = sorted(p for p in fabric_dir.glob("t*/*/*.png"))
    expected_tiles = 0
    for p in sources:
        with Image.open(p) as img:
            expected_tiles += len(tiling.tile_grid(img.width, img.height, c.tile_size, c.tile_stride))
    assert len(rows) == manifest["output_rows"] == expected_tiles and manifest["quarantined"] == 0
    defective_sources = set()
    for r in rows:
        role, defect, name = r["source_id"].split("/")
        gt = fabric_dir / "ground_truth" / defect / name.replace(".png", "_mask.png")
        full = np.asarray(Image.open(gt).convert("L")) > 127 if defect != "good" else None
        patch = (
            full[r["tile_y"] : r["tile_y"] + c.tile_size, r["tile_x"] : r["tile_x"] + c.tile_size]
            if full is not None
            else np.zeros((c.tile_size, c.tile_size), dtype=bool)
        )
        coverage = float(patch.mean())
        assert r["mask_coverage"] == pytest.approx(coverage, abs=1e-6)
        assert r["label"] == int(coverage > 0 and coverage >= c.min_defect_coverage)
        assert r["defect_type"] == (defect if r["label"] else "good")
        assert np.array_equal(_pixels(r["mask"])[..., 0] > 0, patch)
        assert _pixels(r["image"]).shape == (c.tile_size, c.tile_size, 3)
        if r["label"]:
            defective_sources.add(r["source_id"])
            x0, y0, x1, y1 = r["bbox"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and len(r["boxes"]) % 4 == 0 and r["boxes"]
        elif coverage == 0:
            assert r["bbox"] == [0.0, 0.0, 0.0, 0.0] and r["boxes"] == []
    defect_images = {p.relative_to(fabric_dir).as_posix() for p in sources if p.parent.name != "good"}
    assert defect_images and defective_sources == defect_images


def test_mvtec_splits_follow_official_split(mvtec_out: tuple[dict, Path]) -> None:
    _, out = mvtec_out
    split_of: dict[str, set[str]] = {}
    for r in _rows(out):
        split_of.setdefault(r["source_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    for source, splits in split_of.items():
        assert splits <= ({"train", "val"} if source.startswith("train/") else {"val", "test"})


def test_mvtec_patch_split_without_source_grouping(spark, cfg: Config, fabric_dir: Path, tmp_path: Path) -> None:
    icfg = dataclasses.replace(cfg.ingest, split_by_source_image=False, split_fractions=(0.4, 0.3, 0.3))
    m = ingest(spark, "mvtec", str(fabric_dir), str(tmp_path / "out"), icfg, workers=WORKERS)
    _check_invariant(m)
    split_of: dict[str, set[str]] = {}
    for r in _rows(tmp_path / "out"):
        shares = [0.4, 0.3, 0.0] if r["source_id"].startswith("train/") else [0.0, 0.3, 0.3]
        assert r["split"] == readers.hash_split(r["id"], shares, icfg.split_seed)
        split_of.setdefault(r["source_id"], set()).add(r["split"])
    assert any(len(s) > 1 for s in split_of.values())


def test_mvtec_defect_without_mask_is_quarantined(spark, cfg: Config, fabric_dir: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(fabric_dir, tmp_path / "fabric"))
    mask = sorted((root / "ground_truth").rglob("*_mask.png"))[0]
    mask.unlink()
    m = ingest(spark, "mvtec", str(root), str(tmp_path / "out"), cfg.ingest, workers=WORKERS)
    _check_invariant(m)
    (row,) = _rows(tmp_path / "out", "quarantine")
    image = root / "test" / mask.parent.name / mask.name.replace("_mask", "")
    assert (row["source_path"], row["reason"]) == (str(image), images.MISSING_ANNOTATION)
    assert image.name not in {
        r["source_id"].rsplit("/", 1)[-1] for r in _rows(tmp_path / "out") if mask.parent.name in r["source_id"]
    }


def test_aitex_grayscale_tiles(spark, cfg: Config, tmp_path: Path) -> None:
    from sparkvision.data.generators.fabric import generate_aitex

    root = generate_aitex(tmp_path / "aitex", seed=2, count=2, image_size=64)  # 32 x 256 grayscale strips
    icfg = dataclasses.replace(cfg.ingest, tile_size=32, tile_stride=32, tile_resize=16)
    m = ingest(spark, "aitex", str(root), str(tmp_path / "out"), icfg, workers=WORKERS)
    _check_invariant(m)
    assert (m["input_files"], m["output_rows"], m["quarantined"], m["image_size"]) == (4, 4 * 8, 0, 16)
    rows = _rows(tmp_path / "out")
    for r in rows:
        assert _pixels(r["image"]).shape == (16, 16, 3) and _pixels(r["mask"]).shape[:2] == (16, 16)
        code = int(r["source_id"].rsplit("/", 1)[-1].split("_")[1])
        assert r["defect_type"] == (AITEX_DEFECT_CODES[code] if r["label"] else "good")
    assert any(r["label"] for r in rows if r["source_id"].startswith("Defect_images/"))
    assert not any(r["label"] for r in rows if r["source_id"].startswith("NODefect_images/"))
