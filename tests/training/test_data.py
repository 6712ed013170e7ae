"""The petastorm → tf.data input pipeline and the split checks, on a small Parquet dataset
written here with the exact ``schema.CELEBA`` columns (no Spark, no Horovod), and on the
shards of a folder data set ingested by Spark (conftest ``folder_parquet``)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sparkvision.data import publish, schema
from sparkvision.training import data


def write_split(root: Path, split: str, rows: int, rows_per_group: int, size: int = 8, start: int = 0) -> None:
    """``rows`` CELEBA rows in one file, ``rows_per_group`` rows per row group; row ``i`` has a flat
    image of grey level ``i`` and ``identity == i`` so tests can tell rows apart."""
    records = []
    for i in range(start, start + rows):
        buf = io.BytesIO()
        Image.fromarray(np.full((size, size, 3), i % 256, np.uint8)).save(buf, "PNG")
        records.append({"id": f"{i:06d}.jpg", "image": buf.getvalue(), "height": size, "width": size, "channels": 3,
                        "source_path": f"/in/{i:06d}.jpg", "content_hash": f"h{i}",
                        "attributes": [float(i % 2)] * 40, "bbox": [0.1, 0.2, 0.8, 0.9],
                        "landmarks": [0.5] * 10, "identity": i})  # fmt: skip
    arrow_schema = pa.schema(
        [(f.name, pa.list_(pa.float32()) if f.spark_type.typeName() == "array" else
          {"string": pa.string(), "binary": pa.binary(), "integer": pa.int32()}[f.spark_type.typeName()])
         for f in schema.CELEBA]
    )  # fmt: skip
    folder = root / "data" / f"split={split}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=arrow_schema), folder / "part-00000.parquet",
                   row_group_size=rows_per_group)  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    write_split(root, "train", rows=40, rows_per_group=10)
    write_split(root, "val", rows=6, rows_per_group=6, start=100)
    return root


def test_inspect_split_counts_rows_and_row_groups(dataset: Path) -> None:
    train = data.inspect_split(dataset, "train")
    assert (train.rows, train.row_groups, len(train.files)) == (40, 4, 1)
    assert data.inspect_split(dataset, "test").rows == 0


@pytest.mark.parametrize(("split", "workers", "ok"), [("train", 4, True), ("train", 5, False), ("val", 2, False)])
def test_check_shardable_fails_early_naming_the_split(dataset: Path, split: str, workers: int, ok: bool) -> None:
    info = data.inspect_split(dataset, split)
    if ok:
        data.check_shardable(info, workers)
        return
    with pytest.raises(
        ValueError, match=rf"split={split}.*{info.row_groups} Parquet row group\(s\).*{workers} workers"
    ):
        data.check_shardable(info, workers)


@pytest.mark.parametrize(("rows", "batch", "workers", "configured", "expected"),
                         [(40, 8, 2, 0, 2), (40, 8, 2, 7, 7), (3, 8, 2, 0, 1), (64, 4, 1, 0, 16)])  # fmt: skip
def test_steps_for(rows: int, batch: int, workers: int, configured: int, expected: int) -> None:
    assert data.steps_for(rows, batch, workers, configured) == expected


def test_rows_stream_png_bytes_and_float_arrays_per_shard(dataset: Path) -> None:
    """Each rank reads whole row groups of its own shard, endlessly; the binary column arrives
    as PNG bytes and arrays as float32 vectors."""
    import tensorflow as tf

    info = data.inspect_split(dataset, "train")
    seen: list[set[int]] = []
    for rank in range(2):
        with data.rows(info, ("image", "attributes", "identity"), rank=rank, size=2, seed=3) as stream:
            assert stream.element_spec["image"].dtype == tf.string
            assert stream.element_spec["attributes"].dtype == tf.float32
            rows = list(stream.take(50).as_numpy_iterator())  # more than the shard: the stream loops
        ids = [int(r["identity"]) for r in rows]
        for r in rows[:3]:
            pixels = np.asarray(Image.open(io.BytesIO(r["image"])))
            assert pixels.shape == (8, 8, 3) and int(pixels[0, 0, 0]) == int(r["identity"])
            assert r["attributes"].shape == (40,) and r["attributes"][0] == int(r["identity"]) % 2
        assert len(set(ids)) == 20  # two of the four row groups, each row seen
        seen.append(set(ids))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(40))


def test_read_frame_stops_at_the_limit(dataset: Path) -> None:
    frame = data.read_frame(data.inspect_split(dataset, "train"), ["id", "identity"], 15)
    assert list(frame.columns) == ["id", "identity"]
    assert frame["identity"].tolist() == list(range(15))


def test_every_rank_starts_with_every_class_of_an_ingested_folder(folder_parquet: Path) -> None:
    """The folder images are class-sorted on disk; ingest deals each class over every file, so
    each rank's shard, and already its first rows, hold every class (not a run of a few)."""
    classes = json.loads((Path(publish.current(folder_parquet).location.path) / "manifest.json").read_text())["classes"]
    info = data.inspect_split(folder_parquet, "train")
    assert info.row_groups == 2
    first_ids: list[set[bytes]] = []
    for rank in range(2):
        with data.rows(info, ("id", "label"), rank=rank, size=2, seed=0) as stream:
            first = list(stream.take(16).as_numpy_iterator())
        assert {int(r["label"]) for r in first} == set(range(len(classes))), f"rank {rank}"
        first_ids.append({r["id"] for r in first})
    assert first_ids[0].isdisjoint(first_ids[1])
