"""The ``sparkvision`` console entry point. ``jobs/<job>.py`` forwards to the same parser,
so ``spark-submit jobs/ingest.py ARGS`` and ``sparkvision ingest ARGS`` are the same job.

Every command takes ``--env`` (configuration layer) and ``--set section.key=value``.
Handlers import their heavy modules lazily so ``sparkvision --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sparkvision.config import Config, ConfigError, load_config

log = logging.getLogger("sparkvision")

Handler = Callable[[argparse.Namespace, Config], int]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="base", help="configuration layer over conf/base (test, local, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration key, e.g. --set train.epochs=3 (repeatable)")  # fmt: skip


# --------------------------------------------------------------------------- handlers


def _generate(args: argparse.Namespace, cfg: Config) -> int:
    g = cfg.generate
    seed = g.seed if args.seed is None else args.seed
    out = Path(args.out)
    if args.dataset == "celeba":
        from sparkvision.data.generators.celeba import generate_celeba

        generate_celeba(out, count=args.count or g.celeba_count, seed=seed,
                        images_per_identity=g.celeba_images_per_identity)  # fmt: skip
    elif args.dataset == "fabric":
        from sparkvision.data.generators.fabric import generate_mvtec

        generate_mvtec(out, seed=seed, train_count=args.count or g.fabric_train_count,
                       test_count=g.fabric_test_count, image_size=g.fabric_image_size)  # fmt: skip
    else:
        from sparkvision.data.generators.fabric import generate_aitex

        generate_aitex(out, seed=seed, count=args.count or g.fabric_train_count, image_size=g.fabric_image_size)
    print(f"wrote {args.dataset} data to {out}")
    return 0


def _ingest(args: argparse.Namespace, cfg: Config) -> int:
    from sparkvision.data.ingest import ingest
    from sparkvision.spark import get_spark

    spark = get_spark(cfg.spark)
    manifest = ingest(spark, args.format, args.input, args.output, cfg.ingest, workers=cfg.train.workers)
    print(json.dumps({k: manifest[k] for k in ("output", "input_files", "output_rows", "quarantined",
                                               "quarantine_by_reason", "splits")}, indent=2))  # fmt: skip
    return 0


def _config(args: argparse.Namespace, cfg: Config) -> int:
    print(cfg.to_yaml(), end="")
    print(f"# env: {cfg.env}  digest: {cfg.digest()[:16]}")
    return 0


def _cluster(args: argparse.Namespace, cfg: Config) -> int:
    from sparkvision import cluster

    state = cfg.path("runs") / "cluster"
    if args.action == "up":
        info = cluster.up(cfg.cluster, state)
        print(f"Spark master {info.master_url} (web UI {info.webui_url}); stop with: sparkvision cluster down")
    elif args.action == "down":
        print(f"stopped {cluster.down(state)} process group(s)")
    else:
        status = cluster.status(state)
        print(json.dumps(status, indent=2))
        return 0 if status.get("running") else 1
    return 0


def _mlflow(args: argparse.Namespace, cfg: Config) -> int:
    from sparkvision import tracking

    state = cfg.path("mlflow")
    if args.action == "start":
        server = tracking.start_server(cfg.mlflow, state)
        print(f"MLflow UI: {server.url}  (stop with: sparkvision mlflow stop)")
    elif args.action == "stop":
        print("stopped" if tracking.stop_server(state) else "no server was running")
    else:
        status = tracking.server_status(state)
        print(json.dumps(status, indent=2))
        return 0 if status.get("running") else 1
    return 0


def _train(args: argparse.Namespace, cfg: Config) -> int:
    from sparkvision.spark import get_spark
    from sparkvision.training import train

    sets = {"train.model": args.model} if args.model else {}
    if args.workers:
        sets["train.workers"] = str(args.workers)
    cfg = cfg.replace(**sets) if sets else cfg
    spark = get_spark(cfg.spark)
    result = train(spark, cfg, data_dir=args.data, resume=args.resume)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _use_tracking_server(cfg: Config) -> str:
    """Point this process's MLflow client at the configured server (env, config or the project's)."""
    import os

    from sparkvision.tracking import tracking_uri

    os.environ["MLFLOW_TRACKING_URI"] = uri = tracking_uri(cfg)
    return uri


def _score(args: argparse.Namespace, cfg: Config) -> int:
    from sparkvision.scoring import score
    from sparkvision.spark import get_spark

    _use_tracking_server(cfg)
    spark = get_spark(cfg.spark)
    summary = score(spark, args.model_uri, args.input, args.output, cfg.score,
                    incremental=args.incremental or cfg.score.incremental)  # fmt: skip
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _faces(args: argparse.Namespace, cfg: Config) -> int:
    from sparkvision import faces
    from sparkvision.spark import get_spark

    _use_tracking_server(cfg)
    spark = get_spark(cfg.spark)
    if args.action == "enroll":
        result = faces.enroll(spark, args.model_uri or cfg.faces.model_uri, args.input, args.gallery, cfg.faces)
    else:
        result = faces.identify(spark, args.gallery, args.input, args.output, cfg.faces)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _report(args: argparse.Namespace, cfg: Config) -> int:
    from sparkvision.reporting import write_report

    uri = args.tracking_uri or _use_tracking_server(cfg)
    out = args.out or str(cfg.path("runs") / "reports" / f"{args.run}.html")
    path = write_report(args.run, out, tracking_uri=uri)
    print(f"report: {path}")
    return 0


def _pipeline(args: argparse.Namespace, cfg: Config) -> int:
    from sparkvision.pipeline import PipelineError, run_pipeline

    try:
        run_pipeline(args.file, cfg, only=args.only)
    except PipelineError as exc:
        print(f"sparkvision pipeline: {exc}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (shared with ``jobs/*.py``)."""
    parser = argparse.ArgumentParser(prog="sparkvision", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write a synthetic data set in a public on-disk format")
    p.add_argument("dataset", choices=["celeba", "fabric", "aitex"])
    p.add_argument("--out", required=True, help="folder to write (created)")
    p.add_argument("--count", type=int, default=0, help="images (celeba) or train/good images (fabric)")
    p.add_argument("--seed", type=int, default=None, help="seed; default generate.seed")
    p.set_defaults(handler=_generate)

    p = sub.add_parser("ingest", help="decode, validate, crop, resize, tile and label images into Parquet")
    p.add_argument("--format", required=True, choices=["celeba", "mvtec", "aitex", "folder"])
    p.add_argument("--input", required=True, help="root folder of the data set in its public layout")
    p.add_argument("--output", required=True, help="dataset folder to publish (replaced atomically)")
    p.set_defaults(handler=_ingest)

    p = sub.add_parser("config", help="print the resolved configuration")
    p.add_argument("action", choices=["show"])
    p.set_defaults(handler=_config)

    p = sub.add_parser("cluster", help="a Spark standalone master and workers on this machine")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(handler=_cluster)

    p = sub.add_parser("mlflow", help="the project's MLflow tracking server")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(handler=_mlflow)

    p = sub.add_parser("train", help="train a model with Horovod on Spark, tracked in MLflow")
    p.add_argument("--model", default="", help="vae | attributes | detector | fabric_ae (default train.model)")
    p.add_argument("--data", required=True, help="an ingested dataset folder")
    p.add_argument("--workers", type=int, default=0, help="Horovod workers (default train.workers)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint and its MLflow run")
    p.set_defaults(handler=_train)

    p = sub.add_parser("score", help="score images with a registered model into Parquet")
    p.add_argument("--model-uri", required=True, help="models:/NAME@ALIAS (or any MLflow model URI)")
    p.add_argument("--input", required=True, help="folder or glob of images, or an ingested dataset folder")
    p.add_argument("--output", required=True, help="output folder (published atomically)")
    p.add_argument("--incremental", action="store_true", help="score only files not yet in the output")
    p.set_defaults(handler=_score)

    p = sub.add_parser("faces", help="face identification from embeddings")
    p.add_argument("action", choices=["enroll", "identify"])
    p.add_argument("--model-uri", default="", help="embedding model (enroll)")
    p.add_argument("--input", required=True, help="ingested CelebA dataset folder or image folder")
    p.add_argument("--gallery", required=True, help="gallery table folder")
    p.add_argument("--output", default="", help="identification results (identify)")
    p.set_defaults(handler=_faces)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run and log it to MLflow")
    p.add_argument("--run", required=True, help="MLflow run id")
    p.add_argument("--out", default="", help="HTML file to write (default runs/reports/<run>.html)")
    p.add_argument("--tracking-uri", default="", help="MLflow server (default: as training)")
    p.set_defaults(handler=_report)

    p = sub.add_parser("pipeline", help="run a declarative pipeline from pipelines/")
    p.add_argument("file", help="pipeline YAML file")
    p.add_argument("--only", action="append", default=[], help="run only these steps (repeatable)")
    p.set_defaults(handler=_pipeline)

    for sp in sub.choices.values():
        _common(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, load the configuration and run one command; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per closed gateway connection
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.env, args.overrides)
    except ConfigError as exc:
        print(f"sparkvision: configuration error: {exc}", file=sys.stderr)
        return 2
    return int(args.handler(args, cfg))


if __name__ == "__main__":
    sys.exit(main())
