"""Annotation parsing and file listing of the ingested formats (driver side, no Spark)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparkvision.data import images, readers, tiling
from sparkvision.data.schema import AITEX_DEFECT_CODES


@pytest.fixture()
def celeba_copy(celeba_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the generated CelebA folder, free to corrupt."""
    return Path(shutil.copytree(celeba_dir, tmp_path / "celeba"))


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _edit_line(path: Path, number: int, edit) -> None:  # type: ignore[no-untyped-def]
    lines = _rows(path)
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("\n".join(lines) + "\n")


def test_celeba_catalog_matches_annotation_files(celeba_dir: Path) -> None:
    catalog = readers.list_celeba(celeba_dir)
    attr_lines = _rows(celeba_dir / readers.CELEBA_ATTR_FILE)
    count = int(attr_lines[0])
    assert len(catalog.entries) == count
    assert catalog.orphans == []
    partition = dict(line.split() for line in _rows(celeba_dir / readers.CELEBA_PARTITION_FILE))
    identity = dict(line.split() for line in _rows(celeba_dir / readers.CELEBA_IDENTITY_FILE))
    bbox = {
        p[0]: [int(v) for v in p[1:]]
        for p in (line.split() for line in _rows(celeba_dir / readers.CELEBA_BBOX_FILE)[2:])
    }
    for line in attr_lines[2:]:
        name, *values = line.split()
        entry = catalog.entries[f"img_align_celeba/{name}"]
        assert entry.id == name and entry.reason is None
        assert entry.values["attributes"] == [1.0 if v == "1" else 0.0 for v in values]
        assert entry.split == {"0": "train", "1": "val", "2": "test"}[partition[name]]
        assert entry.values["identity"] == int(identity[name])
        assert entry.values["bbox_raw"] == bbox[name]
        assert len(entry.values["landmarks_raw"]) == 10


def test_celeba_split_by_identity_keeps_identities_together(celeba_dir: Path) -> None:
    catalog = readers.list_celeba(celeba_dir, split_by_identity=True, split_fractions=(0.5, 0.25, 0.25))
    split_of: dict[int, set[str]] = {}
    for e in catalog.entries.values():
        split_of.setdefault(e.values["identity"], set()).add(e.split)
    assert all(len(s) == 1 for s in split_of.values())
    assert len({s for v in split_of.values() for s in v}) >= 2


@pytest.mark.parametrize(
    ("file", "line", "edit", "expected"),
    [
        (readers.CELEBA_ATTR_FILE, 7, lambda s: " ".join(s.split()[:-2]),
         "list_attr_celeba.txt:7: expected 41 fields (file name + 40 attributes of -1/1), found 39"),
        (readers.CELEBA_ATTR_FILE, 1, lambda s: str(int(s) + 1), "list_attr_celeba.txt:1: count line says 49 images, found 48 rows"),
        (readers.CELEBA_BBOX_FILE, 5, lambda s: s.replace(s.split()[2], "1O", 1),
         "list_bbox_celeba.txt:5: expected integers (x_1 y_1 width height), found '1O'"),
        (readers.CELEBA_BBOX_FILE, 2, lambda s: "image_id x y w h", "list_bbox_celeba.txt:2: expected a header of 5 names (image_id x_1 y_1 ...), found 5 names; first difference at column 2: expected 'x_1', found 'x'"),
        ("list_landmarks_align_celeba.txt", 2, lambda s: " ".join(s.split()[:-1]),
         "list_landmarks_align_celeba.txt:2: expected a header of 10 names"),
        (readers.CELEBA_PARTITION_FILE, 4, lambda s: s + " 7", "list_eval_partition.txt:4: expected 2 fields (file name + partition 0/1/2), found 3"),
        (readers.CELEBA_IDENTITY_FILE, 3, lambda s: "000001.jpg " + s.split()[1],
         "identity_CelebA.txt:3: expected each image once, found 000001.jpg again (first on line 1)"),
    ],
    ids=["attr-fields", "attr-count", "bbox-token", "bbox-header", "landmarks-header", "partition-fields", "identity-dup"],
)  # fmt: skip
def test_structurally_broken_file_names_file_line_expected_found(
    celeba_copy: Path, file: str, line: int, edit, expected: str
) -> None:  # type: ignore[no-untyped-def]
    _edit_line(celeba_copy / file, line, edit)
    with pytest.raises(readers.AnnotationError) as info:
        readers.list_celeba(celeba_copy)
    assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.parametrize(
    ("file", "line", "column", "value", "found"),
    [
        (readers.CELEBA_ATTR_FILE, 9, 3, "3", "attribute Attractive expected -1 or 1, found 3"),
        (readers.CELEBA_BBOX_FILE, 9, 3, "0", "width, height > 0, found"),
        (readers.CELEBA_PARTITION_FILE, 7, 1, "5", "expected partition 0, 1 or 2, found 5"),
    ],
    ids=["attribute-3", "bbox-zero-width", "partition-5"],
)
def test_out_of_domain_value_marks_only_that_image(
    celeba_copy: Path, file: str, line: int, column: int, value: str, found: str
) -> None:
    path = celeba_copy / file
    name = _rows(path)[line - 1].split()[0]
    _edit_line(path, line, lambda s: " ".join(v if i != column else value for i, v in enumerate(s.split())))
    catalog = readers.list_celeba(celeba_copy)
    bad = [e for e in catalog.entries.values() if e.reason is not None]
    assert [e.id for e in bad] == [name]
    assert bad[0].reason == images.MALFORMED_ANNOTATION
    assert f"{file}:{line}: " in bad[0].message and found in bad[0].message


def test_missing_annotation_file_fails_clearly(celeba_copy: Path) -> None:
    (celeba_copy / readers.CELEBA_IDENTITY_FILE).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"identity_CelebA.txt: missing CelebA annotation file \(needed for column identity\)"
    ):
        readers.list_celeba(celeba_copy)


def test_unannotated_image_and_imageless_row(celeba_copy: Path) -> None:
    img_dir = celeba_copy / "img_align_celeba"
    (img_dir / "000003.jpg").unlink()
    Image.new("RGB", (40, 40), (9, 9, 9)).save(img_dir / "extra.jpg")
    lines = _rows(celeba_copy / readers.CELEBA_IDENTITY_FILE)
    (celeba_copy / readers.CELEBA_IDENTITY_FILE).write_text("\n".join(lines[1:]) + "\n")  # 000001 loses its identity
    catalog = readers.list_celeba(celeba_copy)
    assert [o.source for o in catalog.orphans] == [f"{celeba_copy}/{readers.CELEBA_ATTR_FILE}:5"]
    extra = catalog.entries["img_align_celeba/extra.jpg"]
    assert extra.reason == images.MISSING_ANNOTATION and readers.CELEBA_ATTR_FILE in extra.message
    first = catalog.entries["img_align_celeba/000001.jpg"]
    assert first.reason == images.MISSING_ANNOTATION
    assert first.message == "no row for 000001.jpg in identity_CelebA.txt"


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.5, 0.5, 0.0), (1.0, 0.0, 0.0)])
def test_hash_split_is_deterministic_and_proportional(fractions: tuple[float, float, float]) -> None:
    keys = [f"img{i:05d}.png" for i in range(4000)]
    first = [readers.hash_split(k, fractions, seed=3) for k in keys]
    assert first == [readers.hash_split(k, fractions, seed=3) for k in keys]
    assert first != [readers.hash_split(k, fractions, seed=4) for k in keys] or max(fractions) == 1.0
    for name, share in zip(("train", "val", "test"), fractions, strict=True):
        assert abs(first.count(name) / len(keys) - share) < 0.03


@pytest.mark.parametrize(
    ("length", "tile", "stride", "expected"),
    [(256, 64, 64, [0, 64, 128, 192]), (250, 64, 64, [0, 64, 128, 186]), (128, 64, 32, [0, 32, 64]), (60, 64, 64, [])],
)
def test_tile_starts_cover_the_axis(length: int, tile: int, stride: int, expected: list[int]) -> None:
    assert tiling.tile_starts(length, tile, stride) == expected


def test_mask_regions_boxes_and_largest() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[1:3, 2:4] = True  # 4 px
    mask[5:9, 10:16] = True  # 24 px
    regions = tiling.mask_regions(mask)
    assert regions.coverage == pytest.approx(28 / 200)
    assert regions.largest == pytest.approx([10 / 20, 5 / 10, 16 / 20, 9 / 10])
    assert regions.boxes == pytest.approx([2 / 20, 1 / 10, 4 / 20, 3 / 10, 10 / 20, 5 / 10, 16 / 20, 9 / 10])
    empty = tiling.mask_regions(np.zeros((4, 4), dtype=bool))
    assert (empty.coverage, empty.largest, empty.boxes) == (0.0, [0.0] * 4, [])


def test_mvtec_listing_respects_official_split(fabric_dir: Path) -> None:
    catalog = readers.list_mvtec(fabric_dir)
    assert catalog.orphans == []
    train_files = list((fabric_dir / "train").rglob("*.png"))
    test_files = list((fabric_dir / "test").rglob("*.png"))
    assert len(catalog.entries) == len(train_files) + len(test_files)
    for e in catalog.entries.values():
        role, defect = e.key.split("/")[:2]
        assert e.values["defect_type"] == defect
        assert e.split in (("train", "val") if role == "train" else ("val", "test"))
        if defect == "good":
            assert e.masks == ()
        else:
            assert len(e.masks) == 1 and (fabric_dir / e.masks[0]).is_file()


def test_mvtec_root_of_categories_prefixes_ids_and_finds_orphan_masks(fabric_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(fabric_dir, tmp_path / "carpet")
    defect_image = next(p for p in sorted((tmp_path / "carpet" / "test").rglob("*.png")) if p.parent.name != "good")
    defect_image.unlink()
    catalog = readers.list_mvtec(tmp_path)
    assert catalog.info["categories"] == ["carpet"]
    assert all(k.startswith("carpet/") and e.id == k for k, e in catalog.entries.items())
    assert [o.source for o in catalog.orphans] == [
        str(tmp_path / "carpet" / "ground_truth" / defect_image.parent.name / f"{defect_image.stem}_mask.png")
    ]


def test_aitex_listing_maps_codes_and_masks(tmp_path: Path) -> None:
    from sparkvision.data.generators.fabric import generate_aitex

    root = generate_aitex(tmp_path / "aitex", seed=1, count=3, image_size=64)
    Image.new("L", (8, 8)).save(root / "Defect_images" / "0099_005_00.png")  # code 5 does not exist
    catalog = readers.list_aitex(root)
    defects = {k: e for k, e in catalog.entries.items() if k.startswith("Defect_images/")}
    assert len(defects) == 4
    bad = defects.pop("Defect_images/0099_005_00.png")
    assert bad.reason == images.MALFORMED_ANNOTATION and "found defect code 5" in bad.message
    for key, e in defects.items():
        code = int(key.rsplit("/", 1)[1].split("_")[1])
        assert e.values["defect_type"] == AITEX_DEFECT_CODES[code]
        assert e.masks == (f"Mask_images/{key.rsplit('/', 1)[1][:-4]}_mask.png",)
    good = [e for k, e in catalog.entries.items() if k.startswith("NODefect_images/")]
    assert len(good) == 3 and all(e.values["defect_type"] == "good" and e.masks == () for e in good)


def test_folder_labels_are_sorted_class_indexes(tmp_path: Path) -> None:
    for cls, n in (("zebra", 2), ("Ant", 1), ("cat", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (20, 20)).save(tmp_path / cls / f"{i}.JPG")
    (tmp_path / "cat" / "notes.txt").write_text("not an image extension")
    Image.new("RGB", (20, 20)).save(tmp_path / "loose.png")
    catalog = readers.list_folder(tmp_path)
    assert catalog.info["classes"] == ["Ant", "cat", "zebra"]
    labels = {k: (e.values.get("label"), e.values.get("label_name")) for k, e in catalog.entries.items()}
    assert labels == {
        "Ant/0.JPG": (0, "Ant"), "cat/0.JPG": (1, "cat"), "cat/1.JPG": (1, "cat"), "cat/2.JPG": (1, "cat"),
        "zebra/0.JPG": (2, "zebra"), "zebra/1.JPG": (2, "zebra"), "loose.png": (None, None),
    }  # fmt: skip
    assert catalog.entries["loose.png"].reason == images.MISSING_ANNOTATION


@pytest.mark.parametrize(
    ("count", "fractions", "expected"),
    [(40, (0.8, 0.1, 0.1), [32, 4, 4]), (5, (0.8, 0.1, 0.1), [3, 1, 1]), (3, (0.8, 0.1, 0.1), [1, 1, 1]),
     (2, (0.8, 0.1, 0.1), [2, 0, 0]), (7, (1, 1, 1), [3, 2, 2]), (10, (0.5, 0.5, 0.0), [5, 5, 0]),
     (1, (0.0, 1.0, 0.0), [0, 1, 0]), (0, (0.8, 0.1, 0.1), [0, 0, 0])],
)  # fmt: skip
def test_split_sizes_round_and_give_each_positive_share_a_file(
    count: int, fractions: tuple[float, float, float], expected: list[int]
) -> None:
    assert readers.split_sizes(count, fractions) == expected


def test_folder_split_is_stratified_per_class_and_independent_of_listing_order(tmp_path: Path) -> None:
    sizes = {"big": 50, "mid": 12, "tiny": 3}
    for cls, n in sizes.items():
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8)).save(tmp_path / cls / f"{i:02d}.png")
    catalog = readers.list_folder(tmp_path, split_fractions=(0.8, 0.1, 0.1), split_seed=5)
    per_class = {c: [sum(e.values["label_name"] == c and e.split == s for e in catalog.entries.values())
                     for s in ("train", "val", "test")] for c in sizes}  # fmt: skip
    assert per_class == {"big": [40, 5, 5], "mid": [10, 1, 1], "tiny": [1, 1, 1]}
    keys = [k for k in catalog.entries if k.startswith("big/")]
    assert readers.stratified_split(reversed(keys), (0.8, 0.1, 0.1), 5) == {k: catalog.entries[k].split for k in keys}
    other = readers.list_folder(tmp_path, split_fractions=(0.8, 0.1, 0.1), split_seed=6)
    assert {k: e.split for k, e in other.entries.items()} != {k: e.split for k, e in catalog.entries.items()}


@pytest.mark.parametrize(
    ("exclude", "excluded"),
    [((), []), (("*.txt",), ["c/sub/notes.txt"]), (("c/sub/*",), ["c/sub/notes.txt", "c/sub/x.png"]),
     (("_*",), ["c/_u.png"])],
    ids=["none", "by-name", "by-folder", "underscore"],
)  # fmt: skip
def test_survey_accounts_for_every_file(tmp_path: Path, exclude: tuple[str, ...], excluded: list[str]) -> None:
    from sparkvision import storage

    for rel in ("c/a.png", "c/sub/x.png", "c/sub/notes.txt", "c/.h.png", "c/_u.png", "c/.git/x.png", "c/noext"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "c" / "dead.png").symlink_to(tmp_path / "nowhere.png")
    survey = readers.Survey(exclude)
    used = survey.files(storage.location(tmp_path / "c"), "c", images.IMAGE_EXTENSIONS)
    reasons = {s.key: s.reason for s in survey.skipped}
    assert sorted(survey.excluded) == excluded
    assert len(used) + len(reasons) + len(survey.excluded) == 8  # every file and link on disk
    expected = {"c/sub/notes.txt": images.UNSUPPORTED_EXTENSION, "c/noext": images.UNSUPPORTED_EXTENSION,
                "c/.h.png": images.HIDDEN_FILE, "c/_u.png": images.HIDDEN_FILE, "c/.git/x.png": images.HIDDEN_FILE,
                "c/dead.png": images.BROKEN_LINK}  # fmt: skip
    assert reasons == {k: v for k, v in expected.items() if k not in excluded}
    assert sorted(used) == [u for u in ("a.png", "sub/x.png") if f"c/{u}" not in excluded]
