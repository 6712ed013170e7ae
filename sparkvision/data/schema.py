"""The Parquet schemas of every table sparkvision writes, as module-level constants.

Each ``Field`` states its Spark type, numpy dtype, shape and codec, in the manner of
petastorm's Unischema. Ingested tables are plain Parquet that petastorm's
``make_batch_reader`` reads directly; images are stored PNG-encoded (lossless,
viewable with any tool) and decoded in the input pipeline.

Layout of an ingested dataset folder ``OUT`` (published atomically)::

    OUT/data/split=train/*.parquet   rows of the table for the format (split is a partition)
    OUT/data/split=val/...
    OUT/data/split=test/...
    OUT/quarantine/*.parquet         QUARANTINE rows: every input that could not be used
    OUT/manifest.json                counts, reasons, schema, config hash, content checksum

Scored outputs end in the ``ERRORS`` columns: null for a scored row, a reason code and a
message for a row that could not be scored (its image, or the model, failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pyspark.sql import types as T

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)  # fmt: skip
"""The 40 official CelebA attribute names, in the order of ``list_attr_celeba.txt``."""

LANDMARK_NAMES: tuple[str, ...] = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")

SPLITS: tuple[str, ...] = ("train", "val", "test")
CELEBA_PARTITION_TO_SPLIT = {0: "train", 1: "val", 2: "test"}


@dataclass(frozen=True)
class Field:
    """One column: name, Spark type, numpy dtype, shape (``None`` = variable), codec, nullable."""

    name: str
    spark_type: T.DataType
    numpy_dtype: str
    shape: tuple[int | None, ...]
    codec: Literal["none", "png"]
    nullable: bool
    doc: str


def _f(name: str, st: T.DataType, dt: str, shape: tuple[int | None, ...], doc: str, *, codec: str = "none",
       nullable: bool = False) -> Field:  # fmt: skip
    return Field(name, st, dt, shape, codec, nullable, doc)  # type: ignore[arg-type]


_COMMON = (
    _f("id", T.StringType(), "str", (), "stable row id: image file name (plus tile offsets for patches)"),
    _f("image", T.BinaryType(), "uint8", (None, None, 3), "PNG-encoded RGB image", codec="png"),
    _f("height", T.IntegerType(), "int32", (), "stored image height in pixels"),
    _f("width", T.IntegerType(), "int32", (), "stored image width in pixels"),
    _f("channels", T.IntegerType(), "int32", (), "stored image channels (3)"),
    _f("source_path", T.StringType(), "str", (), "absolute path of the input file"),
    _f("content_hash", T.StringType(), "str", (), "SHA-256 of the input file bytes"),
)

CELEBA = _COMMON + (
    _f("attributes", T.ArrayType(T.FloatType(), False), "float32", (40,),
       "the 40 attributes as 0/1 in CELEBA_ATTRIBUTES order (file -1 -> 0)"),
    _f("bbox", T.ArrayType(T.FloatType(), False), "float32", (4,),
       "face box [x_min, y_min, x_max, y_max] normalised to the stored image, clipped to [0,1]"),
    _f("landmarks", T.ArrayType(T.FloatType(), False), "float32", (10,),
       "5 landmarks (x, y) in LANDMARK_NAMES order, normalised to the stored image"),
    _f("identity", T.IntegerType(), "int32", (), "CelebA identity number"),
)  # fmt: skip

FABRIC = _COMMON + (
    _f("source_id", T.StringType(), "str", (), "id of the full source image the patch was cut from"),
    _f("tile_x", T.IntegerType(), "int32", (), "left of the patch in source pixels"),
    _f("tile_y", T.IntegerType(), "int32", (), "top of the patch in source pixels"),
    _f("label", T.IntegerType(), "int32", (), "1 when the patch is defective (mask coverage >= threshold)"),
    _f("defect_type", T.StringType(), "str", (), "'good' or the defect folder / AITEX code name"),
    _f("mask", T.BinaryType(), "uint8", (None, None, 1), "PNG defect mask of the patch (0/255)", codec="png"),
    _f("mask_coverage", T.FloatType(), "float32", (), "fraction of patch pixels marked defective"),
    _f("bbox", T.ArrayType(T.FloatType(), False), "float32", (4,),
       "box of the largest defect region in the patch, normalised; zeros when none"),
    _f("boxes", T.ArrayType(T.FloatType(), False), "float32", (None,),
       "all defect region boxes flattened (4 numbers each), normalised"),
)  # fmt: skip

FOLDER = _COMMON + (
    _f("label", T.IntegerType(), "int32", (), "class index: position of label_name in sorted class names"),
    _f("label_name", T.StringType(), "str", (), "the sub-folder name"),
)

QUARANTINE_REASON = "reason"
QUARANTINE_MESSAGE = "message"
QUARANTINE = (
    _f("source_path", T.StringType(), "str", (), "input file (or annotation file:line)"),
    _f("content_hash", T.StringType(), "str", (), "SHA-256 of the bytes, when readable", nullable=True),
    _f(QUARANTINE_REASON, T.StringType(), "str", (), "reason code, one of sparkvision.data.images.REASONS"),
    _f(QUARANTINE_MESSAGE, T.StringType(), "str", (), "what was expected and what was found"),
    _f("stage", T.StringType(), "str", (), "read | decode | annotate | dedupe"),
)

ERROR_CODE = "error_code"
ERROR_MESSAGE = "error_message"
MODEL_ERROR = "model_error"
"""``error_code`` of a row the model itself failed on (not a decoding problem)."""
ERRORS = (
    _f(ERROR_CODE, T.StringType(), "str", (), "null when scored; else one of images.REASONS or MODEL_ERROR",
       nullable=True),
    _f(ERROR_MESSAGE, T.StringType(), "str", (), "null when scored; else what was expected and what was found",
       nullable=True),
)  # fmt: skip
"""The last columns of every scored row (pyfunc ``predict``, scoring and face identification output)."""
ERROR_COLUMNS: tuple[str, ...] = tuple(f.name for f in ERRORS)

TABLES: dict[str, tuple[Field, ...]] = {"celeba": CELEBA, "fabric": FABRIC, "folder": FOLDER}
FORMAT_TABLE = {"celeba": "celeba", "mvtec": "fabric", "aitex": "fabric", "folder": "folder"}


def spark_schema(fields: tuple[Field, ...]) -> T.StructType:
    """The Spark ``StructType`` of a field tuple."""
    return T.StructType([T.StructField(f.name, f.spark_type, f.nullable) for f in fields])


def arrow_schema(fields: tuple[Field, ...]) -> Any:
    """The ``pyarrow.Schema`` of a field tuple, every column nullable: what Spark itself writes.

    Executors write Parquet with pyarrow (``ingest``), so a file holds exactly the types a Spark
    write of ``spark_schema(fields)`` would: ``int`` → int32, ``float`` → float32, arrays → lists.
    """
    import pyarrow as pa

    return pa.schema([pa.field(f.name, _arrow_type(f.spark_type), nullable=True) for f in fields])


def _arrow_type(st: T.DataType) -> Any:
    import pyarrow as pa

    if isinstance(st, T.ArrayType):
        return pa.list_(_arrow_type(st.elementType))
    simple = {T.StringType: pa.string(), T.BinaryType: pa.binary(), T.IntegerType: pa.int32(),
              T.LongType: pa.int64(), T.FloatType: pa.float32(), T.DoubleType: pa.float64(),
              T.BooleanType: pa.bool_(), T.TimestampType: pa.timestamp("us", tz="UTC")}  # fmt: skip
    for kind, arrow in simple.items():
        if isinstance(st, kind):
            return arrow
    raise TypeError(f"no Arrow type for Spark type {st.simpleString()}")


def describe(fields: tuple[Field, ...]) -> list[dict[str, object]]:
    """JSON-friendly description of a schema (written into manifests)."""
    return [
        {"name": f.name, "type": f.spark_type.simpleString(), "dtype": f.numpy_dtype, "shape": list(f.shape),
         "codec": f.codec, "nullable": f.nullable, "doc": f.doc}
        for f in fields
    ]  # fmt: skip


AITEX_DEFECT_CODES: dict[int, str] = {
    0: "good",
    2: "broken_end",
    6: "broken_yarn",
    10: "broken_pick",
    16: "weft_curling",
    19: "fuzzyball",
    22: "cut_selvage",
    23: "crease",
    25: "warp_ball",
    27: "knots",
    29: "contamination",
    30: "nep",
    36: "weft_crack",
}
"""AITEX defect codes (the middle number of ``nnnn_ccc_ss.png``) and their names."""
