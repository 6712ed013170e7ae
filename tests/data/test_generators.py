"""The generators write the exact public layouts (parsed back here with a tiny independent
parser), deterministically, with annotations that agree with the pixels."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from sparkvision.data.generators import face_painter
from sparkvision.data.generators.celeba import generate_celeba, generate_new_images, new_image_upright
from sparkvision.data.generators.fabric import MVTEC_DEFECTS, generate_aitex, generate_mvtec, generate_new_fabric
from sparkvision.data.generators.texture_photos import DEFECTS, generate_mvtec_from_photos
from sparkvision.data.schema import AITEX_DEFECT_CODES, CELEBA_ATTRIBUTES

CELEBA_COUNT, PER_IDENTITY = 40, 4
LANDMARK_HEADER = (
    "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
)


# --------------------------------------------------------------------------- tiny parsers


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="ascii")
    assert text.endswith("\n"), f"{path.name}: expected a final newline"
    return text[:-1].split("\n")


def _table(path: Path, header: str | None, width: int) -> dict[str, list[int]]:
    """``{image: [ints]}`` of a CelebA annotation file; checks the count line and the header."""
    lines = _lines(path)
    if header is not None:
        assert int(lines[0]) == len(lines) - 2, f"{path.name}:1 count {lines[0]} vs {len(lines) - 2} rows"
        assert lines[1] == header, f"{path.name}:2 header"
        lines = lines[2:]
    rows = {}
    for n, line in enumerate(lines, 1):
        parts = line.split()
        assert len(parts) == width + 1, f"{path.name}: row {n} has {len(parts)} fields: {line!r}"
        rows[parts[0]] = [int(v) for v in parts[1:]]
    return rows


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), np.float64)


# --------------------------------------------------------------------------- CelebA


@pytest.fixture(scope="module")
def celeba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_celeba(tmp_path_factory.mktemp("celeba"), CELEBA_COUNT, seed=7, images_per_identity=PER_IDENTITY)


@pytest.fixture(scope="module")
def annotations(celeba: Path) -> dict[str, dict[str, list[int]]]:
    return {
        "attr": _table(celeba / "list_attr_celeba.txt", " ".join(CELEBA_ATTRIBUTES), 40),
        "bbox": _table(celeba / "list_bbox_celeba.txt", "image_id x_1 y_1 width height", 4),
        "landmarks": _table(celeba / "list_landmarks_align_celeba.txt", LANDMARK_HEADER, 10),
        "partition": _table(celeba / "list_eval_partition.txt", None, 1),
        "identity": _table(celeba / "identity_CelebA.txt", None, 1),
    }


def test_celeba_files_cover_every_image(celeba: Path, annotations: dict[str, dict[str, list[int]]]) -> None:
    images = sorted(p.name for p in (celeba / "img_align_celeba").iterdir())
    assert images == [f"{n:06d}.jpg" for n in range(1, CELEBA_COUNT + 1)]
    for name, table in annotations.items():
        assert list(table) == images, f"{name}: rows must list every image, in order"
    for name in images[:: CELEBA_COUNT // 8]:
        with Image.open(celeba / "img_align_celeba" / name) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (178, 218))


@pytest.mark.parametrize(
    ("file", "pattern"),
    [
        ("list_attr_celeba.txt", r"\d{6}\.jpg( -1|  1){40}"),
        ("list_bbox_celeba.txt", r"\d{6}\.jpg {1,5}\d{1,3} {1,3}\d{1,3} {1,3}\d{1,3} {1,3}\d{1,3}"),
        ("list_landmarks_align_celeba.txt", r"\d{6}\.jpg( +\d{1,3}){10}"),
        ("list_eval_partition.txt", r"\d{6}\.jpg [012]"),
        ("identity_CelebA.txt", r"\d{6}\.jpg [1-9]\d*"),
    ],
)
def test_celeba_row_formats(celeba: Path, file: str, pattern: str) -> None:
    lines = _lines(celeba / file)
    rows = lines[2:] if file.startswith(("list_attr", "list_bbox", "list_landmarks")) else lines
    bad = [(n, r) for n, r in enumerate(rows, 1) if not re.fullmatch(pattern, r)]
    assert not bad, f"{file}: rows not like the real file: {bad[:3]}"


def test_celeba_bbox_row_is_fixed_width(celeba: Path) -> None:
    row = _lines(celeba / "list_bbox_celeba.txt")[2]
    assert len(row) == 10 + 6 + 4 + 4 + 4, f"expected the real file's column widths, found {row!r}"


def test_celeba_partitions_are_identity_disjoint(annotations: dict[str, dict[str, list[int]]]) -> None:
    part_of: dict[int, set[int]] = {}
    for name, (identity,) in annotations["identity"].items():
        part_of.setdefault(identity, set()).add(annotations["partition"][name][0])
    assert all(len(parts) == 1 for parts in part_of.values()), part_of
    parts = [p for (p,) in annotations["partition"].values()]
    assert parts == sorted(parts), "partitions are contiguous in file order: train, val, test"
    ids_per_part = {p: sum(1 for s in part_of.values() if s == {p}) for p in (0, 1, 2)}
    assert ids_per_part == {0: 8, 1: 1, 2: 1}
    per_identity = np.bincount([i for (i,) in annotations["identity"].values()])
    assert sorted(per_identity[per_identity > 0]) == [PER_IDENTITY] * (CELEBA_COUNT // PER_IDENTITY)


def test_celeba_attributes_are_consistent(annotations: dict[str, dict[str, list[int]]]) -> None:
    attrs = {name: dict(zip(CELEBA_ATTRIBUTES, values, strict=True)) for name, values in annotations["attr"].items()}
    for name, a in attrs.items():
        hair = [a[h] for h in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]
        assert hair.count(1) <= 1, f"{name}: hair colours are exclusive"
        if a["Male"] == -1:
            assert (a["Mustache"], a["Goatee"], a["No_Beard"]) == (-1, -1, 1), f"{name}: facial hair only on males"
        if a["Bald"] == 1:
            assert hair.count(1) == 0 and a["Bangs"] == -1, name
    by_identity: dict[int, set[tuple[int, ...]]] = {}
    fixed = [CELEBA_ATTRIBUTES.index(n) for n in ("Male", "Pale_Skin", "Black_Hair", "Blond_Hair", "Bald", "Young")]
    for name, (identity,) in annotations["identity"].items():
        by_identity.setdefault(identity, set()).add(tuple(annotations["attr"][name][k] for k in fixed))
    assert all(len(v) == 1 for v in by_identity.values()), "identity-bound attributes must not vary"
    smiling = [a["Smiling"] for a in attrs.values()]
    assert 0 < smiling.count(1) < len(smiling), "per-image attributes vary"


def test_celeba_landmarks_agree_with_pixels(celeba: Path, annotations: dict[str, dict[str, list[int]]]) -> None:
    for name, (x, y, w, h) in annotations["bbox"].items():
        assert 0 <= x and 0 <= y and x + w <= 178 and y + h <= 218 and 50 <= w and 70 <= h, (name, x, y, w, h)
        pts = np.array(annotations["landmarks"][name]).reshape(5, 2)
        assert ((pts[:, 0] > x) & (pts[:, 0] < x + w) & (pts[:, 1] > y) & (pts[:, 1] < y + h)).all(), name
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = pts
        assert lx < nx < rx and mlx < mrx and max(ly, ry) < ny < min(mly, mry) + 3, f"{name}: face layout {pts}"
        gray = _gray(Image.open(celeba / "img_align_celeba" / name))
        for ex, ey in pts[:2]:  # the pupil is drawn at the eye landmark
            assert gray[ey - 1 : ey + 2, ex - 1 : ex + 2].min() < gray[y : y + h, x : x + w].mean() - 40, name


@pytest.mark.parametrize(("seed_a", "seed_b", "same"), [(3, 3, True), (3, 4, False)])
def test_celeba_is_deterministic(tmp_path: Path, seed_a: int, seed_b: int, same: bool) -> None:
    a = _digest(generate_celeba(tmp_path / "a", 6, seed_a, images_per_identity=2))
    b = _digest(generate_celeba(tmp_path / "b", 6, seed_b, images_per_identity=2))
    assert a.keys() == b.keys()
    if same:
        assert a == b
    else:
        assert all(a[k] != b[k] for k in a if k.endswith(".jpg"))


def test_celeba_is_the_same_drawn_in_several_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkvision.data.generators import celeba as module

    one = _digest(generate_celeba(tmp_path / "one", 12, 5, images_per_identity=3))
    monkeypatch.setattr(module, "IMAGES_PER_PROCESS", 4)
    monkeypatch.setattr(module.os, "cpu_count", lambda: 3)
    several = _digest(generate_celeba(tmp_path / "several", 12, 5, images_per_identity=3))
    assert several == one and len(one) == 12 + 5


def _find(pred, n: int) -> list[tuple[face_painter.Identity, face_painter.Look, int]]:
    """The first ``n`` (identity, look, seed) drawn by the generator's own samplers that match ``pred``."""
    found = []
    for seed in range(5000):
        rng = np.random.default_rng([99, seed])
        ident = face_painter.sample_identity(rng)
        look = face_painter.sample_look(rng, ident)
        if pred(face_painter.attributes_of(ident, look)):
            found.append((ident, look, seed))
            if len(found) == n:
                return found
    raise AssertionError("the samplers never produce this attribute combination")


def _render(ident: face_painter.Identity, look: face_painter.Look, seed: int) -> face_painter.DrawnFace:
    return face_painter.render_face(ident, look, np.random.default_rng([100, seed]))


def _clear(look: face_painter.Look, *names: str) -> face_painter.Look:
    """``look`` with ``names`` drawn at a clear strength (no borderline level), upright."""
    levels = {**dict(look.levels), **dict.fromkeys(names, 0.99)}
    return dataclasses.replace(look, angle=0.0, levels=tuple(levels.items()))


def test_hair_colour_is_visible() -> None:
    """Mean brightness of the hair at the top of the head: blond far above black."""

    def hair_level(colour: str) -> list[float]:
        picks = _find(lambda a: a[colour] and not a["Wearing_Hat"] and not a["Bald"], 5)
        levels = []
        for ident, look, seed in picks:
            face = _render(ident, look, seed)
            x, y, w, _ = face.bbox
            levels.append(_gray(face.image)[y + 3 : y + 9, x + w // 2 - 6 : x + w // 2 + 6].mean())
        return levels

    blond, black = hair_level("Blond_Hair"), hair_level("Black_Hair")
    assert min(blond) > max(black) + 60, (blond, black)


def _region(face: face_painter.DrawnFace, where: str) -> np.ndarray:
    """Boolean (218, 178) region, relative to the drawn landmarks and face box."""
    x, y, w, h = face.bbox
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    eye_y = (ly + ry) / 2
    yy, xx = np.mgrid[0:218, 0:178]
    boxes = {
        "eyes": (x - 6, eye_y - 16, x + w + 6, eye_y + 12),
        "mouth": (mlx - 8, min(mly, mry) - 8, mrx + 8, max(mly, mry) + 14),
        "smile": (x - 2, eye_y - 2, x + w + 2, max(mly, mry) + 16),  # mouth, cheeks, folds, lower lids
        "above_eyes": (x - 25, 0, x + w + 25, eye_y - 4),
        "lower_face": (x - 2, ny - 8, x + w + 2, y + h + 6),
        "nose_to_mouth": (mlx - 6, ny - 1, mrx + 6, max(mly, mry) + 3),
        "ears": (x - 10, eye_y + 5, x + w + 10, eye_y + 34),
    }
    x0, y0, x1, y1 = boxes[where]
    return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)


@pytest.mark.parametrize(
    ("attribute", "value", "where", "base"),
    [
        ("Eyeglasses", 1, "eyes", {}),
        ("Smiling", 1, "smile", {}),
        ("Mouth_Slightly_Open", 1, "mouth", {"Smiling": 0}),
        ("Wearing_Hat", 1, "above_eyes", {}),
        ("Bangs", 1, "above_eyes", {"Bald": 0, "Receding_Hairline": 0, "Wearing_Hat": 0}),
        ("No_Beard", 0, "lower_face", {"Male": 1}),
        ("Mustache", 1, "nose_to_mouth", {"Male": 1}),
        ("Wearing_Earrings", 1, "ears", {}),
        # Details a 64 px model must see: several pixels of change, not a hairline.
        ("Bushy_Eyebrows", 1, "eyes", {"Eyeglasses": 0}),
        ("Bags_Under_Eyes", 1, "eyes", {"Eyeglasses": 0}),
        ("Big_Lips", 1, "lower_face", {"Mustache": 0, "No_Beard": 1, "Wearing_Lipstick": 1}),
    ],
)
def test_attribute_is_drawn_where_expected(attribute: str, value: int, where: str, base: dict[str, int]) -> None:
    """Flipping one attribute of the same face changes pixels, and only in the expected region."""
    picks = _find(lambda a: a[attribute] != value and all(a[k] == v for k, v in base.items()), 3)
    for ident, look, seed in picks:
        look = _clear(look, attribute)
        if attribute in ident.attrs:
            flipped = (dataclasses.replace(ident, attrs={**ident.attrs, attribute: value}), look)
        else:
            flipped = (ident, dataclasses.replace(look, attrs={**look.attrs, attribute: value}))
        before, after = _render(ident, look, seed), _render(*flipped, seed)
        assert after.attributes[attribute] == value
        changed = np.abs(np.asarray(after.image, np.int16) - np.asarray(before.image, np.int16)).max(axis=2) > 40
        region = _region(before, where)
        assert changed.sum() > 15, f"{attribute}: only {changed.sum()} pixels changed"
        assert (changed & region).sum() / changed.sum() > 0.9, f"{attribute}: change outside the {where} region"


def test_smile_lifts_the_drawn_mouth_corners() -> None:
    """A smile raises both mouth corners (landmarks and the pixels there) and shows teeth."""
    for ident, look, seed in _find(lambda a: not a["Smiling"] and not a["Mouth_Slightly_Open"], 3):
        look = _clear(look, "Smiling", "Mouth_Slightly_Open")
        smile = dataclasses.replace(look, attrs={**look.attrs, "Smiling": 1, "Mouth_Slightly_Open": 1})
        flat, happy = _render(ident, look, seed), _render(ident, smile, seed)
        lift = flat.landmarks[3:, 1] - happy.landmarks[3:, 1]
        assert (lift >= 3).all(), f"mouth corners lifted by {lift}"
        diff = np.abs(_gray(happy.image) - _gray(flat.image))
        for cx, cy in np.rint(happy.landmarks[3:]).astype(int):
            assert diff[cy - 2 : cy + 3, cx - 2 : cx + 3].max() > 40, "the lifted corner is painted"
        mouth = _region(happy, "mouth")
        teeth = (np.asarray(happy.image.convert("L"))[mouth] > 200).sum()
        assert teeth > (np.asarray(flat.image.convert("L"))[mouth] > 200).sum() + 40, "a row of teeth shows"
        width = np.diff(happy.landmarks[3:, 0])[0] - np.diff(flat.landmarks[3:, 0])[0]
        assert width >= 4, f"the smile widens the mouth by {width:.1f} px"


@pytest.mark.parametrize("name", sorted(face_painter.AMBIGUOUS_SHARE))
def test_graded_attributes_are_borderline_as_often_as_their_share(name: str) -> None:
    """A borderline level draws the same face whatever the label (so it caps accuracy at about
    ``1 - share / 2``); clear levels draw an attribute that is on far stronger than one that is off."""
    share = face_painter.AMBIGUOUS_SHARE[name]
    levels = np.random.default_rng(0).random(4000)
    on = np.array([face_painter.strength(name, 1, v) for v in levels])
    off = np.array([face_painter.strength(name, 0, v) for v in levels])
    same = on == off
    assert abs(same.mean() - share) < 0.03
    assert on[~same].min() >= 0.6 > 0.55 >= on[same].max() >= off[same].min() >= 0.25 > 0.15 >= off[~same].max()


# --------------------------------------------------------------------------- new images


def test_new_images_mix_formats_and_exif(tmp_path: Path) -> None:
    paths = generate_new_images(tmp_path, 14, seed=5)
    assert [p.name for p in paths] == sorted(p.name for p in tmp_path.iterdir())
    seen = set()
    for index, path in enumerate(paths):
        with Image.open(path) as img:
            orientation = img.getexif().get(0x0112)
            seen.add((img.format, img.mode, orientation))
            upright = _gray(ImageOps.exif_transpose(img))
            assert img.size != (178, 218)
            reference = _gray(new_image_upright(5, index))
            assert upright.shape == reference.shape, path.name
            error = np.abs(upright - reference).mean()
            assert error < 6, f"{path.name}: {error:.1f} from the upright face"
            if orientation:  # a wrong transpose direction would be far off
                flipped = np.rot90(upright, 2)
                assert np.abs(flipped - reference).mean() > 3 * error + 10, path.name
    assert {("JPEG", "RGB", 6), ("JPEG", "RGB", 8), ("JPEG", "L", None), ("PNG", "L", None),
            ("PNG", "RGBA", None), ("PNG", "RGB", None), ("JPEG", "RGB", None)} <= seen  # fmt: skip


# --------------------------------------------------------------------------- MVTec AD

MVTEC_SIZE, MVTEC_TRAIN, MVTEC_TEST = 96, 2, 2


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_mvtec(tmp_path_factory.mktemp("mvtec"), seed=1, train_count=MVTEC_TRAIN,
                          test_count=MVTEC_TEST, image_size=MVTEC_SIZE)  # fmt: skip


def test_mvtec_layout(mvtec: Path) -> None:
    files = sorted(str(p.relative_to(mvtec)) for p in mvtec.rglob("*.png"))
    expected = [f"train/good/{n:03d}.png" for n in range(MVTEC_TRAIN)]
    expected += [f"test/{d}/{n:03d}.png" for d in ("good", *MVTEC_DEFECTS) for n in range(MVTEC_TEST)]
    expected += [f"ground_truth/{d}/{n:03d}_mask.png" for d in MVTEC_DEFECTS for n in range(MVTEC_TEST)]
    assert files == sorted(expected)
    for path in mvtec.glob("t*/*/*.png"):
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (MVTEC_SIZE, MVTEC_SIZE)), path


@pytest.mark.parametrize("defect", MVTEC_DEFECTS)
def test_mvtec_mask_marks_a_visible_defect(mvtec: Path, defect: str) -> None:
    for n in range(MVTEC_TEST):
        mask_img = Image.open(mvtec / "ground_truth" / defect / f"{n:03d}_mask.png")
        assert mask_img.mode == "L" and mask_img.size == (MVTEC_SIZE, MVTEC_SIZE)
        mask = np.asarray(mask_img)
        assert set(np.unique(mask)) == {0, 255}
        inside = mask > 0
        ring = (np.asarray(mask_img.filter(ImageFilter.MaxFilter(9))) > 0) & ~inside
        img = np.asarray(Image.open(mvtec / "test" / defect / f"{n:03d}.png"), np.float64)
        mean_gap = np.abs(img[inside].mean(axis=0) - img[ring].mean(axis=0)).max()
        assert mean_gap > 8, f"{defect}/{n:03d}: mask region looks like its surroundings ({mean_gap:.1f})"


def test_mvtec_good_images_are_distinct_and_textured(mvtec: Path) -> None:
    goods = [np.asarray(Image.open(p), np.float64) for p in sorted(mvtec.glob("*/good/*.png"))]
    assert len(goods) == MVTEC_TRAIN + MVTEC_TEST
    for a in goods:
        assert a.std() > 10, "a woven texture has contrast"
        assert sum(np.array_equal(a, b) for b in goods) == 1


@pytest.mark.parametrize(("seed_a", "seed_b", "same"), [(2, 2, True), (2, 3, False)])
def test_mvtec_is_deterministic(tmp_path: Path, seed_a: int, seed_b: int, same: bool) -> None:
    a = _digest(generate_mvtec(tmp_path / "a", seed_a, 1, 1, 64))
    b = _digest(generate_mvtec(tmp_path / "b", seed_b, 1, 1, 64))
    assert a.keys() == b.keys()
    assert (a == b) if same else all(a[k] != b[k] for k in a)


# --------------------------------------------------------------------------- AITEX

AITEX_COUNT, AITEX_SIZE = 12, 64


@pytest.fixture(scope="module")
def aitex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_aitex(tmp_path_factory.mktemp("aitex"), seed=1, count=AITEX_COUNT, image_size=AITEX_SIZE)


def test_aitex_layout_and_masks(aitex: Path) -> None:
    defects = sorted((aitex / "Defect_images").iterdir())
    masks = sorted((aitex / "Mask_images").iterdir())
    good = sorted((aitex / "NODefect_images").glob("*/*.png"))
    assert len(defects) == len(good) == AITEX_COUNT
    assert [m.name for m in masks] == [d.name.replace(".png", "_mask.png") for d in defects]
    codes = set()
    for path in defects + good:
        match = re.fullmatch(r"(\d{4})_(\d{3})_(\d{2})\.png", path.name)
        assert match, path.name
        code = int(match.group(2))
        assert code in AITEX_DEFECT_CODES and (code == 0) == (path in good), path
        codes.add(code)
        with Image.open(path) as img:
            assert img.mode == "L" and img.size == (8 * img.height, img.height) and img.height == AITEX_SIZE // 2
    assert codes == set(AITEX_DEFECT_CODES), "every defect code appears"
    assert all(p.parent.parent.name == "NODefect_images" and re.fullmatch(r"\d{7}-\w+", p.parent.name) for p in good)
    for mask_path, image_path in zip(masks, defects, strict=True):
        mask = np.asarray(Image.open(mask_path))
        assert mask.shape == np.asarray(Image.open(image_path)).shape and set(np.unique(mask)) == {0, 255}


def test_aitex_is_deterministic(tmp_path: Path) -> None:
    a = _digest(generate_aitex(tmp_path / "a", 4, 3, 64))
    assert a == _digest(generate_aitex(tmp_path / "b", 4, 3, 64))
    assert a != _digest(generate_aitex(tmp_path / "c", 5, 3, 64))


def test_new_fabric_is_the_category_cloth_at_any_size(tmp_path: Path) -> None:
    paths = generate_new_fabric(tmp_path / "a", seed=2, count=6, width=120, height=80, image_size=64)
    again = generate_new_fabric(tmp_path / "b", seed=2, count=6, width=120, height=80, image_size=64)
    assert [p.name for p in paths] == [f"new-{n:03d}.png" for n in range(6)]
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert all(Image.open(p).size == (120, 80) and Image.open(p).mode == "RGB" for p in paths)
    assert not list((tmp_path / "a").glob("*mask*"))  # unlabelled: no masks, no folders by defect type
    category = generate_mvtec(tmp_path / "cat", seed=2, train_count=1, test_count=0, image_size=64)
    # The same material: the mean colour of the new images is the category's within a few levels.
    good = np.asarray(Image.open(category / "train" / "good" / "000.png"), float).mean(axis=(0, 1))
    new = np.mean([np.asarray(Image.open(p), float).mean(axis=(0, 1)) for p in paths], axis=0)
    assert np.abs(good - new).max() < 12, (good, new)
    other = generate_new_fabric(tmp_path / "c", seed=3, count=1, width=120, height=80, image_size=64)
    assert other[0].read_bytes() != paths[0].read_bytes()
    with pytest.raises(ValueError, match="expected sides >= 32"):
        generate_new_fabric(tmp_path / "d", seed=2, count=1, width=16, height=80)


# --------------------------------------------------------------------------- MVTec from real photos

PHOTO_ROWS, PHOTO_COLS, PHOTO_CROP = 200, 180, 48
PHOTO_DEFECTS = tuple(DEFECTS)


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two "photos" whose green channel is the row and blue the column, over a grain of noise."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for n in range(2):
        rows, cols = np.mgrid[0:PHOTO_ROWS, 0:PHOTO_COLS]
        photo = np.stack([rng.integers(60, 200, rows.shape), rows, cols], axis=-1).astype(np.uint8)
        Image.fromarray(photo).save(folder / f"photo_{n}.png")
    out = generate_mvtec_from_photos(folder, tmp_path_factory.mktemp("photo-mvtec"), seed=3, train_count=5,
                                     test_count=2, crop=PHOTO_CROP, image_size=PHOTO_CROP, train_share=0.7)  # fmt: skip
    return folder, out


def test_photo_set_layout_and_split_rows(photo_set: tuple[Path, Path]) -> None:
    _, out = photo_set
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    expected = [f"train/good/{n:03d}.png" for n in range(5)]
    expected += [f"test/{d}/{n:03d}.png" for d in ("good", *PHOTO_DEFECTS) for n in range(2)]
    expected += [f"ground_truth/{d}/{n:03d}_mask.png" for d in PHOTO_DEFECTS for n in range(2)]
    assert files == sorted(expected)
    split = int(PHOTO_ROWS * 0.7)
    for path in out.glob("t*/*/*.png"):
        img = np.asarray(Image.open(path))
        assert img.shape == (PHOTO_CROP, PHOTO_CROP, 3), path
        if path.parts[-3] == "train" or path.parts[-2] == "good":  # unpainted: the green channel is the row
            rows = img[..., 1]
            assert (rows.max() < split) if path.parts[-3] == "train" else (rows.min() >= split), path
            assert (np.diff(rows.astype(int), axis=0) == 1).all(), f"{path}: a crop of the photo at its own scale"


@pytest.mark.parametrize("defect", PHOTO_DEFECTS)
def test_photo_defect_mask_is_what_was_painted(photo_set: tuple[Path, Path], defect: str) -> None:
    _, out = photo_set
    for n in range(2):
        mask = np.asarray(Image.open(out / "ground_truth" / defect / f"{n:03d}_mask.png")) > 0
        img = np.asarray(Image.open(out / "test" / defect / f"{n:03d}.png")).astype(int)
        assert mask.sum() >= 12, f"{defect}/{n:03d}: mask too small to see"
        # unpainted pixels keep their row/column code; the mask covers where the code was lost
        rows, cols = np.mgrid[0:PHOTO_CROP, 0:PHOTO_CROP]
        intact = (img[..., 1] - rows == np.median(img[..., 1][~mask] - rows[~mask])) & (
            img[..., 2] - cols == np.median(img[..., 2][~mask] - cols[~mask]))  # fmt: skip
        assert intact[~mask].mean() > 0.97, f"{defect}/{n:03d}: pixels outside the mask changed"
        assert intact[mask].mean() < 0.5, f"{defect}/{n:03d}: the masked pixels look untouched"


def test_photo_set_is_deterministic_and_names_a_photo_too_small(photo_set: tuple[Path, Path], tmp_path: Path) -> None:
    photos, out = photo_set
    again = generate_mvtec_from_photos(photos, tmp_path / "again", seed=3, train_count=5, test_count=2,
                                       crop=PHOTO_CROP, image_size=PHOTO_CROP, train_share=0.7)  # fmt: skip
    assert _digest(again) == _digest(out)
    with pytest.raises(ValueError, match=r"photo_0.png: test rows of the photo \(train_share 0.9\): expected a band"):
        generate_mvtec_from_photos(photos, tmp_path / "small", train_count=2, test_count=1, crop=PHOTO_CROP,
                                   image_size=PHOTO_CROP, train_share=0.9)  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown defect\(s\) \['tear'\]"):
        generate_mvtec_from_photos(photos, tmp_path / "tear", defects=["hole", "tear"])
