"""Ingest throughput: ``sparkvision.data.ingest.ingest`` on local[2] against a single-process
Pillow loop doing the same per-image work on the same files.

    .venv/bin/python benchmarks/ingest.py --counts 5000,20000

(a) baseline: one Python process reads every CelebA image, hashes it, decodes and validates it,
    converts to RGB, centre-crops, resizes to ``ingest.image_size`` and PNG-encodes it (the
    ``sparkvision.data.images`` functions ingest uses); nothing is written.
(b) ``ingest(spark, "celeba", ...)``: annotation parsing, the Spark job, quarantine, dedupe,
    the Parquet write and the atomic publish. The SparkSession is started and warmed up on a
    tiny data set first (not timed): start-up is not throughput.

(a) runs before the first (b) and after every one (``--rounds``), and each (b) is compared with
the mean of the (a) runs just before and after it (``results.bracketed``). Prints images/s of
each and the median ratio b/a, with its range, for each size (fixed and per-image costs apart) and
records them in ``runs/bench/ingest.json``. Generated data is cached in ``--data-dir``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparkvision.config import IngestConfig


def celeba_folder(data_dir: Path, count: int, seed: int = 0) -> Path:
    """A generated CelebA folder of ``count`` images, reused when it already holds that many."""
    from sparkvision.data.generators.celeba import generate_celeba

    out = data_dir / f"celeba-{count}-seed{seed}"
    attr = out / "list_attr_celeba.txt"
    if not (attr.is_file() and attr.read_text().split("\n", 1)[0].strip() == str(count)):
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        generate_celeba(out, count=count, seed=seed)
        print(f"generated {count} CelebA images in {time.perf_counter() - started:.1f}s -> {out}")
    return out


def pillow_loop(files: list[Path], size: int, compress_level: int) -> float:
    """Seconds for the single-process decode/validate/crop/resize/PNG-encode of ``files``."""
    from sparkvision.data import images

    started = time.perf_counter()
    for path in files:
        data = path.read_bytes()
        images.content_hash(data)
        img = images.to_rgb(images.decode_image(data, min_side=16))
        out = images.crop_resize(img, images.crop_box(img.width, img.height, "center_square"), size)
        images.encode_png(out, compress_level)
    return time.perf_counter() - started


def loop_rate(files: list[Path], cfg: IngestConfig) -> float:
    """(a) once: images/s of ``pillow_loop``, printed."""
    rate = len(files) / pillow_loop(files, cfg.image_size, cfg.png_compress_level)
    print(f"(a) single-process Pillow loop: {rate:8.1f} images/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="5000,20000", help="CelebA images to generate and ingest, one run each")
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "sparkvision-bench"),
                        help="cache folder for generated data")  # fmt: skip
    parser.add_argument("--env", default="base", help="configuration layer (ingest and spark sections)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="ingest runs per size; the loop runs before the first and after every one, and each "
                             "is compared with the loop runs just before and after it")  # fmt: skip
    args = parser.parse_args()

    from results import bracketed, record, row, spread

    from sparkvision.config import load_config
    from sparkvision.data.ingest import ingest
    from sparkvision.spark import get_spark

    cfg = load_config(args.env)
    data_dir = Path(args.data_dir)
    counts = [int(c) for c in args.counts.split(",") if c]
    goals = {5000: 1.3, 20000: 1.5}
    roots = {n: celeba_folder(data_dir, n) for n in counts}
    warm = celeba_folder(data_dir, 64)
    spark = get_spark(cfg.spark)
    workers = spark.sparkContext.defaultParallelism
    out_dir = Path(tempfile.mkdtemp(prefix="ingest-bench-", dir=data_dir))
    figures = []
    try:
        ingest(spark, "celeba", str(warm), str(out_dir / "warm"), cfg.ingest, workers=workers)  # start-up, not timed
        for n in counts:
            files = sorted((roots[n] / cfg.ingest.celeba_image_dir).glob("*.jpg"))
            print(f"{len(files)} images, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB, "
                  f"image_size={cfg.ingest.image_size}, png level {cfg.ingest.png_compress_level}")  # fmt: skip
            base_rates = [loop_rate(files, cfg.ingest)]
            spark_rates = []
            for round_ in range(args.rounds):
                started = time.perf_counter()
                out = out_dir / f"out-{n}-{round_}"
                manifest = ingest(spark, "celeba", str(roots[n]), str(out), cfg.ingest, workers=workers)
                spark_s = time.perf_counter() - started
                assert manifest["output_rows"] + manifest["quarantined"] == len(files), manifest
                spark_rates.append(len(files) / spark_s)
                shutil.rmtree(out, ignore_errors=True)
                print(f"(b) ingest on {cfg.spark.master} ({workers} cores): {spark_s:7.2f}s  {spark_rates[-1]:8.1f} "
                      f"images/s  ({manifest['output_rows']} rows, {manifest['quarantined']} quarantined, files per "
                      f"split {manifest['files_per_split']})", flush=True)  # fmt: skip
                base_rates.append(loop_rate(files, cfg.ingest))
            ratios = bracketed(base_rates, spark_rates)
            ratio = statistics.median(ratios)
            goal = goals.get(n)
            print(f"ratio b/a at {n}: {spread(ratios, 'x')}"
                  + (f" (goal >= {goal}x; 2 cores bound it at 2.0x)" if goal else ""))  # fmt: skip
            figures += [
                row("ingest", str(n), "images/s, ingest / single-process Pillow loop (median of rounds)", ratio,
                    f">= {goal}" if goal else "", ratio >= goal if goal else None),
                row("ingest", str(n), "same, lowest round", min(ratios)),
                row("ingest", str(n), "ingest images/s, median", statistics.median(spark_rates)),
                row("ingest", str(n), "Pillow loop images/s, median", statistics.median(base_rates)),
            ]  # fmt: skip
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    record("ingest", figures)


if __name__ == "__main__":
    main()
