"""Input pipelines: petastorm shards of an ingested split → ``tf.data`` on each Horovod rank,
and pandas frames of a split for evaluation on the driver.

Petastorm's ``make_batch_reader`` reads the plain Parquet that ingest writes. It hands a
binary (PNG) column to TensorFlow as ``tf.string`` and an ``array<float>`` column as a
float matrix, one Parquet row group at a time; ``rows`` unbatches that into single rows
(dicts of tensors keyed by column), which is what ``Task.parse_row`` takes. Only the
rows of a few row groups are in memory at once: the pipeline streams.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkvision import storage

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

    from sparkvision.config import TrainConfig
    from sparkvision.models.base import Meta, Task

READER_THREADS = 1
"""Petastorm reader threads per rank. The one thread already reads Parquet ahead of training
(PNG decoding happens later, in ``tf.data`` behind a prefetch), and it keeps the row order of
a seed repeatable, which more threads would not."""


@dataclass(frozen=True)
class SplitInfo:
    """What the Parquet footers of one split say: files, rows and row groups.

    ``path`` and ``files`` are URLs (``file:///...`` for local datasets, else as the user gave the
    dataset): petastorm and the driver's footer reads open them through their filesystem.
    """

    split: str
    path: str
    files: tuple[str, ...]
    rows: int
    row_groups: int

    @property
    def url(self) -> str:
        """The URL petastorm reads, as is (``file:///abs/...`` unescaped: ``split=`` stays readable)."""
        return self.path


def inspect_split(data_dir: str | Path, split: str) -> SplitInfo:
    """Count rows and row groups of ``data_dir/data/split=<split>`` from the Parquet footers.

    Args:
        data_dir: An ingested dataset (its current version is read) or one version folder, a
            local path or URL.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The split's files, rows and row groups (all zero when the folder is missing or empty).
    """
    from sparkvision.data import publish

    current = publish.resolve(data_dir)  # a dataset's pointer, or already one version folder
    root = current.location if current is not None else storage.location(data_dir)
    folder = root.join("data", f"split={split}")
    files = tuple(folder.join(f).url for f in folder.files(recursive=False) if f.endswith(".parquet"))
    rows = groups = 0
    for file in files:
        meta = _parquet_file(file).metadata
        rows += meta.num_rows
        groups += meta.num_row_groups
    return SplitInfo(split=split, path=folder.url, files=files, rows=rows, row_groups=groups)


def _parquet_file(url: str) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` of ``url`` opened through ``storage``."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(storage.location(url).open_input())


def check_shardable(info: SplitInfo, workers: int) -> None:
    """Fail early when petastorm could not give every rank at least one row group.

    Raises:
        ValueError: naming the split folder, its row groups and the workers asked for.
    """
    if info.rows == 0:
        raise ValueError(f"{info.path}: expected Parquet rows for split '{info.split}', found none")
    if info.row_groups < workers:
        raise ValueError(
            f"{info.path}: split '{info.split}' has {info.row_groups} Parquet row group(s) in "
            f"{len(info.files)} file(s) but {workers} workers were asked for; petastorm shards by row "
            f"group, so each worker needs one. Re-ingest with ingest.min_row_groups >= {workers} "
            f"or train with fewer workers."
        )


def steps_for(rows: int, batch_size: int, workers: int, configured: int) -> int:
    """Steps per epoch: ``configured`` when set, else one pass over ``rows`` by all workers (>= 1)."""
    if configured > 0:
        return configured
    return max(1, rows // (batch_size * workers))


@contextlib.contextmanager
def rows(
    info: SplitInfo,
    columns: Sequence[str],
    *,
    rank: int,
    size: int,
    seed: int,
) -> Iterator[tf.data.Dataset]:
    """An endless stream of this rank's rows of a split, as dicts of tensors keyed by column.

    The reader loops over the rank's row groups (``num_epochs=None``) in an order shuffled
    per pass; it is stopped when the context exits.

    Args:
        info: The split (from ``inspect_split``).
        columns: Parquet columns to read (``Task.columns``).
        rank: This Horovod rank; petastorm reads shard ``rank`` of ``size``.
        size: Horovod world size.
        seed: Seed of the row-group order.

    Yields:
        A ``tf.data.Dataset`` of single rows: string tensors for binary/string columns,
        float32 vectors for float arrays, integers as stored.
    """
    import tensorflow as tf
    from petastorm import make_batch_reader
    from petastorm.tf_utils import make_petastorm_dataset

    with warnings.catch_warnings():
        # "id" would have matched "identity" as a regex in petastorm < 0.12: names match whole now
        warnings.filterwarnings("ignore", message="schema_fields behavior has changed", category=UserWarning)
        reader = make_batch_reader(
            info.url,
            schema_fields=list(columns),
            cur_shard=rank,
            shard_count=size,
            num_epochs=None,
            shuffle_row_groups=True,
            seed=seed,
            reader_pool_type="thread",
            workers_count=READER_THREADS,
            results_queue_size=4,
        )
    try:

        def as_dict(batch: Any) -> dict[str, tf.Tensor]:
            # petastorm yields a namedtuple per row group; float arrays may come as float64
            return {name: tf.cast(value, tf.float32) if value.dtype == tf.float64 else value
                    for name, value in batch._asdict().items()}  # fmt: skip

        # the next row groups are read and converted while this one is parsed
        with warnings.catch_warnings():  # string columns (``id``) arrive as bytes, which is what we hash
            warnings.filterwarnings("ignore", message="Tensorflow will convert all unicode", category=UnicodeWarning)
            batches = make_petastorm_dataset(reader).map(as_dict).prefetch(2)
        yield batches.unbatch()
    finally:
        reader.stop()
        reader.join()


class InputClock:
    """When each training batch left the input pipeline: ``training_dataset``'s last step stamps it.

    That step runs in the consumer's ``GetNext``, inside the training step, so a stamp minus the
    step's start is how long the step waited for data (``callbacks.EpochTimer``:
    ``input_wait_fraction``).
    """

    def __init__(self) -> None:
        self.last = 0.0

    def _stamp(self) -> float:
        self.last = time.perf_counter()
        return self.last

    def mark(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """``ds`` with each element stamped as the consumer takes it."""
        import tensorflow as tf

        def stamp(*batch: Any) -> Any:
            with tf.control_dependencies([tf.py_function(self._stamp, [], tf.float64)]):
                out = tf.nest.map_structure(tf.identity, batch)
            return out if len(out) > 1 else out[0]

        return ds.map(stamp)


def training_dataset(
    stream: tf.data.Dataset, task: Task, meta: Meta, cfg: TrainConfig, *, seed: int, clock: InputClock | None = None
) -> tf.data.Dataset:
    """Rows → filtered, parsed (with augmentation), shuffled, batched ``(x, y)`` batches.

    Each row gets a stateless augmentation seed (``common.AUGMENT_SEED``) from ``seed``, its
    position in this rank's stream (so every pass over the data augments differently) and a hash
    of its ``id`` when the stream has one; the parse/augment map then runs in parallel and a run
    still repeats for a seed.

    Args:
        stream: Endless rows from ``rows``.
        task: The model family.
        meta: Its meta (``Task.prepare_meta``).
        cfg: The ``train`` section (batch size, shuffle buffer).
        seed: Seed of the augmentation and of the shuffle buffer (differs per rank).
        clock: Stamps each batch as training takes it (``InputClock``).
    """
    import tensorflow as tf

    from sparkvision.models.common import AUGMENT_SEED

    base = tf.constant([seed, 0x5EED], dtype=tf.int64)

    def seeded_parse(position: tf.Tensor, row: dict[str, tf.Tensor]) -> tuple[Any, Any]:
        row_seed = tf.random.experimental.stateless_fold_in(base, position)
        if "id" in row:
            row_seed = tf.random.experimental.stateless_fold_in(
                row_seed, tf.strings.to_hash_bucket_fast(row["id"], 2**62)
            )
        return task.parse_row({**row, AUGMENT_SEED: row_seed}, meta, cfg, True)

    # Seed and parse in one parallel map: a sequential seeding map before it ran one more
    # function per row, on one thread.
    ds = stream.filter(task.keep_for_training).enumerate()
    ds = ds.map(seeded_parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cfg.shuffle_buffer > 0:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return clock.mark(ds) if clock is not None else ds


def validation_dataset(
    stream: tf.data.Dataset, task: Task, meta: Meta, cfg: TrainConfig, steps: int
) -> tf.data.Dataset:
    """The first ``steps`` batches of this rank's validation rows, the same ones every epoch.

    The raw rows (PNG bytes, small) are cached after the first pass, so every epoch is scored
    on identical data (what early stopping and reduce-on-plateau compare) without reopening
    the reader. The training filter applies, so ``val_loss`` measures the training objective.
    """
    import tensorflow as tf

    ds = stream.filter(task.keep_for_training).take(steps * cfg.batch_size).cache()
    ds = ds.map(lambda row: task.parse_row(row, meta, cfg, False), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)  # fmt: skip
    return ds.batch(cfg.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def read_frame(info: SplitInfo, columns: Sequence[str] | None, limit: int) -> pd.DataFrame:
    """The first ``limit`` rows of a split (file order) as pandas, reading ``columns`` (None: all).

    Row groups are read one at a time and reading stops at ``limit``, so a large split is
    never loaded whole.
    """
    import pandas as pd
    import pyarrow as pa

    tables: list[Any] = []
    remaining = limit
    for file in info.files:
        pf = _parquet_file(file)
        for group in range(pf.metadata.num_row_groups):
            if remaining <= 0:
                break
            table = pf.read_row_group(group, columns=None if columns is None else list(columns))
            tables.append(table.slice(0, remaining))
            remaining -= min(remaining, table.num_rows)
    if not tables:
        return pd.DataFrame({c: [] for c in columns or ()})
    return pa.concat_tables(tables).to_pandas()


def read_columns(info: SplitInfo, columns: Sequence[str]) -> pd.DataFrame:
    """Every row of a split, only ``columns`` (small target columns, never ``image``)."""
    import pandas as pd
    import pyarrow as pa

    if not info.files:
        return pd.DataFrame({c: [] for c in columns})
    return pa.concat_tables([_parquet_file(f).read(columns=list(columns)) for f in info.files]).to_pandas()
