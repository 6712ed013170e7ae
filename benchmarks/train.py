"""Horovod-on-Spark training throughput against plain single-process Keras, same model and data.

    .venv/bin/python benchmarks/train.py [--images 1536] [--size 64] [--batch 32] [--epochs 5] [--rounds 3]

(a) ``model.fit`` in one process on in-memory float arrays (all cores);
(b) ``sparkvision.training.train`` with 1 and 2 Horovod workers (``--workers``) on local Spark, streaming PNG rows
    from Parquet through petastorm, with checkpoints and MLflow logging every epoch.
Both train the VAE with the same per-process batch size on the same images; steady-state
images/s is taken from the epochs after the first (start-up is printed separately). (a) runs
first and again after every round of (b) runs, and each (b) is compared with the mean of the
(a) runs just before and after it (``results.bracketed``): the ratio printed is the median over
rounds, with its range. Last,
the VAE at 128x128 is timed for a few steps with (b) and extrapolated to seconds per epoch
of 10,000 images. Generates its own CelebA-format data and starts its own MLflow server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sparkvision.config import Config, MlflowConfig, load_config


def _ingest(spark, src: Path, out: Path, cfg: Config, size: int, row_groups: int) -> Path:
    from sparkvision.data.ingest import ingest

    ingest_cfg = cfg.replace(**{"ingest.image_size": str(size), "ingest.min_row_groups": str(row_groups)}).ingest
    ingest(spark, "celeba", str(src), str(out), ingest_cfg, workers=2)
    return out


def in_memory_images(cfg: Config, data_dir: Path) -> Any:
    """The train split as the float array (a) fits, read once for every round."""
    from sparkvision.models import get_task
    from sparkvision.training import data

    task = get_task(cfg.train.model)
    meta = task.prepare_meta({"table": "celeba", "image_size": cfg.train.image_size}, cfg.train)
    x, _ = task.arrays(data.read_frame(data.inspect_split(data_dir, "train"), None, 10**9), meta)
    return x


def plain_keras(cfg: Config, x: Any, epochs: int) -> dict[str, float]:
    """(a): one process, the in-memory images ``x``, ``fit`` with a per-epoch timer."""
    import tensorflow as tf

    from sparkvision.models import get_task
    from sparkvision.training.optim import make_optimizer

    task = get_task(cfg.train.model)
    meta = task.prepare_meta({"table": "celeba", "image_size": cfg.train.image_size}, cfg.train)
    tf.keras.utils.set_random_seed(cfg.train.seed)
    start = time.perf_counter()
    model = task.build(cfg.train, meta).compile(make_optimizer(cfg.train, 1))
    times: list[float] = []

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    steps = len(x) // cfg.train.batch_size
    ds = tf.data.Dataset.from_tensor_slices((x, x)).shuffle(len(x), seed=0).repeat()
    ds = ds.batch(cfg.train.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    model.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[Timer()])
    images = steps * cfg.train.batch_size
    return {"images_per_epoch": images, "startup_s": times[0] - statistics.median(times[1:]),
            "total_s": time.perf_counter() - start, "images_per_s": images / statistics.median(times[1:])}  # fmt: skip


def horovod_spark(spark, cfg: Config, data_dir: Path) -> dict[str, float]:
    """(b): ``train`` with Horovod on Spark; figures from the run's per-epoch metrics."""
    from sparkvision.training import train

    start = time.perf_counter()
    result = train(spark, cfg, str(data_dir), resume=False)
    total = time.perf_counter() - start
    per_epoch = result["history"]["images_per_s"]
    epoch_times = result["history"]["epoch_time_s"]
    steady = statistics.median(per_epoch[1:])
    wait = statistics.median(result["history"].get("input_wait_fraction", [0.0, 0.0])[1:])
    return {"images_per_epoch": cfg.train.steps_per_epoch * cfg.train.batch_size * cfg.train.workers,
            "images_per_s": steady, "input_wait_fraction": wait, "first_epoch_s": epoch_times[0], "steady_epoch_s": statistics.median(epoch_times[1:]),
            "total_s": total}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1536, help="generated CelebA images (about 80%% train)")
    parser.add_argument("--size", type=int, default=64, help="image side for (a) and (b)")
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="per-process batch size")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of (a) and (b); the first is start-up")
    parser.add_argument("--steps-128", type=int, default=6, help="steps per epoch when timing 128x128")
    parser.add_argument("--workers", type=lambda v: [int(w) for w in v.split(",")], default=[1, 2],
                        help="Horovod worker counts of (b), one run each per round")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of (b); (a) runs before the first and after every round, and each (b) "
                             "is compared with the (a) runs just before and after it")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for (a) and (b), e.g. train.shuffle_buffer=0 (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)

    from results import bracketed, record, row, spread

    from sparkvision import tracking
    from sparkvision.data.generators.celeba import generate_celeba
    from sparkvision.spark import get_spark
    from sparkvision.training import data

    base = load_config("test")
    with tempfile.TemporaryDirectory(prefix="sv-bench-train-") as tmp:
        root = Path(tmp)
        server = tracking.start_server(MlflowConfig(port=0), root / "mlflow")
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        try:
            spark = get_spark(base.spark)
            generate_celeba(root / "src", count=args.images, seed=0, images_per_identity=8)
            small = _ingest(spark, root / "src", root / "ds-small", base, args.size, row_groups=4)
            big = _ingest(spark, root / "src", root / "ds-128", base, 128, row_groups=4)
            rows = data.inspect_split(small, "train").rows
            common = {"train.model": "vae", "train.image_size": str(args.size), "train.latent_dim": str(args.latent),
                      "train.batch_size": str(args.batch), "train.epochs": str(args.epochs), "train.warmup_epochs": "0",
                      "train.validation_steps": "1", "train.pictures": "false", "paths.store": str(root / "store"),
                      "train.experiment": "benchmark-train", "train.shuffle_buffer": "256",
                      # (a) fits plain arrays: (b) must do the same work, so no augmentation in either
                      "train.augment_flip": "false", "train.augment_shift": "0", "train.augment_color": "0",
                      **dict(item.split("=", 1) for item in args.set)}  # fmt: skip
            cfg_a = base.replace(**common, **{"train.workers": "1"})
            cfg_b = {workers: base.replace(**common, **{
                "train.workers": str(workers), "train.steps_per_epoch": str(max(1, rows // (args.batch * workers))),
                "train.registered_model_prefix": f"bench{workers}w"}) for workers in args.workers}  # fmt: skip
            x = in_memory_images(cfg_a, small)
            a = [plain_keras(cfg_a, x, args.epochs)]
            runs: dict[int, list[dict[str, float]]] = {workers: [] for workers in args.workers}
            for round_ in range(args.rounds):
                for workers in args.workers:
                    runs[workers].append(horovod_spark(spark, cfg_b[workers], small))
                a.append(plain_keras(cfg_a, x, args.epochs))
                print(f"round {round_ + 1}/{args.rounds}: (a) {a[-2]['images_per_s']:.0f} -> {a[-1]['images_per_s']:.0f} "
                      "images/s; " + ", ".join(f"(b) {w} worker(s) {runs[w][-1]['images_per_s']:.0f}" for w in args.workers),
                      flush=True)  # fmt: skip
            cfg_c = base.replace(**{**common, "train.image_size": "128", "train.latent_dim": "200", "train.epochs": "2",
                                    "train.workers": "2", "train.steps_per_epoch": str(args.steps_128),
                                    "train.registered_model_prefix": "bench128"})  # fmt: skip
            c = horovod_spark(spark, cfg_c, big)
        finally:
            tracking.stop_server(root / "mlflow")

    a_rates = [run["images_per_s"] for run in a]
    print(f"\nVAE {args.size}x{args.size} z={args.latent}, batch {args.batch} per process, {rows} train images, "
          f"{os.cpu_count()} cores, {args.rounds} round(s)")  # fmt: skip
    print(f"(a) plain Keras, 1 process, in-memory : {' / '.join(f'{r:.0f}' for r in a_rates)} images/s steady "
          f"({a[0]['images_per_epoch']} images/epoch; start-up {a[0]['startup_s']:.1f} s, total {a[0]['total_s']:.1f} s)")  # fmt: skip
    figures = [row("train", "in memory", "plain Keras images/s (a), median", statistics.median(a_rates))]
    for workers, worker_runs in runs.items():
        ratios = bracketed(a_rates, [b["images_per_s"] for b in worker_runs])
        ratio = statistics.median(ratios)
        wait = statistics.median(b["input_wait_fraction"] for b in worker_runs)
        goal = 0.9 if workers == 2 else None
        b = worker_runs[0]
        rates = " / ".join(f"{r['images_per_s']:.0f}" for r in worker_runs)
        print(f"(b) Horovod on Spark, {workers} worker(s)    : {rates} "
              f"images/s steady ({b['images_per_epoch']} images/epoch; first epoch {b['first_epoch_s']:.1f} s, steady "
              f"epoch {b['steady_epoch_s']:.1f} s, input wait {wait:.0%} of step time on rank 0, whole job incl. "
              f"Spark/Horovod start-up, eval, registry {b['total_s']:.1f} s)")  # fmt: skip
        print(
            f"ratio b/a, {workers} worker(s)             : {spread(ratios)}" + (f"  (goal >= {goal})" if goal else "")
        )
        figures += [
            row("train", f"{workers} workers", "images/s, Horovod on Spark / plain Keras (median of rounds)", ratio,
                f">= {goal}" if goal else "", ratio >= goal if goal else None),
            row("train", f"{workers} workers", "same, lowest round", min(ratios)),
            row("train", f"{workers} workers", "input_wait_fraction (rank 0, steady epochs)", wait),
        ]  # fmt: skip
    print(f"VAE 128x128 z=200, 2 workers           : {c['images_per_s']:8.1f} images/s -> "
          f"{10000 / c['images_per_s']:.0f} s per epoch of 10,000 images (from {args.steps_128} steps x "
          f"{args.batch} x 2 per epoch)")  # fmt: skip
    figures.append(row("train", "2 workers, 128px", "VAE z=200 images/s", c["images_per_s"]))
    record("train", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
