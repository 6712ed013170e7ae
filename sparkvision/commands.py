"""Every ``sparkvision`` command: a typed function and its argument spec, in one table.

``COMMANDS`` has two readers that never import each other: ``sparkvision.cli`` builds its
argparse parser from it, and ``sparkvision.pipeline`` validates a step's ``args`` against it
and calls the function with keyword arguments. A command function takes the resolved
``Config`` first, checks its inputs (``sparkvision.preflight``) before it builds a
SparkSession, prints what it did and where the outputs went, and returns the exit code.
Heavy modules are imported inside the functions, so reading the table is cheap.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkvision import preflight
from sparkvision.config import Config
from sparkvision.errors import UserError

ArgType = type[str] | type[int] | type[bool] | type[list]


@dataclass(frozen=True)
class Arg:
    """One argument: its keyword name, type, help, and how it appears on the command line.

    ``bool`` arguments are flags, ``list`` arguments repeat (``--only a --only b``); a positional
    argument is given without a flag on the command line.
    """

    name: str
    help: str
    type: ArgType = str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    positional: bool = False
    flag: str = ""

    @property
    def option(self) -> str:
        """The command-line spelling: ``--model-uri`` for ``model_uri`` (or ``flag``)."""
        return self.flag or "--" + self.name.replace("_", "-")

    def coerce(self, value: Any) -> Any:
        """``value`` (from YAML, possibly a substituted string) as this argument's type.

        Raises:
            ValueError: Saying what was expected and what was found.
        """
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ValueError(f"expected true or false, found {value!r}")
        if self.type is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ValueError(f"expected an integer, found {value!r}")
        if self.type is list:
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in items):
                raise ValueError(f"expected a list of strings, found {value!r}")
            return [str(v) for v in items]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"expected a string, found {value!r}")
        value = str(value)
        if self.choices and value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, found {value!r}")
        return value


@dataclass(frozen=True)
class Command:
    """A command: its name, one-line help, function and arguments.

    ``run(cfg, **kwargs)`` for ordinary commands; with ``config=False`` the function resolves
    configuration itself and gets ``env`` and ``overrides`` as keywords instead of ``cfg``.
    """

    name: str
    help: str
    run: Callable[..., int]
    args: tuple[Arg, ...]
    config: bool = True
    in_pipeline: bool = True
    ok_codes: tuple[int, ...] = (0,)
    """Exit codes that are an expected outcome, not a failure: a pipeline step goes on
    (``promote`` exits 3 when it keeps the champion)."""

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)

    def command_line(self, kwargs: Mapping[str, Any]) -> list[str]:
        """The ``sparkvision ...`` argv equivalent to calling ``run`` with ``kwargs``."""
        argv = [self.name]
        for a in self.args:
            value = kwargs.get(a.name, a.default)
            if a.positional:
                argv.append(str(value))
            elif a.type is bool:
                argv += [a.option] if value else []
            elif a.type is list:
                argv += [x for v in value or () for x in (a.option, str(v))]
            elif value is not None and value != a.default:
                argv += [a.option, str(value)]
        return argv


CONFIG_ARGS: tuple[Arg, ...] = (
    Arg("env", "configuration layer over conf/base (test, local, ...); default base"),
    Arg("overrides", "override one configuration key, e.g. --set train.epochs=3 (repeatable)", list, flag="--set"),
)
"""Arguments every command takes on the command line (pipeline steps use ``env:`` and ``set:``)."""


# --------------------------------------------------------------------------- commands


def generate(cfg: Config, *, dataset: str, out: str, count: int = 0, seed: int | None = None,
             photos: Sequence[str] = ()) -> int:  # fmt: skip
    """Write a synthetic data set in a public on-disk format."""
    out = preflight.local_path("--out", out)
    g = cfg.generate
    seed = g.seed if seed is None else seed
    if (dataset == "photos") != bool(photos):
        raise UserError(f"generate {dataset}: --photos (real texture photos, or folders of them) is what "
                        f"`generate photos` cuts its MVTec category from, and only that; found {list(photos)}")  # fmt: skip
    if dataset == "photos":
        from sparkvision.data.generators.texture_photos import generate_mvtec_from_photos

        paths = [preflight.existing_path("--photos", preflight.local_path("--photos", p)) for p in photos]
        try:
            generate_mvtec_from_photos(paths, Path(out), seed=seed, train_count=count or g.photo_train_count,
                                       test_count=g.fabric_test_count, crop=g.photo_crop,
                                       image_size=g.photo_image_size, train_share=g.photo_train_share)  # fmt: skip
        except (ValueError, FileNotFoundError) as exc:
            raise UserError(f"generate photos: {exc}") from None
    elif dataset == "celeba":
        from sparkvision.data.generators.celeba import generate_celeba

        generate_celeba(Path(out), count=count or g.celeba_count, seed=seed,
                        images_per_identity=g.celeba_images_per_identity)  # fmt: skip
    elif dataset == "fabric":
        from sparkvision.data.generators.fabric import generate_mvtec

        generate_mvtec(Path(out), seed=seed, train_count=count or g.fabric_train_count,
                       test_count=g.fabric_test_count, image_size=g.fabric_image_size)  # fmt: skip
    else:
        from sparkvision.data.generators.fabric import generate_aitex

        generate_aitex(Path(out), seed=seed, count=count or g.fabric_train_count, image_size=g.fabric_image_size)
    print(f"wrote {dataset} data to {out}")
    return 0


def ingest(cfg: Config, *, format: str, input: str, output: str) -> int:
    """Decode, validate, crop, resize, tile and label images into a Parquet dataset."""
    source = preflight.existing_dir("--input", input)
    output = preflight.location("--output", output)
    from sparkvision.data.ingest import ingest as run_ingest
    from sparkvision.spark import get_spark

    m = run_ingest(get_spark(cfg.spark), format, source, output, cfg.ingest, workers=cfg.train.workers)
    splits = ", ".join(f"{k} {v}" for k, v in m["splits"].items())
    reasons = "".join(f", {k} {v}" for k, v in sorted(m["quarantine_by_reason"].items()))
    print(f"ingested {m['input_files']} files into {m['output']} ({m['run']['version']}): {m['output_rows']} rows "
          f"({splits}); {m['quarantined']} quarantined{reasons}")  # fmt: skip
    return 0


def data(cfg: Config, *, action: str, output: str) -> int:
    """List the versions of a published output (dataset, scores, gallery) and which one is current."""
    from sparkvision.data import publish

    output = preflight.existing_dir("OUT", output, "a published output folder")
    infos = publish.versions(output)
    if not infos:
        raise UserError(f"OUT {output}: expected a published output ({publish.POINTER} beside v-* folders), "
                        "found no version")  # fmt: skip
    print(f"{'':1} {'version':34} {'state':11} {'created (UTC)':19} {'rows':>8} {'quarantined':>11}  checksum")
    for v in infos:
        created = v.created_at.strftime("%Y-%m-%d %H:%M:%S") if v.created_at else "?"
        rows = v.counts.get("rows", v.counts.get("output_rows", ""))
        print(f"{'*' if v.state == 'current' else ' ':1} {v.name:34} {v.state:11} {created:19} {rows!s:>8} "
              f"{v.counts.get('quarantined', '')!s:>11}  {(v.checksum or '')[:16]}")  # fmt: skip
    return 0


def config(cfg: Config, *, action: str) -> int:
    """Print the resolved configuration."""
    print(cfg.to_yaml(), end="")
    print(f"# env: {cfg.env}  digest: {cfg.digest()[:16]}")
    return 0


def cluster(cfg: Config, *, action: str) -> int:
    """Start, stop or inspect the local Spark standalone cluster."""
    from sparkvision import cluster as local_cluster

    state = cfg.path("runs") / "cluster"
    if action == "up":
        info = local_cluster.up(cfg.cluster, state)
        print(f"Spark master {info.master_url} (web UI {info.webui_url}); stop with: sparkvision cluster down")
    elif action == "down":
        print(f"stopped {local_cluster.down(state)} process group(s)")
    else:
        status = local_cluster.status(state)
        print(json.dumps(status, indent=2))
        return 0 if status.get("running") else 1
    return 0


def mlflow(cfg: Config, *, action: str) -> int:
    """Start, stop or inspect the project's MLflow server."""
    from sparkvision import tracking

    state = cfg.path("mlflow")
    if action == "start":
        server = tracking.start_server(cfg.mlflow, state)
        print(f"MLflow UI: {server.url}  (stop with: sparkvision mlflow stop)")
    elif action == "stop":
        print("stopped" if tracking.stop_server(state) else "no server was running")
    else:
        status = tracking.server_status(state)
        print(json.dumps(status, indent=2))
        return 0 if status.get("running") else 1
    return 0


def train(cfg: Config, *, data: str, model: str = "", workers: int = 0, resume: bool = False) -> int:
    """Train a model with Horovod on Spark, tracked in MLflow and registered with an alias."""
    sets = {"train.model": model} if model else {}
    if workers:
        sets["train.workers"] = str(workers)
    cfg = cfg.replace(**sets) if sets else cfg
    data = preflight.dataset("--data", data)
    from sparkvision.training.trainer import plan

    try:
        job = plan(cfg, data)
    except ValueError as exc:  # the task or the worker count does not fit the dataset
        raise UserError(str(exc)) from exc
    if resume and job.store.latest() is None:
        raise UserError(
            f"--resume: expected a checkpoint of {job.registered_name} at {job.store.url('state.json')}, "
            "found none; train once without --resume"
        )
    tracking = preflight.tracking_server(cfg)
    from sparkvision.spark import get_spark
    from sparkvision.training import train as run_train

    spark = get_spark(cfg.spark, gpus=cfg.train.gpus_per_worker)
    result = run_train(spark, cfg, data_dir=data, resume=resume, planned=job, tracking=tracking)
    epochs = f"epochs {result['initial_epoch'] + 1}-{result['initial_epoch'] + result['epochs_run']}"
    stopped = ", stopped early" if result["stopped_early"] else ""
    print(f"trained {cfg.train.model} ({epochs}{stopped}): {result['model_uri']} = version {result['version']}")
    for label, prefix in (("val", "eval_val_"), ("test", "test_")):
        values = {k.removeprefix(prefix): v for k, v in sorted(result["metrics"].items()) if k.startswith(prefix)}
        if values:
            print(f"  {label}: {_metrics_line(values)}")
    print(f"  run: {tracking.run_url(result['run_id'])}")
    print(f"  checkpoint: {result['checkpoint_dir']}")
    return 0


def score(cfg: Config, *, model_uri: str, input: str, output: str, incremental: bool = False) -> int:
    """Score images with a registered model into Parquet with lineage."""
    source = preflight.images("--input", input)
    output = preflight.location("--output", output)
    tracking = preflight.model_uri("--model-uri", model_uri, cfg)
    from sparkvision.data.publish import Retention
    from sparkvision.scoring import score as run_score
    from sparkvision.spark import get_spark

    s = run_score(get_spark(cfg.scoring_spark, gpus=cfg.score.gpus_per_task), model_uri, source, output, cfg.score,
                  incremental=incremental or cfg.score.incremental, tracking=tracking,
                  retention=Retention.of(cfg.ingest))  # fmt: skip
    model = s["model"]
    print(f"scored {s['inputs']} image(s) with {model['pinned_uri']} (run {model['run_id']}): {s['scored']} ok, "
          f"{s['failed']} failed{_reasons(s['failed_by_reason'])}, {s['skipped']} skipped; "
          f"{s['rows']} rows in {s['output']} ({s['version']})")  # fmt: skip
    return 0


def faces(cfg: Config, *, action: str, input: str, gallery: str = "", model_uri: str = "", output: str = "",
          split: Sequence[str] = (), images_per_identity: int = 0) -> int:  # fmt: skip
    """Enroll known identities into a gallery, identify new faces against it, or evaluate embeddings."""
    from sparkvision.data.publish import Retention
    from sparkvision.spark import get_spark

    if action == "evaluate":
        return _faces_evaluate(cfg, input, model_uri)
    if not gallery:
        raise UserError(f"--gallery: expected the gallery folder to {action}, found none")
    if action == "enroll":
        source = _enroll_source(input)
        gallery = preflight.location("--gallery", gallery)
        model_uri = model_uri or cfg.faces.model_uri
        if not model_uri:
            raise UserError("--model-uri: expected the embedding model (models:/NAME@ALIAS) to enroll with, "
                            "found none; pass --model-uri or set faces.model_uri")  # fmt: skip
        tracking = preflight.model_uri("--model-uri", model_uri, cfg)
        from sparkvision import identification

        g = identification.enroll(get_spark(cfg.scoring_spark), model_uri, source, gallery, cfg.faces, tracking=tracking,
                                  retention=Retention.of(cfg.ingest), splits=tuple(split or ("train",)),
                                  images_per_identity=images_per_identity)  # fmt: skip
        print(f"enrolled {g['identities']} identities ({g['images']} images, {g['failed']} failed"
              f"{_reasons(g['failed_by_reason'])}) into {g['gallery']} ({g['version']}); "
              f"threshold {g['threshold']:.4f} ({g['threshold_source']})")  # fmt: skip
        return 0
    if not output:
        raise UserError("--output: expected a folder for the identification results, found none")
    source = preflight.images("--input", input)
    gallery = preflight.dataset("--gallery", gallery, "a faces gallery", "sparkvision faces enroll")
    output = preflight.location("--output", output)
    tracking = preflight.tracking_server(cfg)
    from sparkvision import identification

    s = identification.identify(get_spark(cfg.scoring_spark), gallery, source, output, cfg.faces, tracking=tracking,
                                retention=Retention.of(cfg.ingest), splits=tuple(split or ()))  # fmt: skip
    rates = "".join(f", {k} {s[k]}" for k in ("top1_accuracy", "rank1_accuracy", "far") if s.get(k) is not None)
    print(f"identified {s['inputs']} image(s) into {s['output']} ({s['version']}): {s['accepted']} accepted, "
          f"{s['unknown']} unknown, {s['failed']} failed{rates}")  # fmt: skip
    return 0


# --------------------------------------------------------------------------- vae (latent space)


def vae(cfg: Config, *, action: str, model_uri: str, data: str = "", out: str = "", count: int = 16, seed: int = 0,
        temperature: str = "1.0", image: str = "", attribute: str = "Smiling", steps: str = "",
        a: str = "", b: str = "") -> int:  # fmt: skip
    """Attribute vectors, new faces, a photo morphed along attributes, interpolation: a registered VAE's latent space."""
    from sparkvision import latent

    tracking = preflight.model_uri("--model-uri", model_uri, cfg)
    if action == "vectors":
        data = preflight.dataset("--data", data, "an ingested CelebA dataset")
    try:
        inputs = {flag: latent.read_image(value) for flag, value in (("--image", image), ("--a", a), ("--b", b))
                  if value}  # fmt: skip
        steps = steps or {"morph": "-3:3:7", "interpolate": "8"}.get(action, "")
        factors = latent.parse_steps(steps) if action == "morph" else None
        try:
            scale = float(temperature)
        except ValueError:
            raise UserError(f"--temperature: expected a number (1.0 = the prior), found {temperature!r}") from None
        weights = latent.parse_attributes(attribute) if action == "morph" else {}
        missing = {"morph": ["--image"], "interpolate": ["--a", "--b"]}.get(action, [])
        if any(f not in inputs for f in missing):
            raise UserError(f"vae {action}: expected {' and '.join(missing)} (an image path or URL), found none")
        if action == "vectors":
            from sparkvision.scoring import batch
            from sparkvision.spark import get_spark

            model = batch.resolve_model(spark := get_spark(cfg.scoring_spark, gpus=cfg.score.gpus_per_task), model_uri,
                                        tracking)  # fmt: skip
            where = _latent_out(cfg, out, model.name, model.version)
            vectors, counts = latent.compute_vectors(spark, model, data, cfg.score)
            path = latent.save_vectors(vectors, where, tracking, model.run_id)
            usable = int(((vectors.positives > 0) & (vectors.negatives > 0)).sum())
            print(f"attribute vectors of {model.pinned_uri} over {counts['used']} train images of {counts['dataset']} "
                  f"({counts['failed']} failed): {usable} of {len(vectors.names)} attributes with images on both "
                  f"sides")  # fmt: skip
            top = sorted(zip(vectors.names, vectors.positives, vectors.negatives, strict=True),
                         key=lambda t: -min(t[1], t[2]))[:3]  # fmt: skip
            print("  e.g. " + ", ".join(f"{n} {p} with / {q} without" for n, p, q in top))
            within = [n for n, m in zip(vectors.names, vectors.methods, strict=True) if m == "identity"]
            print(f"  {len(within)} taken within people (at least {latent.MIN_PAIRS} with images with and without: "
                  f"{', '.join(within[:4])}{', ...' if len(within) > 4 else ''}), the others over all images")  # fmt: skip
            print(f"  table: {path}" + (f"; run {model.run_id} artifact {latent.VECTORS_ARTIFACT}" if model.run_id
                                        else ""))  # fmt: skip
            return 0
        model = latent.load_model(model_uri, tracking)
        where = _latent_out(cfg, out, model.resolved.name, model.resolved.version)
        prepared = {flag: model.prepare(raw, flag) for flag, raw in inputs.items()}
        if action == "generate":
            if count < 1:
                raise UserError(f"--count: expected 1 or more faces, found {count}")
            new = latent.generate(model, count, seed, scale)
            rows = [list(new[i : i + 8]) for i in range(0, count, 8)]
            saved = [latent.save_and_log(rows, where, f"generate_seed{seed}_t{scale:g}.png", model,
                                         tracking, title=f"{count} new faces, z from {latent.sampling(model)} "
                                         f"(spread ×{scale:g}), seed {seed}")]  # fmt: skip
        elif action == "morph":
            vectors = latent.load_vectors(tracking, model.run_id, model_uri)
            lines = {n: {n: w} for n, w in weights.items()}
            if len(weights) > 1:
                lines[",".join(f"{n}={w:+g}" for n, w in weights.items())] = weights
            grid = [[prepared["--image"], *latent.morph(model, prepared["--image"], latent.direction(vectors, w),
                                                        factors)[0]] for w in lines.values()]  # fmt: skip
            titles = [f"{n} ×{w[n]:+g}" if len(w) == 1 else "all" for n, w in lines.items()]
            name = "morph_" + "_".join(weights) + ".png"
            saved = [latent.save_and_log(grid, where, name, model, tracking, row_titles=titles,
                                         col_titles=["input", *(f"{f:+.2g}" for f in factors)],
                                         title=f"{Path(image).name} moved along {attribute}")]  # fmt: skip
        else:
            n = int(steps) if steps.strip().isdigit() else 0
            if n < 2:
                raise UserError(f"--steps: expected 2 or more interpolation steps (e.g. --steps 8), found {steps!r}")
            row = latent.interpolate(model, prepared["--a"], prepared["--b"], n)
            saved = [latent.save_and_log([[prepared["--a"], *row, prepared["--b"]]], where, "interpolate.png", model,
                                         tracking, col_titles=["a", *(f"{i / (n - 1):.2f}" for i in range(n)), "b"],
                                         title=f"{Path(a).name} → {Path(b).name} in z")]  # fmt: skip
    except latent.LatentError as exc:
        raise UserError(str(exc)) from exc
    for path, artifact in saved:
        run = f"; run {model.run_id} artifact {artifact}" if artifact else ""
        print(f"vae {action} with {model.resolved.pinned_uri}: {path}{run}")
    return 0


def _latent_out(cfg: Config, out: str, name: str | None, version: str | None) -> str:
    """``--out``, or ``<paths.runs>/latent/<model name>-v<version>``."""
    if out:
        return preflight.local_path("--out", out)
    return str(cfg.path("runs") / "latent" / (f"{name}-v{version}" if name else "model"))


def _enroll_source(input: str) -> str:
    """``faces enroll --input``: an ingested CelebA dataset, or a folder of person folders."""
    from sparkvision.scoring.batch import is_dataset

    path = preflight.existing_dir("--input", input, "an ingested CelebA dataset or a folder of person folders")
    if is_dataset(path):
        return preflight.dataset("--input", path, "an ingested CelebA dataset")
    return path


def _faces_evaluate(cfg: Config, input: str, model_uri: str) -> int:
    """``faces evaluate``: rank-1 and TAR@FAR of each embedding model on held-out identities, side by side."""
    from sparkvision.spark import get_spark

    source = preflight.dataset("--input", input, "an ingested CelebA dataset")
    prefix, alias = cfg.train.registered_model_prefix, cfg.train.alias
    uris = [u.strip() for u in model_uri.split(",") if u.strip()] or [
        f"models:/{prefix}-face_embed@{alias}", f"models:/{prefix}-vae@{alias}"]  # fmt: skip
    tracking = None
    for uri in uris:
        tracking = preflight.model_uri("--model-uri", uri, cfg) or tracking
    from sparkvision import identification

    r = identification.evaluate(get_spark(cfg.scoring_spark), uris, source, cfg.faces, tracking=tracking)
    if tracking is not None:
        identification.log_evaluation(tracking, r)
    p = r["protocol"]
    first = r["models"][0]
    print(f"face identification on held-out identities of {r['input']}: {first['identities']:.0f} enrolled "
          f"({p['enrolled_split']} split, {p['gallery_images']} image(s) each), {first['probes']:.0f} probes, "
          f"{first['impostors']:.0f} impostor images of never-enrolled identities ({p['impostor_split']} split)")  # fmt: skip

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    print(f"  {'model':<44} {'embedding':<10} {'rank-1':>7} {'TAR':>7} {'@FAR':>7} {'threshold':>9}")
    for m in r["models"]:
        print(f"  {m['model']['pinned_uri']:<44} {m['embedding']:<10} {fmt(m['rank1']):>7} {fmt(m['tar']):>7} "
              f"{fmt(m['far']):>7} {fmt(m['threshold']):>9}")  # fmt: skip
    print(f"  (TAR at a target FAR of {p['target_far']}; chance rank-1 {fmt(first['chance_rank1'])})")
    return 0


def report(cfg: Config, *, run: str, out: str = "", tracking_uri: str = "") -> int:
    """Write a self-contained HTML report of a run and log it to the run."""
    out = preflight.local_path("--out", out) if out else str(cfg.path("runs") / "reports" / f"{run}.html")
    tracking = preflight.tracking_server(cfg, tracking_uri)
    preflight.run("--run", run, tracking)
    from sparkvision.reporting import write_report

    print(f"report: {write_report(tracking, run, out)}")
    return 0


def runs(cfg: Config, *, action: str, experiment: str = "", tracking_uri: str = "") -> int:
    """Mark training runs of killed drivers KILLED and remove dead processes' temporary folders."""
    tracking = preflight.tracking_server(cfg, tracking_uri)
    from sparkvision import tempdirs
    from sparkvision.tracking import liveness

    name = experiment or cfg.train.experiment
    swept = liveness.clean_runs(tracking, [name], cfg.train.heartbeat_timeout_s)
    for s in swept:
        epoch = "-" if s.last_epoch is None else str(s.last_epoch)
        print(f"{s.run_id}  {s.action:7}  last epoch {epoch:>4}  heartbeat {s.age_s:.0f} s ago  driver {s.driver}")
    killed = sum(s.action == "killed" for s in swept)
    removed = tempdirs.sweep()
    print(f"experiment {name}: {len(swept)} running run(s), {killed} marked KILLED (heartbeat older than "
          f"{cfg.train.heartbeat_timeout_s:g} s, driver gone); {len(removed)} temporary folder(s) removed")  # fmt: skip
    return 0


def pipeline(*, file: str, only: Sequence[str] = (), env: str | None = None, overrides: Sequence[str] = ()) -> int:
    """Run a declarative pipeline; its steps call the commands of this table."""
    from sparkvision.pipeline import run_pipeline

    run_pipeline(file, env=env, overrides=overrides, only=only)
    return 0


# ------------------------------------------------------------------ promote and inspect (issue 11)


KEPT_CHAMPION = 3
"""``promote``'s exit code when the champion stays (as ``PublishConflict``'s: "nothing new was published")."""


def promote(cfg: Config, *, model: str, candidate_alias: str = "candidate", champion_alias: str = "champion",
            data: str = "") -> int:  # fmt: skip
    """Evaluate candidate and champion on one pinned test split; move the champion alias when the candidate wins."""
    if data:
        data = preflight.dataset("--data", data)
    tracking = preflight.tracking_server(cfg)
    from sparkvision.promotion import promote as run_promote

    d = run_promote(tracking, model, cfg.promote, candidate_alias, champion_alias, data)
    if d.outcome == "already_champion":
        print(f"{model}: {d.reason}; nothing to do")
        return 0
    verdict = (f"promoted {model} version {d.candidate['version']} to @{champion_alias}" if d.promoted
               else f"kept {model}@{champion_alias}" + (f" = version {d.champion['version']}" if d.champion else
                                                         " unset") + f" (candidate version {d.candidate['version']})")  # fmt: skip
    print(f"{verdict}: {d.reason}")
    if d.artifacts:
        print(f"  comparison: {d.artifacts[1]} on run {tracking.run_url(d.candidate['run_id'])}")
    return 0 if d.promoted else KEPT_CHAMPION


def inspect(cfg: Config, *, model_uri: str, input: str, output: str) -> int:
    """Inspect whole fabric images: tile as the model was trained, score tiles in Spark, stitch heatmaps."""
    source = preflight.images("--input", input)
    output = preflight.location("--output", output)
    tracking = preflight.model_uri("--model-uri", model_uri, cfg)
    from sparkvision.data.publish import Retention
    from sparkvision.scoring.inspect import inspect as run_inspect
    from sparkvision.spark import get_spark

    s = run_inspect(get_spark(cfg.scoring_spark, gpus=cfg.score.gpus_per_task), model_uri, source, output, cfg.score,
                    cfg.inspect, tracking=tracking, retention=Retention.of(cfg.ingest))  # fmt: skip
    print(f"inspected {s['inputs']} image(s) with {s['model']['pinned_uri']}: {s['defective']} defective, "
          f"{s['good']} good (threshold {s['threshold']:.4g}), {s['failed']} failed{_reasons(s['failed_by_reason'])}; "
          f"{s['rows']} rows and heatmap overlays in {s['output']} ({s['version']})")  # fmt: skip
    ev = s.get("evaluation")
    if ev:
        for name, m in ev["by_defect_type"].items():
            print(f"  {name}: {_metrics_line(m)}")
    return 0


def _metrics_line(values: Mapping[str, float], family: int = 5) -> str:
    """``name value, ...``; a family of ``family`` or more ``prefix_*`` metrics (one per attribute) as its mean."""
    prefixes = Counter(k.split("_", 1)[0] for k in values if "_" in k)
    big = {p for p, n in prefixes.items() if n >= family}
    parts = [f"{k} {v:.4g}" for k, v in values.items() if "_" not in k or k.split("_", 1)[0] not in big]
    for p in sorted(big):
        member = [v for k, v in values.items() if k.startswith(f"{p}_")]
        parts.append(f"{p}_* mean {sum(member) / len(member):.4g} over {len(member)}")
    return ", ".join(parts)


def _reasons(by_reason: Mapping[str, int]) -> str:
    return " (" + ", ".join(f"{k} {v}" for k, v in by_reason.items()) + ")" if by_reason else ""


# --------------------------------------------------------------------------- the table


def _action(*choices: str) -> Arg:
    return Arg("action", "what to do", choices=choices, required=True, positional=True)


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("generate", "write a synthetic data set in a public on-disk format", generate, (
            Arg("dataset", "data set to write: generated faces or fabric, or an MVTec category cut from real texture "
                "photos with defects painted on (photos)", choices=("celeba", "fabric", "aitex", "photos"),
                required=True, positional=True),
            Arg("out", "folder to write (created)", required=True),
            Arg("count", "images (celeba) or train/good images (fabric, photos); default from generate.*", int, 0),
            Arg("seed", "seed; default generate.seed", int),
            Arg("photos", "photos: a texture photo or a folder of photos of one material (repeatable)", list, ()),
        )),
        Command("ingest", "decode, validate, crop, resize, tile and label images into Parquet", ingest, (
            Arg("format", "layout of the input", choices=("celeba", "mvtec", "aitex", "folder"), required=True),
            Arg("input", "root of the data set in its public layout (path or URL)", required=True),
            Arg("output", "dataset to publish a new version of (OUT/v-<id>/ + OUT/_latest.json; path or URL)",
                required=True),
        )),
        Command("data", "list the versions of a published output and which one is current", data, (
            _action("versions"),
            Arg("output", "a published output (dataset, scores, gallery)", required=True, positional=True),
        )),
        Command("config", "print the resolved configuration", config, (
            _action("show"),
        )),
        Command("cluster", "a Spark standalone master and workers on this machine", cluster, (
            _action("up", "down", "status"),
        )),
        Command("mlflow", "the project's MLflow tracking server", mlflow, (
            _action("start", "stop", "status"),
        )),
        Command("train", "train a model with Horovod on Spark, tracked in MLflow", train, (
            Arg("data", "an ingested dataset (path or URL; its current version is read)", required=True),
            Arg("model", "vae | attributes | detector | fabric_ae (default train.model)", default=""),
            Arg("workers", "Horovod workers (default train.workers)", int, 0),
            Arg("resume", "continue from the last checkpoint and its MLflow run", bool, False),
        )),
        Command("score", "score images with a registered model into Parquet", score, (
            Arg("model_uri", "models:/NAME@ALIAS (or models:/NAME/VERSION, runs:/RUN/PATH, a model folder)",
                required=True),
            Arg("input", "folder or glob of images, or an ingested dataset (path or URL)", required=True),
            Arg("output", "output to publish a new version of (path or URL)", required=True),
            Arg("incremental", "score only files not yet in the output", bool, False),
        )),
        Command("promote", "move the champion alias to the candidate only when it wins on the pinned test split",
                promote, (
            Arg("model", "registered model name (e.g. sparkvision-attributes)", required=True),
            Arg("candidate_alias", "alias of the version under review", default="candidate"),
            Arg("champion_alias", "alias moved when the candidate wins", default="champion"),
            Arg("data", "dataset to evaluate both on (default: the one the candidate was trained on)", default=""),
        ), ok_codes=(0, KEPT_CHAMPION)),
        Command("inspect", "whole-image fabric inspection: tile, score in Spark, stitch heatmaps, flag defects",
                inspect, (
            Arg("model_uri", "a fabric_ae model: models:/NAME@ALIAS (or models:/NAME/VERSION, a model folder)",
                required=True),
            Arg("input", "folder, glob or URL of fabric images of any size (an MVTec category or test folder "
                "is also evaluated)", required=True),
            Arg("output", "output to publish a new version of (rows + heatmaps/; path or URL)", required=True),
        )),
        Command("faces", "face identification from embeddings", faces, (
            _action("enroll", "identify", "evaluate"),
            Arg("input", "ingested CelebA dataset (enroll, evaluate), a folder of person folders (enroll) or "
                "images/dataset (identify)", required=True),
            Arg("gallery", "gallery folder (enroll, identify)", default=""),
            Arg("model_uri", "embedding model (enroll; default faces.model_uri); evaluate: comma-separated "
                "models (default the face_embed and vae candidates)", default=""),
            Arg("output", "identification results (identify)", default=""),
            Arg("split", "dataset splits to enroll (default train) or identify (default all); repeatable", list, ()),
            Arg("images_per_identity", "enroll: the first N images of each identity (by id), the rest are probes; "
                "0: all", int, 0),
        )),
        Command("vae", "a registered VAE's latent space: attribute vectors, new faces, morph a photo, interpolate", vae, (
            _action("vectors", "generate", "morph", "interpolate"),
            Arg("model_uri", "the VAE, models:/NAME@ALIAS (or /VERSION, runs:/..., a folder)", required=True),
            Arg("data", "vectors: ingested CelebA dataset whose train split gives the vectors", default=""),
            Arg("out", "folder for the pictures and the vectors table (default <paths.runs>/latent/<model>-v<N>)",
                default=""),
            Arg("count", "generate: faces", int, 16),
            Arg("seed", "generate: seed of z", int, 0),
            Arg("temperature", "generate: scale of z ~ N(0, I)", default="1.0"),
            Arg("image", "morph: the photo (path or URL)", default=""),
            Arg("attribute", "morph: NAME or NAME=WEIGHT,... (e.g. Smiling=+2,Eyeglasses=+1)", default="Smiling"),
            Arg("steps", "morph: factors START:STOP:COUNT or a,b,c (default -3:3:7); interpolate: points (default 8)",
                default=""),
            Arg("a", "interpolate: first image (path or URL)", default=""),
            Arg("b", "interpolate: second image (path or URL)", default=""),
        )),
        Command("report", "write a self-contained HTML report of a run and log it to MLflow", report, (
            Arg("run", "MLflow run id", required=True),
            Arg("out", "HTML file to write (default <paths.runs>/reports/<run>.html)", default=""),
            Arg("tracking_uri", "MLflow server (default: as training)", default=""),
        )),
        Command("runs", "mark training runs whose driver was killed as KILLED (stale heartbeat, driver gone)", runs, (
            _action("clean"),
            Arg("experiment", "MLflow experiment (default train.experiment)", default=""),
            Arg("tracking_uri", "MLflow server (default: as training)", default=""),
        )),
        Command("pipeline", "run a declarative pipeline from pipelines/", pipeline, (
            Arg("file", "pipeline YAML file", required=True, positional=True),
            Arg("only", "run only these steps (repeatable)", list, ()),
        ), config=False, in_pipeline=False),
    )
}  # fmt: skip
"""Every command by name, in the order ``sparkvision --help`` lists them."""
