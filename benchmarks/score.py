"""Batch scoring throughput and memory: ``sparkvision.scoring.score`` on local[2] against
(a) the same Keras model's ``predict`` on the same images already decoded in memory in one
process (the local limit; decoding is not timed) and (b) Horovod's row-wise
``horovod.spark.keras.KerasModel.transform`` (the peer, timed on a subset).

    .venv/bin/python benchmarks/score.py --count 10000 --memory-counts 10000,40000 --rounds 3

Images are a pool of generated faces (``generate_new_images``: mixed JPEG/PNG/grey/RGBA/EXIF,
178x218 scaled 0.6-2x) hard-linked under distinct names up to ``--count`` files.

Every scoring run is a cold start, as ``sparkvision score`` is: a fresh spawned process builds
the session ``sparkvision score`` builds (``score.spark_conf`` over ``spark.conf``), so its
Python workers, TensorFlow and model all start inside the job and its JVM runs its first query
there. Its ``seconds`` leave out the session's own start, as the summary ``score`` writes does.
Peak memory is the sum of the RSS of that process and all its descendants (the JVM and the Python
workers), sampled every 0.1 s while ``score`` runs; the MLflow server and (a) live in other
processes. (a) runs before the first scoring run and after every one, and each run's ratio is
taken against the (a) runs just before and after it (``results.bracketed``): the machine's speed
drifts between minutes. Every size runs once, then ``--count`` again until it has ``--rounds``
runs (median and range printed).

The bound: scoring must decode every image and predict it, (a) only predicts. One process on one
core measures both costs (``in_memory`` with one thread); two cores cannot score faster than
``2 / (decode + predict)``, whatever the code around them. The benchmark prints that bound as a
share of (a) and how much of it each size reaches.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_images(folder: Path, count: int, pool: int, seed: int = 0) -> list[Path]:
    """``count`` image files: ``pool`` generated ones, hard-linked (copied across filesystems) to fill up."""
    from sparkvision.data.generators.celeba import generate_new_images

    src = folder / "_pool"
    if not src.is_dir() or len(list(src.iterdir())) < min(pool, count):
        shutil.rmtree(src, ignore_errors=True)
        generate_new_images(src, min(pool, count), seed)
    base = sorted(src.iterdir())
    out = folder / f"n{count}"
    if not out.is_dir() or len(list(out.iterdir())) != count:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for i in range(count):
            p = base[i % len(base)]
            dst = out / f"img_{i:06d}{p.suffix}"
            try:
                os.link(p, dst)
            except OSError:
                shutil.copy(p, dst)
    return sorted(out.iterdir())


class PeakRss:
    """Samples, every ``interval`` s in a thread, the RSS of this process plus its descendants
    (the JVM and its Python workers). ``peak`` in bytes, and ``parts`` at that moment (driver,
    JVM, Python workers)."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self.parts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            parts = {"driver": self.proc.memory_info().rss, "jvm": 0, "python_workers": 0}
            for child in self.proc.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                    parts["jvm" if "java" in child.name().lower() else "python_workers"] += rss
                except psutil.Error:
                    continue
            total = sum(parts.values())
            if total > self.peak:
                self.peak, self.parts = total, parts
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _in_memory_in_child(uri: str, files: list[Path], batch_size: int, threads: int, queue: Any) -> None:
    queue.put(in_memory(uri, files, batch_size, threads))


def _register_in_child(task_name: str, image_size: int, uri: str, queue: Any) -> None:
    from sparkvision.tracking import Tracking

    queue.put(register_model(task_name, image_size, Tracking(uri)))


def in_child(target: Any, *args: Any) -> Any:
    """``target(*args, queue)`` in a spawned child process; what it put on the queue.

    Building the model, (a) and each scoring run happen there, so this process never imports
    TensorFlow nor holds a JVM: each run's RSS and cores are its own.

    Raises:
        RuntimeError: The child exited without a result (its traceback is on stderr).
    """
    import multiprocessing as mp
    from queue import Empty

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, queue))
    child.start()
    while True:
        try:
            value = queue.get(timeout=1)
            break
        except Empty:
            if not child.is_alive():
                try:
                    value = queue.get(timeout=1)
                    break
                except Empty:
                    raise RuntimeError(f"{target.__name__} in child pid {child.pid} exited with code {child.exitcode} "
                                       "and no result") from None  # fmt: skip
    child.join()
    return value


def register_model(task_name: str, image_size: int, tracking: Any) -> str:
    """Build ``task_name`` (random weights), log and register it with ``Tracking.log_model``, alias ``candidate``."""
    from sparkvision.config import load_config
    from sparkvision.models import REGISTRY

    cfg = load_config("base", [f"train.image_size={image_size}"]).train
    task = REGISTRY[task_name]
    meta = task.prepare_meta({"table": "celeba", "image_size": image_size, "output": "benchmark"}, cfg)
    model = task.build(cfg, meta).model
    name = f"bench-{task_name}-{image_size}"
    run_id = tracking.create_run("benchmark-score", name)
    ref = tracking.log_model(run_id, model, task_name, meta, name, "candidate")
    tracking.finish_run(run_id)
    return ref.uri


def in_memory(uri: str, files: list[Path], batch_size: int, threads: int = 0) -> dict[str, float]:
    """The model on images decoded in memory in one process: (a), and the costs behind the bound.

    Args:
        threads: TensorFlow's threads (0: its default, every core: (a)); 1 for the one-core costs.

    Returns:
        ``images_per_s``: ``predict`` on the decoded images, wall time (decoding not timed); and
        ``decode_ms`` / ``predict_ms``: CPU time (``process_time``, every thread of the process) an
        image takes to decode and resize, and to predict. Scoring must do both for every image, so
        on ``cores`` cores no scorer, however lean, beats ``cores / (decode_ms + predict_ms)``
        images per ms; (a) does only the predict, on every core.
    """
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from sparkvision.data.images import prepare_image
    from sparkvision.models.packaging import load_vision_model

    model, meta, task = load_vision_model(uri)
    size, crop = int(meta["image_size"]), meta.get("crop", "center_square")
    data = [p.read_bytes() for p in files]
    cpu, wall = time.process_time(), time.perf_counter()
    x = np.stack([prepare_image(b, size, crop) for b in data])
    decode_cpu, decode_s = time.process_time() - cpu, time.perf_counter() - wall
    task.predict(model, x[:batch_size], meta)  # warm-up (graph tracing)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(0, len(x), batch_size):
        task.predict(model, x[i : i + batch_size], meta)
    predict_cpu, predict_s = time.process_time() - cpu, time.perf_counter() - wall
    print(f"    one process, TensorFlow threads {threads or 'default'}: decode+resize {len(files) / decode_s:,.0f} "
          f"images/s, predict {len(files) / predict_s:,.0f} images/s, both "
          f"{len(files) / (decode_s + predict_s):,.0f} images/s")  # fmt: skip
    return {"images_per_s": len(files) / predict_s, "decode_ms": decode_cpu * 1000 / len(files),
            "predict_ms": predict_cpu * 1000 / len(files)}  # fmt: skip


def horovod_peer(spark: Any, model: Any, files: list[Path], meta: dict, task: Any) -> float:
    """(b) images/s of ``horovod.spark.keras.KerasModel.transform`` on pre-decoded flattened images."""
    from horovod.spark.keras import KerasModel
    from pyspark.ml.linalg import DenseVector
    from pyspark.sql import types as T

    from sparkvision.data.images import prepare_image

    size, crop = int(meta["image_size"]), meta.get("crop", "center_square")
    rows = [(p.name, prepare_image(p.read_bytes(), size, crop).reshape(-1).tolist()) for p in files]
    schema = T.StructType([T.StructField("id", T.StringType()), T.StructField("features", T.ArrayType(T.FloatType()))])
    df = spark.createDataFrame(rows, schema).repartition(spark.sparkContext.defaultParallelism).cache()
    df.count()
    out_dim = int(np.prod(model.outputs[0].shape[1:]))
    peer = KerasModel(
        model=model,
        feature_columns=["features"],
        label_columns=["prediction"],
        _metadata={"prediction": {"spark_data_type": DenseVector, "shape": out_dim}},
        _floatx="float32",
    )
    t0 = time.perf_counter()
    n = peer.transform(df).select("id", "prediction__output").count()
    seconds = time.perf_counter() - t0
    df.unpersist()
    assert n == len(files)
    return len(files) / seconds


CORES = 2
"""Cores of every session here (``local[2]``), and of the bound."""


def scoring_session(env: str, app_name: str) -> Any:
    """The session ``sparkvision score`` builds (``score.spark_conf`` over ``spark.conf``), on ``local[CORES]``."""
    from sparkvision.config import load_config
    from sparkvision.spark import get_spark

    return get_spark(dataclasses.replace(load_config(env).scoring_spark, master=f"local[{CORES}]", app_name=app_name))


def score_cold(env: str, uri: str, folder: Path, out: Path, batch_size: int, records: int, tracking_uri: str,
               queue: Any) -> None:  # fmt: skip
    """One ``score`` in this fresh process (run by ``in_child``): its session, its JVM, its Python workers."""
    from sparkvision.config import ScoreConfig
    from sparkvision.scoring import score
    from sparkvision.tracking import Tracking

    spark = scoring_session(env, "bench-score")
    cfg = ScoreConfig(batch_size=batch_size, max_records_per_batch=records)
    try:
        with PeakRss() as mem:
            summary = score(spark, uri, str(folder), str(out), cfg, tracking=Tracking(tracking_uri))
    finally:
        spark.stop()
    summary["peak_rss_mb"] = mem.peak / 2**20
    summary["peak_parts_mb"] = {k: round(v / 2**20) for k, v in mem.parts.items()}
    queue.put(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="images scored for the throughput figures")
    parser.add_argument("--memory-counts", default="10000,40000", help="input sizes for the peak-memory check")
    parser.add_argument("--rounds", type=int, default=3, help="cold scoring runs of --count (each size runs once)")
    parser.add_argument("--peer-count", type=int, default=300, help="images for Horovod KerasModel.transform")
    parser.add_argument(
        "--bound-count", type=int, default=3000, help="images for the one-core decode and predict costs"
    )
    parser.add_argument("--pool", type=int, default=1000, help="distinct generated images")
    parser.add_argument("--task", default="attributes", help="model family from REGISTRY")
    parser.add_argument("--image-size", type=int, default=128, help="model input size (conf/base train.image_size)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-records-per-batch", type=int, default=256)
    parser.add_argument("--workdir", default="",
                        help="where images and outputs go, kept afterwards (default: a temp folder, removed)")  # fmt: skip
    parser.add_argument("--env", default="base", help="configuration layer (spark and score sections)")
    parser.add_argument("--tracking-uri", default="", help="MLflow server (default: start one on a free port)")
    args = parser.parse_args()

    from results import bracketed, record, row, spread

    from sparkvision.config import MlflowConfig
    from sparkvision.tracking import start_server, stop_server

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-score-"))
    work.mkdir(parents=True, exist_ok=True)
    server_state = None
    uri = args.tracking_uri
    if not uri:
        server_state = work / "mlflow"
        uri = start_server(MlflowConfig(port=0), server_state).url
    os.environ["MLFLOW_TRACKING_URI"] = uri  # for load_vision_model's registry URI below
    try:
        t0 = time.perf_counter()
        counts = sorted({args.count, *(int(c) for c in args.memory_counts.split(",") if c)})
        folders = {n: make_images(work / "images", n, args.pool)[0].parent for n in counts}
        print(f"images ready in {time.perf_counter() - t0:.0f}s: {counts} (pool of {args.pool} distinct faces)")
        model_uri = in_child(_register_in_child, args.task, args.image_size, uri)
        print(f"model: {model_uri} ({args.task}, {args.image_size}x{args.image_size}, random weights)")

        files = sorted(folders[args.count].iterdir())

        def limit_now() -> float:  # (a), in a child process
            return float(in_child(_in_memory_in_child, model_uri, files, args.batch_size, 0)["images_per_s"])

        limits = [limit_now()]
        print(
            f"(a) local limit, Keras predict on {len(files)} decoded images in one process: {limits[0]:,.0f} images/s"
        )
        plan = counts + [args.count] * max(0, args.rounds - 1)
        runs: list[tuple[int, dict[str, Any]]] = []
        for i, n in enumerate(plan):
            s = in_child(score_cold, args.env, model_uri, folders[n], work / f"scored-{n}-{i}", args.batch_size,
                         args.max_records_per_batch, uri)  # fmt: skip
            runs.append((n, s))
            print(f"score {n:>6} images, cold start: {s['seconds']:.1f}s, {s['images_per_s']:,.0f} images/s, "
                  f"failed {s['failed']}, peak RSS driver+JVM+workers {s['peak_rss_mb']:,.0f} MB "
                  f"({', '.join(f'{k} {v:,} MB' for k, v in s['peak_parts_mb'].items())})", flush=True)  # fmt: skip
            limits.append(limit_now())
            print(f"(a) again: {limits[-1]:,.0f} images/s", flush=True)
        # what no scorer on 2 cores can beat, bracketed by (a) like a scoring run
        costs = in_child(_in_memory_in_child, model_uri, files[: args.bound_count], args.batch_size, 1)
        decode_ms, predict_ms = costs["decode_ms"], costs["predict_ms"]
        bound = CORES * 1000 / (decode_ms + predict_ms)
        after = limit_now()
        (bound_ratio,) = bracketed([limits[-1], after], [bound])
        print(f"bound on {CORES} cores: decode+resize {decode_ms:.2f} + one-thread predict {predict_ms:.2f} ms of a core an "
              f"image -> {bound:,.0f} images/s = {bound_ratio:.2f} of (a) with no start-up, listing, Arrow or writing; "
              f"(a) again: {after:,.0f} images/s", flush=True)  # fmt: skip
        # each scoring run against the (a) runs just before and after it: the machine's speed drifts
        each = bracketed(limits, [s["images_per_s"] for _, s in runs])
        ratios = {n: [r for (m, _), r in zip(runs, each, strict=True) if m == n] for n in counts}
        rates = {n: [s["images_per_s"] for m, s in runs if m == n] for n in counts}
        rss = {n: max(s["peak_rss_mb"] for m, s in runs if m == n) for n in counts}
        limit = statistics.median([*limits, after])

        from sparkvision.models.packaging import load_vision_model

        model, meta, task = load_vision_model(model_uri)  # in this process only now, after scoring
        peer_files = files[: args.peer_count]
        spark = scoring_session(args.env, "bench-score-peer")
        try:
            peer = horovod_peer(spark, model, peer_files, meta, task)
        finally:
            spark.stop()
        print(f"(b) Horovod KerasModel.transform on {len(peer_files)} pre-decoded images: {peer:,.1f} images/s")

        print("\n== summary ==")
        goals = {10_000: 0.8, 40_000: 0.9}
        figures = []
        for n in counts:
            ratio, ours, goal = statistics.median(ratios[n]), statistics.median(rates[n]), goals.get(n)
            print(f"sparkvision score ({n} files, local[{CORES}], cold start): {ours:,.0f} images/s = {spread(ratios[n])} "
                  "of (a)" + (f" (goal >= {goal})" if goal else "") + "; includes start-up, decode, resize, reading, "
                  "hashing, writing Parquet, model download")  # fmt: skip
            figures += [
                row("score", str(n), "images/s, cold score / in-memory predict (the (a) runs around it; median)", ratio,
                    f">= {goal}" if goal else "", ratio >= goal if goal else None),
                row("score", str(n), "same, lowest run", min(ratios[n])),
                row("score", str(n), "peak RSS driver+JVM+workers, MB (highest run)", rss[n], "<= 3584",
                    rss[n] <= 3584),
                row("score", str(n), "score images/s, median", ours),
            ]  # fmt: skip
        ours = statistics.median(rates[args.count])
        print(f"speed-up over (b) Horovod KerasModel.transform at {args.count}: {ours / peer:.1f}x   (goal >= 15x)")
        print(f"bound with no fixed or transfer costs: {bound_ratio:.2f} of (a); the median run reaches "
              f"{statistics.median(ratios[args.count]) / bound_ratio:.2f} of it at {args.count} files, "
              f"{statistics.median(ratios[max(counts)]) / bound_ratio:.2f} at {max(counts)}")  # fmt: skip
        figures += [row("score", "any", "bound: 2 cores / (decode + one-thread predict), of (a)", bound_ratio),
                    row("score", "any", "decode+resize, ms of a core an image", decode_ms),
                    row("score", "any", "one-thread predict, ms of a core an image", predict_ms),
                    row("score", str(args.count), "speed-up over Horovod KerasModel.transform", ours / peer, ">= 15",
                        ours / peer >= 15),
                    row("score", str(args.count), "in-memory predict images/s (a), median", limit)]  # fmt: skip
        mems = ", ".join(f"{n}: {rss[n]:,.0f} MB" for n in counts)
        print(f"peak RSS by input size: {mems}   (goal <= 3,584 MB at 40,000 and no growth with input)")
        record("score", figures)
    finally:
        if server_state is not None:
            stop_server(server_state)
        if not args.workdir:  # a folder of our own: its images, outputs and MLflow state go with it
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
