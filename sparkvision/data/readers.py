"""On-disk formats of the ingested data sets: annotation parsing and file listing, on the driver.

Every read goes through ``sparkvision.storage`` (``pyarrow.fs``), so a data set root may be a
local path or a URL (``hdfs://``, ``s3a://``, ...); nothing here calls ``os.walk`` or ``open``.

Each ``list_*`` function walks a data set in its public layout and returns a ``Catalog``:
one ``CatalogEntry`` per image file it expects (its path relative to the data set root, the
row id, the split and the annotations), plus the annotation-only items that have no image
(``orphans``, quarantined as ``missing_image``). Spark reads the bytes; the catalog is joined
to them as a DataFrame. Nothing here decodes images.

Structural problems in an annotation file (wrong number of fields, a token that is not a
number, a count line that disagrees with the rows, a wrong header) raise ``AnnotationError``
naming the file and line. A value out of its domain (an attribute of 3, a negative box
width) marks only that image ``malformed_annotation``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sparkvision import storage
from sparkvision.data import images
from sparkvision.data.schema import AITEX_DEFECT_CODES, CELEBA_ATTRIBUTES, CELEBA_PARTITION_TO_SPLIT, SPLITS
from sparkvision.storage import Location

log = logging.getLogger(__name__)

CELEBA_ATTR_FILE = "list_attr_celeba.txt"
CELEBA_BBOX_FILE = "list_bbox_celeba.txt"
CELEBA_PARTITION_FILE = "list_eval_partition.txt"
CELEBA_IDENTITY_FILE = "identity_CelebA.txt"
CELEBA_BBOX_HEADER = ("image_id", "x_1", "y_1", "width", "height")
CELEBA_LANDMARK_HEADER = tuple(
    f"{p}_{a}" for p in ("lefteye", "righteye", "nose", "leftmouth", "rightmouth") for a in "xy"
)

AITEX_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)$")
"""Stem of an AITEX image name ``nnnn_ccc_ss``: image number, defect code, sample."""


class AnnotationError(ValueError):
    """An annotation file is structurally broken; the message names file, line, expected and found."""


@dataclass(frozen=True)
class CatalogEntry:
    """One image file a data set layout expects, with everything known before decoding.

    Attributes:
        key: Path of the image relative to the data set root (POSIX separators).
        id: Row id in the output table (for fabric: the source image id of its patches).
        split: ``train``/``val``/``test``, or None when it cannot be known (then ``reason`` is set).
        reason: A quarantine reason decided from the annotations alone, or None.
        message: What was expected and what was found, for ``reason``.
        values: Format-specific annotation values (see ``CATALOG_FIELDS`` in ingest).
        masks: Mask file keys (fabric) the image needs; empty for good images.
    """

    key: str
    id: str
    split: str | None
    reason: str | None = None
    message: str | None = None
    values: dict[str, object] = field(default_factory=dict)
    masks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Orphan:
    """An annotation without its image: quarantined with reason ``missing_image``."""

    source: str
    message: str


@dataclass
class Catalog:
    """What the driver knows about a data set before Spark reads any image.

    Attributes:
        root: The data set root (a local folder or a filesystem URL).
        read_dirs: Folders Spark reads images from (recursively), relative to ``root``.
        mask_dirs: Folders Spark reads masks from, relative to ``root`` (fabric only).
        glob: The file-name glob Spark filters image files with.
        entries: One entry per expected image file, by key.
        orphans: Annotation items with no image file.
        skipped: Files under ``read_dirs``/``mask_dirs`` not read as images (quarantined).
        excluded: Keys of files left out by ``ingest.exclude`` (counted, not quarantined).
        info: Extra facts for the manifest (class names, categories).
    """

    root: Location
    read_dirs: list[str]
    glob: str
    entries: dict[str, CatalogEntry]
    orphans: list[Orphan] = field(default_factory=list)
    mask_dirs: list[str] = field(default_factory=list)
    mask_glob: str = "*.[pP][nN][gG]"
    info: dict[str, object] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def glob_for(extensions: Sequence[str]) -> str:
    """A case-insensitive Hadoop glob for file names ending in one of ``extensions``."""

    def ci(ext: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext)

    return "*.{" + ",".join(ci(e) for e in extensions) + "}"


def visible(name: str) -> bool:
    """Whether Spark's file index lists ``name`` (it skips names starting with ``.`` or ``_``)."""
    return not name.startswith((".", "_"))


@dataclass(frozen=True)
class Skipped:
    """A regular file (or dangling link) on disk that is not read as an image: quarantined.

    Attributes:
        key: Path relative to the data set root (POSIX separators).
        reason: ``hidden_file``, ``unsupported_extension`` or ``broken_link``.
        message: What was expected and what was found.
    """

    key: str
    reason: str
    message: str


@dataclass
class Survey:
    """Every file under the folders a layout reads, sorted into used, skipped and excluded.

    Spark's file scan (and Hadoop's) never lists names starting with ``.`` or ``_``, and dangling
    symbolic links; the driver's listing through ``storage`` sees them all, so each becomes a
    ``Skipped`` entry instead of vanishing.

    Attributes:
        exclude: Glob patterns (``fnmatch``; ``*`` also crosses ``/``) matched against the path
            relative to the data set root and against the file name: matching files are
            left out on purpose and only counted (``excluded``).
        skipped: Files that are not used, with their reason.
        excluded: Keys of the excluded files.
        empty: Keys of the zero-byte image files among those ``files`` returns (Spark's
            ``binaryFile`` scan drops them; a job reading through it gives each its error row).
    """

    exclude: tuple[str, ...] = ()
    skipped: list[Skipped] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)

    def is_excluded(self, key: str) -> bool:
        """Whether ``key`` (relative to the data set root) matches an ``exclude`` pattern."""
        name = key.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def files(self, root: Location, prefix: str, extensions: Sequence[str]) -> list[str]:
        """Image files under ``root`` (recursively) as sorted POSIX paths relative to ``root``.

        Exactly what ``spark.read.format("binaryFile")`` with ``recursiveFileLookup`` and
        ``glob_for(extensions)`` reads, minus excluded files, plus zero-byte ones (also in
        ``empty``). Every other regular file and dangling link under ``root`` is recorded in
        ``skipped`` (keys ``prefix/rel``). One listing of ``root``.
        """
        exts = {e.lower() for e in extensions}
        pre = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        found: list[str] = []
        wanted = "/".join(sorted(exts))
        for rel in root.broken_links():
            if not self.is_excluded(pre + rel):
                self.skipped.append(Skipped(pre + rel, images.BROKEN_LINK,
                                            f"{root.join(rel)}: symbolic link to a file that does not exist"))  # fmt: skip
            else:
                self.excluded.append(pre + rel)
        for rel, size in root.file_sizes(recursive=True).items():
            key = pre + rel
            if self.is_excluded(key):
                self.excluded.append(key)
                continue
            parts = rel.split("/")
            hidden = next((p for p in parts if not visible(p)), None)
            name = parts[-1]
            ext = name.rsplit(".", 1)[-1].lower() if "." in name.lstrip("._") else ""
            if hidden is not None:
                what = "file" if hidden == name else "folder"
                self.skipped.append(Skipped(key, images.HIDDEN_FILE, f"{root.join(rel)}: {what} name {hidden!r} starts "
                                            "with '.' or '_' (Spark never reads it); add it to ingest.exclude "
                                            "to leave it out on purpose"))  # fmt: skip
            elif ext not in exts:
                self.skipped.append(Skipped(key, images.UNSUPPORTED_EXTENSION, f"{root.join(rel)}: expected an "
                                            f"extension in {wanted}, found {('.' + ext) if ext else 'none'}"))  # fmt: skip
            else:
                found.append(rel)
                if size == 0:
                    self.empty.append(key)
        if self.skipped:
            log.info("%s: %d files not read as images (hidden, other extensions, dangling links)", root,
                     len(self.skipped))  # fmt: skip
        return sorted(found)


def list_files(root: Location, extensions: Sequence[str]) -> list[str]:
    """Image files under ``root`` that Spark reads (``Survey.files`` without exclusions)."""
    return Survey().files(root, "", extensions)


def _check_fractions(fractions: Sequence[float], splits: Sequence[str]) -> float:
    """The sum of ``fractions`` after checking they match ``splits`` and are usable shares."""
    if len(fractions) != len(splits):
        raise ValueError(f"expected {len(splits)} split fractions for {list(splits)}, found {list(fractions)}")
    total = float(sum(fractions))
    if total <= 0 or min(fractions) < 0:
        raise ValueError(f"expected non-negative split fractions with a positive sum, found {list(fractions)}")
    return total


def _hash_unit(key: str, seed: int) -> float:
    """A salted SHA-256 of ``key`` mapped to ``[0, 1)``."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(key: str, fractions: Sequence[float], seed: int, splits: Sequence[str] = SPLITS) -> str:
    """Deterministic split of ``key``: a salted SHA-256 mapped to ``[0, 1)`` and cut by ``fractions``.

    Args:
        key: What must always land in the same split (file id, source image id, identity).
        fractions: Relative shares of ``splits`` (normalised; need not sum to 1).
        seed: Salt: another seed gives another, equally deterministic, split.
        splits: Names matching ``fractions``.

    Returns:
        One of ``splits``.
    """
    total = _check_fractions(fractions, splits)
    u = _hash_unit(key, seed)
    edge = 0.0
    for name, share in zip(splits, fractions, strict=True):
        edge += share / total
        if u < edge:
            return name
    return next(name for name, share in zip(reversed(splits), reversed(fractions), strict=True) if share > 0)


def order_key(key: str, seed: int) -> str:
    """A stable pseudo-random sort key of ``key``: its SHA-256 (hex) salted with ``seed``.

    Its own salt (``"<seed>:order:"``) keeps it independent of ``hash_split`` with the same seed.
    Ingest sorts each split's rows by it, so no file or batch is ordered by path or label.
    """
    return hashlib.sha256(f"{seed}:order:{key}".encode()).hexdigest()


def split_sizes(count: int, fractions: Sequence[float], splits: Sequence[str] = SPLITS) -> list[int]:
    """How many of ``count`` items each split gets: ``fractions`` rounded by largest remainder.

    When ``count`` is at least the number of splits with a positive share, each of them gets at
    least one item (taken from the largest split); a split with share 0 always gets none.

    Args:
        count: Items to divide (files of one class).
        fractions: Relative shares of ``splits``.
        splits: Names matching ``fractions``.

    Returns:
        One count per split, summing to ``count``.
    """
    total = _check_fractions(fractions, splits)
    exact = [count * f / total for f in fractions]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted((i for i, f in enumerate(fractions) if f > 0), key=lambda i: (sizes[i] - exact[i], i))
    for i in by_remainder[: count - sum(sizes)]:
        sizes[i] += 1
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if count >= len(positive):
        for i in positive:
            if sizes[i] == 0:
                donor = max(positive, key=lambda j: (sizes[j], -j))
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes


def stratified_split(
    keys: Iterable[str], fractions: Sequence[float], seed: int, splits: Sequence[str] = SPLITS
) -> dict[str, str]:
    """Split one stratum (the files of one class) in exact proportions.

    The keys are ordered by their salted hash (``seed``; ties by key, so the listing order does
    not matter) and the ordered list is cut into runs of ``split_sizes(len(keys), fractions)``.

    Returns:
        ``{key: split}`` for every key.
    """
    ordered = sorted(set(keys), key=lambda k: (_hash_unit(k, seed), k))
    out: dict[str, str] = {}
    start = 0
    for name, size in zip(splits, split_sizes(len(ordered), fractions, splits), strict=True):
        out.update((k, name) for k in ordered[start : start + size])
        start += size
    return out


def _require(path: Location, what: str) -> Location:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing {what}")
    return path


# --------------------------------------------------------------------------- CelebA


@dataclass(frozen=True)
class _Row:
    line: int
    values: tuple[int, ...]


def _parse_table(
    path: Location,
    n_values: int,
    meaning: str,
    header: Sequence[str] | None,
) -> dict[str, _Row]:
    """Parse ``[count line] [header line] rows of "name v1 .. vn"`` (integers) into rows by name.

    ``header`` None: the file has neither count nor header line (partition, identity files).
    """
    rows: dict[str, _Row] = {}
    name = path.name
    lines = path.read_text().splitlines()
    start = 0
    declared: int | None = None
    if header is not None:
        if len(lines) < 2:
            raise AnnotationError(
                f"{name}:{len(lines) + 1}: expected a count line and a header line, found end of file"
            )
        first = lines[0].split()
        if len(first) != 1 or not first[0].isdigit():
            raise AnnotationError(f"{name}:1: expected the number of images, found {lines[0].strip()!r}")
        declared = int(first[0])
        found_header = lines[1].split()
        if found_header and found_header[0] == "image_id" and header[0] != "image_id":
            found_header = found_header[1:]
        if tuple(found_header) != tuple(header):
            diff = next(
                (i for i, (a, b) in enumerate(zip(header, found_header, strict=False)) if a != b),
                min(len(header), len(found_header)),
            )
            raise AnnotationError(
                f"{name}:2: expected a header of {len(header)} names ({' '.join(header[:3])} ...), "
                f"found {len(found_header)} names; first difference at column {diff + 1}: "
                f"expected {header[diff] if diff < len(header) else 'end of line'!r}, "
                f"found {found_header[diff] if diff < len(found_header) else 'end of line'!r}"
            )
        start = 2
    for number, text in enumerate(lines[start:], start=start + 1):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != n_values + 1:
            raise AnnotationError(
                f"{name}:{number}: expected {n_values + 1} fields (file name + {meaning}), found {len(parts)}"
            )
        try:
            values = tuple(map(int, parts[1:]))
        except ValueError:
            bad = next(v for v in parts[1:] if not re.fullmatch(r"[+-]?\d+", v))
            raise AnnotationError(f"{name}:{number}: expected integers ({meaning}), found {bad!r}") from None
        if parts[0] in rows:
            raise AnnotationError(
                f"{name}:{number}: expected each image once, found {parts[0]} again (first on line {rows[parts[0]].line})"
            )
        rows[parts[0]] = _Row(number, values)
    if declared is not None and declared != len(rows):
        raise AnnotationError(f"{name}:1: count line says {declared} images, found {len(rows)} rows")
    return rows


def _domain_problem(kind: str, values: tuple[int, ...]) -> str | None:
    """What is out of domain in one row's values, or None."""
    if kind == "attributes":
        bad = [(CELEBA_ATTRIBUTES[i], v) for i, v in enumerate(values) if v not in (-1, 1)]
        return f"attribute {bad[0][0]} expected -1 or 1, found {bad[0][1]}" if bad else None
    if kind == "bbox":
        x, y, w, h = values
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            return f"expected x_1, y_1 >= 0 and width, height > 0, found {x} {y} {w} {h}"
        return None
    if kind == "landmarks":
        bad_pts = [v for v in values if v < 0]
        return f"expected landmark coordinates >= 0, found {bad_pts[0]}" if bad_pts else None
    if kind == "partition":
        return None if values[0] in CELEBA_PARTITION_TO_SPLIT else f"expected partition 0, 1 or 2, found {values[0]}"
    if kind == "identity":
        return None if values[0] >= 0 else f"expected an identity number >= 0, found {values[0]}"
    raise ValueError(kind)


def list_celeba(
    root: str | os.PathLike[str] | Location,
    image_dir: str = "img_align_celeba",
    landmarks_file: str = "list_landmarks_align_celeba.txt",
    split_by_identity: bool = False,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    exclude: Sequence[str] = (),
) -> Catalog:
    """Parse the five CelebA annotation files and list ``root/image_dir``.

    Args:
        root: The CelebA folder (holding ``img_align_celeba/`` and the ``*.txt`` files).
        image_dir: Image folder inside ``root``.
        landmarks_file: Landmark file matching ``image_dir``.
        split_by_identity: Hash-split by identity instead of ``list_eval_partition.txt``.
        split_fractions: Shares of train/val/test for ``split_by_identity``.
        split_seed: Salt of the identity split.
        exclude: Glob patterns of files to leave out (``Survey.exclude``).

    Returns:
        A catalog whose entry values are ``attributes`` (40 floats 0/1), ``bbox_raw``
        (x, y, w, h), ``landmarks_raw`` (10 ints) and ``identity``.

    Raises:
        FileNotFoundError: The image folder or an annotation file is missing.
        AnnotationError: An annotation file is structurally broken.
    """
    base = storage.location(root)
    images_root = base.join(image_dir)
    if not images_root.is_dir():
        raise FileNotFoundError(f"{images_root}: missing CelebA image folder (ingest.celeba_image_dir={image_dir!r})")
    sources: list[tuple[str, str, dict[str, _Row]]] = []
    specs: list[tuple[str, str, int, str, Sequence[str] | None, str]] = [
        ("attributes", CELEBA_ATTR_FILE, 40, "40 attributes of -1/1", CELEBA_ATTRIBUTES, "attributes"),
        ("bbox", CELEBA_BBOX_FILE, 4, "x_1 y_1 width height", CELEBA_BBOX_HEADER, "bbox"),
        ("landmarks", landmarks_file, 10, "5 landmarks as 10 integers", CELEBA_LANDMARK_HEADER, "landmarks"),
        ("partition", CELEBA_PARTITION_FILE, 1, "partition 0/1/2", None, "split"),
        ("identity", CELEBA_IDENTITY_FILE, 1, "identity number", None, "identity"),
    ]
    for kind, fname, n, meaning, header, column in specs:
        path = _require(base.join(fname), f"CelebA annotation file (needed for column {column})")
        rows = _parse_table(path, n, meaning, header)
        log.info("%s: %d rows", fname, len(rows))
        sources.append((kind, fname, rows))

    survey = Survey(tuple(exclude))
    files = set(survey.files(images_root, image_dir, images.IMAGE_EXTENSIONS))
    annotated: dict[str, str] = {}
    for _, fname, rows in sources:
        where = str(base.join(fname))
        for name, row in rows.items():
            if name not in annotated:
                annotated[name] = f"{where}:{row.line}"
    entries: dict[str, CatalogEntry] = {}
    orphans = [
        Orphan(where, f"annotated image {image_dir}/{name} does not exist")
        for name, where in sorted(annotated.items())
        if name not in files
    ]
    for rel in sorted(files):
        missing = [fname for _, fname, rows in sources if rel not in rows]
        values: dict[str, object] = {}
        problems: list[str] = []
        for kind, fname, rows in sources:
            row = rows.get(rel)
            if row is None:
                continue
            problem = _domain_problem(kind, row.values)
            if problem:
                problems.append(f"{base.join(fname)}:{row.line}: {problem}")
            values[kind] = row.values
        reason = message = None
        if missing:
            reason = images.MISSING_ANNOTATION
            message = f"no row for {rel} in {', '.join(missing)}"
        elif problems:
            reason, message = images.MALFORMED_ANNOTATION, "; ".join(problems)
        split = None
        if reason is None:
            ident = values["identity"][0]  # type: ignore[index]
            if split_by_identity:
                split = hash_split(f"identity:{ident}", split_fractions, split_seed)
            else:
                split = CELEBA_PARTITION_TO_SPLIT[values["partition"][0]]  # type: ignore[index]
        entries[f"{image_dir}/{rel}"] = CatalogEntry(
            key=f"{image_dir}/{rel}",
            id=rel,
            split=split,
            reason=reason,
            message=message,
            values=(
                {
                    "attributes": [1.0 if v == 1 else 0.0 for v in values["attributes"]],  # type: ignore[union-attr]
                    "bbox_raw": list(values["bbox"]),  # type: ignore[call-overload]
                    "landmarks_raw": list(values["landmarks"]),  # type: ignore[call-overload]
                    "identity": int(values["identity"][0]),  # type: ignore[index]
                }
                if reason is None
                else {}
            ),
        )
    return Catalog(
        root=base, read_dirs=[image_dir], glob=glob_for(images.IMAGE_EXTENSIONS), entries=entries, orphans=orphans,
        skipped=survey.skipped, excluded=survey.excluded,
    )  # fmt: skip


# --------------------------------------------------------------------------- fabric (MVTec AD, AITEX)


def _is_mvtec_category(path: Location) -> bool:
    return path.join("train").is_dir() or path.join("test").is_dir()


def _link_masks(
    base: Location,
    entries: dict[str, CatalogEntry],
    mask_files: Iterable[str],
    mask_of: Callable[[str], str],
) -> list[Orphan]:
    """Orphan masks: mask files whose image key (``mask_of(mask_key)``) is not listed."""
    return [
        Orphan(str(base.join(m)), f"mask {m} has no image (expected {mask_of(m)})")
        for m in sorted(mask_files)
        if mask_of(m) not in entries
    ]


def list_mvtec(
    root: str | os.PathLike[str] | Location,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    exclude: Sequence[str] = (),
) -> Catalog:
    """List an MVTec AD category folder, or a root holding several category folders.

    ``train/good`` images are hash-split into train/val, ``test/*`` images into val/test
    (in the proportions of ``split_fractions``), so nothing from ``test/`` reaches ``train``.
    A ``test/<defect>/x.png`` needs ``ground_truth/<defect>/x_mask.png``.

    Args:
        root: A category folder (``train/``, ``test/``, ``ground_truth/``) or a folder of them.
        split_fractions: Shares of train/val/test.
        split_seed: Salt of the hash split.
        exclude: Glob patterns of files to leave out (``Survey.exclude``).

    Returns:
        A catalog whose entry values are ``defect_type`` (folder name) and ``split_shares`` (the
        train/val/test shares of the image's role, for splitting patches one by one), and whose entries of
        defect images name their mask keys. With several categories ids start with the category.

    Raises:
        FileNotFoundError: ``root`` holds no MVTec category.
    """
    base = storage.location(root)
    if _is_mvtec_category(base):
        categories = [("", base)]
    else:
        categories = [(p.name, p) for p in base.child_dirs() if visible(p.name) and _is_mvtec_category(p)]
    if not categories:
        raise FileNotFoundError(
            f"{base}: expected an MVTec AD category (train/, test/, ground_truth/) or a folder of them"
        )
    f_train, f_val, f_test = split_fractions
    survey = Survey(tuple(exclude))
    entries: dict[str, CatalogEntry] = {}
    read_dirs: list[str] = []
    mask_dirs: list[str] = []
    masks: list[str] = []
    for name, cat in categories:
        prefix = f"{name}/" if name else ""
        for role in ("train", "test"):
            if not cat.join(role).is_dir():
                continue
            read_dirs.append(f"{prefix}{role}")
            for rel in survey.files(cat.join(role), f"{prefix}{role}", ("png",)):
                defect = rel.split("/", 1)[0] if "/" in rel else "good"
                key = f"{prefix}{role}/{rel}"
                shares = [f_train, f_val, 0.0] if role == "train" else [0.0, f_val, f_test]
                split = hash_split(key, shares, split_seed)
                stem = rel.rsplit(".", 1)[0]
                mask = () if defect == "good" else (f"{prefix}ground_truth/{stem}_mask.png",)
                values = {"defect_type": defect, "split_shares": shares}
                entries[key] = CatalogEntry(key, key, split, values=values, masks=mask)
        if cat.join("ground_truth").is_dir():
            mask_dirs.append(f"{prefix}ground_truth")
            found = survey.files(cat.join("ground_truth"), f"{prefix}ground_truth", ("png",))
            masks.extend(f"{prefix}ground_truth/{m}" for m in found)

    def image_of(mask_key: str) -> str:
        head, _, tail = mask_key.rpartition("ground_truth/")
        return f"{head}test/{re.sub(r'_mask$', '', tail.rsplit('.', 1)[0])}.png"

    orphans = _link_masks(base, entries, masks, image_of)
    return Catalog(
        root=base,
        read_dirs=read_dirs,
        glob=glob_for(("png",)),
        entries=entries,
        orphans=orphans,
        mask_dirs=mask_dirs,
        info={"categories": [n for n, _ in categories if n]},
        skipped=survey.skipped,
        excluded=survey.excluded,
    )


def list_aitex(
    root: str | os.PathLike[str] | Location,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    exclude: Sequence[str] = (),
) -> Catalog:
    """List an AITEX fabric folder: ``Defect_images/``, ``NODefect_images/<sub>/``, ``Mask_images/``.

    Defect images are named ``nnnn_ccc_ss.png`` with ``ccc`` a key of ``AITEX_DEFECT_CODES``;
    their mask is ``Mask_images/nnnn_ccc_ss_mask.png`` (further ``_mask1``, ``_mask2`` ... files
    are merged). An unknown code or name marks the image ``malformed_annotation``.

    Args:
        root: The AITEX folder.
        split_fractions: Shares of train/val/test of the hash split by source image.
        split_seed: Salt of the hash split.
        exclude: Glob patterns of files to leave out (``Survey.exclude``).

    Returns:
        A catalog whose entry values are ``defect_type`` and ``split_shares``.

    Raises:
        FileNotFoundError: Neither ``Defect_images`` nor ``NODefect_images`` exists.
    """
    base = storage.location(root)
    dirs = [d for d in ("Defect_images", "NODefect_images") if base.join(d).is_dir()]
    if not dirs:
        raise FileNotFoundError(f"{base}: expected an AITEX folder with Defect_images/ and NODefect_images/")
    survey = Survey(tuple(exclude))
    has_masks = base.join("Mask_images").is_dir()
    masks = survey.files(base.join("Mask_images"), "Mask_images", ("png",)) if has_masks else []
    masks_by_stem: dict[str, list[str]] = {}
    for m in masks:
        stem = re.sub(r"_mask\d*$", "", m.rsplit("/", 1)[-1].rsplit(".", 1)[0])
        masks_by_stem.setdefault(stem, []).append(f"Mask_images/{m}")
    entries: dict[str, CatalogEntry] = {}
    for d in dirs:
        for rel in survey.files(base.join(d), d, ("png",)):
            key = f"{d}/{rel}"
            split = hash_split(key, split_fractions, split_seed)
            stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if d == "NODefect_images":
                values = {"defect_type": "good", "split_shares": list(split_fractions)}
                entries[key] = CatalogEntry(key, key, split, values=values)
                continue
            match = AITEX_NAME.match(stem)
            code = int(match.group(2)) if match else None
            if code is None or code not in AITEX_DEFECT_CODES:
                found = f"defect code {code}" if match else f"name {stem!r}"
                entries[key] = CatalogEntry(
                    key, key, None, images.MALFORMED_ANNOTATION,
                    f"{base.join(key)}: expected nnnn_ccc_ss.png with ccc one of {sorted(AITEX_DEFECT_CODES)}, found {found}",
                )  # fmt: skip
                continue
            defect = AITEX_DEFECT_CODES[code]
            mask_keys = tuple(masks_by_stem.get(stem, ())) if defect != "good" else ()
            if defect != "good" and not mask_keys:
                mask_keys = (f"Mask_images/{stem}_mask.png",)
            values = {"defect_type": defect, "split_shares": list(split_fractions)}
            entries[key] = CatalogEntry(key, key, split, values=values, masks=mask_keys)
    stems = {e.key.rsplit("/", 1)[-1].rsplit(".", 1)[0] for e in entries.values() if e.key.startswith("Defect_images/")}
    orphans = [
        Orphan(str(base.join(mk)), f"mask {mk} has no image (expected Defect_images/{stem}.png)")
        for stem, keys in sorted(masks_by_stem.items())
        if stem not in stems
        for mk in keys
    ]
    return Catalog(
        root=base,
        read_dirs=dirs,
        glob=glob_for(("png",)),
        entries=entries,
        orphans=orphans,
        mask_dirs=["Mask_images"] if masks else [],
        skipped=survey.skipped,
        excluded=survey.excluded,
    )


# --------------------------------------------------------------------------- class-per-folder


def list_folder(
    root: str | os.PathLike[str] | Location,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    split_seed: int = 0,
    exclude: Sequence[str] = (),
) -> Catalog:
    """List ``root/<class>/**/*.<IMAGE_EXTENSIONS>``; label = index in sorted class names.

    The split is stratified by class (``stratified_split``): each class's files are ordered by a
    salted hash of their path (``split_seed``) and that list is cut by ``split_fractions``, so
    every class follows the fractions (rounded; a class with at least as many files as positive
    shares has a file in each such split). It depends only on the set of paths and the seed,
    not on the listing order. Image files directly in ``root`` are listed without a class
    (quarantined as ``missing_annotation``).

    Args:
        root: Folder of class folders.
        split_fractions: Shares of train/val/test, applied within each class.
        split_seed: Salt of the per-class hash order.
        exclude: Glob patterns of files to leave out (``Survey.exclude``).

    Returns:
        A catalog whose entry values are ``label`` and ``label_name``; ``info["classes"]``
        lists the class names in label order.

    Raises:
        FileNotFoundError: ``root`` is not a folder or has no class folder.
    """
    base = storage.location(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: expected a folder of class folders")
    classes = sorted(p.name for p in base.child_dirs() if visible(p.name))
    if not classes:
        raise FileNotFoundError(f"{base}: expected class sub-folders (ROOT/<class>/*.jpg), found none")
    index = {c: i for i, c in enumerate(classes)}
    survey = Survey(tuple(exclude))
    files = survey.files(base, "", images.IMAGE_EXTENSIONS)
    by_class: dict[str, list[str]] = {}
    for rel in files:
        if "/" in rel:
            by_class.setdefault(rel.split("/", 1)[0], []).append(rel)
    split_of = {
        rel: split
        for keys in by_class.values()
        for rel, split in stratified_split(keys, split_fractions, split_seed).items()
    }
    entries: dict[str, CatalogEntry] = {}
    for rel in files:
        if "/" not in rel:
            entries[rel] = CatalogEntry(
                rel, rel, None, images.MISSING_ANNOTATION,
                f"{base.join(rel)}: expected the image inside a class folder ROOT/<class>/, found it in ROOT",
            )  # fmt: skip
            continue
        name = rel.split("/", 1)[0]
        entries[rel] = CatalogEntry(rel, rel, split_of[rel], values={"label": index[name], "label_name": name})
    return Catalog(
        root=base, read_dirs=[""], glob=glob_for(images.IMAGE_EXTENSIONS), entries=entries, info={"classes": classes},
        skipped=survey.skipped, excluded=survey.excluded,
    )  # fmt: skip
