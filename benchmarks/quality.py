"""Model quality at full size on generated data: every family trained through ``train`` (2
Horovod workers, petastorm, a real MLflow server), judged on its held-out test split in
inference mode, each figure printed beside its goal.

    .venv/bin/python benchmarks/quality.py [--faces 3000] [--epochs 10] [--families all]

Faces at the VAE's 128x128 input; fabric in the MVTec layout at the base configuration's
sizes (512 px images, 128 px tiles); a class-per-folder set made of generated faces sorted
into folders by hair colour (black, blond, brown, gray: imbalanced, as real folders are).
Writes the table as Markdown to ``runs/bench/quality.md``. The tests in
``tests/training/test_quality.py`` run the same families at 32x32 with smaller margins.

Generator fidelity: whenever the attribute CNN is trained, every drawn attribute's test accuracy is
printed beside the accuracy a CNN reaches on real CelebA (``celeba.REAL_CELEBA``: LNets+ANet, Liu et al.
2015, Table 1) and written to ``runs/bench/fidelity.md``. For the attributes whose real prevalence lies
between 30 % and 70 % (``celeba.FAIR_ATTRIBUTES``) the generated faces must be as learnable as real
photos: within ``FIDELITY_POINTS`` of the published figure, neither harder nor trivially easier.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from sparkvision.config import Config, MlflowConfig, load_config

HAIR_CLASSES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
STAY = ("Male", *HAIR_CLASSES)
"""What the judge must see unchanged when a face moves along the Smiling or Eyeglasses vector."""

# family: [(metric label, key in train()'s metrics, goal, direction)]
GOALS: dict[str, list[tuple[str, str, float, str]]] = {
    "attributes": [("drawn-attribute mean AUROC", "drawn_mean_auroc", 0.95, ">=")],
    "detector": [("face box mean IoU", "test_mean_iou", 0.75, ">="),
                 ("face box mean IoU, shifted faces", "test_shifted_mean_iou", 0.75, ">="),
                 ("MAE / mean-box MAE, shifted faces", "test_shifted_mae_ratio", 0.5, "<=")],
    "fabric_ae": [("image AUROC", "test_image_auroc", 0.95, ">="), ("AUPRO (FPR <= 0.3)", "test_aupro", 0.85, ">=")],
    "classifier": [("hair-colour folder accuracy", "test_accuracy", 0.9, ">="),
                   ("inference-mode train - val accuracy", "train_val_gap", 0.05, "<=")],
    "vae": [("reconstruction MSE / mean-image MSE", "test_recon_mse_ratio", 0.5, "<=")],
    # The VAE's attribute vectors (``sparkvision vae vectors``), judged by the trained attribute CNN on
    # test faces without the attribute moved along it: the judged probability at +2 must exceed that of
    # the reconstruction (0) by the goal, and the judge's sex and hair colours must stay within 0.1.
    "latent": [(f"judged P({a}) at +2 minus at 0", f"rise_{a}", 0.3, ">=") for a in ("Smiling", "Eyeglasses")]
              + [(f"largest change of {STAY} moving {a}", f"others_{a}", 0.1, "<=") for a in ("Smiling", "Eyeglasses")],
    "face_embed": [("held-out identities rank-1", "faces_rank1", 0.95, ">="),
                   ("held-out identities TAR @ FAR 0.01", "faces_tar", 0.9, ">=")],
}  # fmt: skip
FIDELITY_POINTS = 5.0
"""How far (accuracy points) a fair attribute's test accuracy may lie from the published real-CelebA one."""
LATENT_FACTORS = (-2.0, -1.0, 0.0, 1.0, 2.0)
LATENT_MOVED = ("Smiling", "Eyeglasses")
FACES_OF = {"face_embed": "embedding", "vae": "mu"}
"""``faces evaluate`` figures (rank-1, TAR@FAR) of each trained embedding model, printed side by side."""


def folder_from_faces(celeba: Path, out: Path) -> Path:
    """Copy generated faces into ``out/<hair colour>/`` by their (mutually exclusive) hair attribute."""
    from sparkvision.data.schema import CELEBA_ATTRIBUTES

    lines = (celeba / "list_attr_celeba.txt").read_text().splitlines()[2:]
    index = [CELEBA_ATTRIBUTES.index(a) for a in HAIR_CLASSES]
    for line in lines:
        name, *values = line.split()
        hits = [c for c, i in zip(HAIR_CLASSES, index, strict=True) if values[i] == "1"]
        if len(hits) == 1:
            (out / hits[0].lower()).mkdir(parents=True, exist_ok=True)
            shutil.copy(celeba / "img_align_celeba" / name, out / hits[0].lower() / name)
    return out


def derived(family: str, metrics: dict[str, float]) -> dict[str, float]:
    """Figures computed from the logged ones (mean over drawn attributes, train/val gap)."""
    from sparkvision.data.generators.celeba import DRAWN_ATTRIBUTES

    out = dict(metrics)
    if family == "attributes":
        values = [metrics[f"test_auroc_{a}"] for a in DRAWN_ATTRIBUTES if f"test_auroc_{a}" in metrics]
        out["drawn_mean_auroc"] = float(np.mean(values)) if values else float("nan")
    if family == "classifier":
        out["train_val_gap"] = metrics.get("eval_train_accuracy", np.nan) - metrics.get("eval_val_accuracy", np.nan)
    return out


def fidelity_table(metrics: dict[str, float]) -> tuple[str, int]:
    """Markdown table of every drawn attribute's test accuracy beside real CelebA's, and the number of
    fair attributes (``celeba.FAIR_ATTRIBUTES``) further than ``FIDELITY_POINTS`` from the published figure."""
    from sparkvision.data.generators.celeba import DRAWN_ATTRIBUTES, FAIR_ATTRIBUTES, REAL_CELEBA

    lines = ["| attribute | real prevalence | published accuracy | generated: test accuracy | test AUROC | fair | verdict |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    misses = 0
    for name in sorted(DRAWN_ATTRIBUTES, key=lambda a: (a not in FAIR_ATTRIBUTES, a)):
        prevalence, published = REAL_CELEBA[name]
        accuracy = 100 * float(metrics.get(f"test_accuracy_{name}", float("nan")))
        auroc = float(metrics.get(f"test_auroc_{name}", float("nan")))
        verdict = ""
        if name in FAIR_ATTRIBUTES:
            gap = accuracy - published
            ok = abs(gap) <= FIDELITY_POINTS
            misses += not ok
            verdict = f"{gap:+.1f}: {'met' if ok else 'NOT met'}"
        lines.append(f"| {name} | {prevalence:.2f} | {published} | {accuracy:.1f} | {auroc:.3f} | "
                     f"{'yes' if name in FAIR_ATTRIBUTES else ''} | {verdict} |")  # fmt: skip
    return "\n".join(lines), misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=3000)
    parser.add_argument("--images-per-identity", type=int, default=8, help="generated images of each identity")
    parser.add_argument("--epochs", type=int, default=0, help="0: train.epochs of conf/base")
    parser.add_argument("--image-size", type=int, default=0, help="faces' side; 0: ingest.image_size of conf/base")
    parser.add_argument("--families", default="all", help=f"comma list of {sorted(GOALS)} or all")
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="configuration override for every training, e.g. train.learning_rate=0.001")  # fmt: skip
    args = parser.parse_args(argv)
    families = sorted(GOALS) if args.families == "all" else args.families.split(",")

    from sparkvision import tracking
    from sparkvision.data.generators.celeba import generate_celeba
    from sparkvision.data.generators.fabric import generate_mvtec
    from sparkvision.data.ingest import ingest
    from sparkvision.spark import get_spark

    base = load_config("base")
    if args.image_size:
        base = base.replace(**{"ingest.image_size": str(args.image_size)})
    rows: list[tuple[str, str, float, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="sv-quality-") as tmp:
        root = Path(tmp)
        server = tracking.start_server(MlflowConfig(port=0), root / "mlflow")
        spark = get_spark(base.spark)
        try:
            datasets: dict[str, Path] = {}
            started = time.perf_counter()
            if {"vae", "attributes", "detector", "classifier", "latent", "face_embed"} & set(families):
                generate_celeba(root / "celeba", count=args.faces, seed=11,
                                images_per_identity=args.images_per_identity)  # fmt: skip
                datasets["celeba"] = root / "parquet-celeba"
                ingest(spark, "celeba", str(root / "celeba"), str(datasets["celeba"]), base.ingest, workers=2)
            if "classifier" in families:
                folder_from_faces(root / "celeba", root / "hair")
                datasets["folder"] = root / "parquet-hair"
                ingest(spark, "folder", str(root / "hair"), str(datasets["folder"]), base.ingest, workers=2)
            if "fabric_ae" in families:
                g = base.generate
                generate_mvtec(root / "fabric", seed=0, train_count=g.fabric_train_count,
                               test_count=g.fabric_test_count, image_size=g.fabric_image_size)  # fmt: skip
                datasets["fabric"] = root / "parquet-fabric"
                ingest(spark, "mvtec", str(root / "fabric"), str(datasets["fabric"]), base.ingest, workers=2)
            print(f"data generated and ingested in {time.perf_counter() - started:.0f} s", flush=True)
            trained: dict[str, dict[str, Any]] = {}
            embedders: dict[str, str] = {}
            # latent last: it judges the VAE with the attribute CNN, trained first when not asked for
            order = [f for f in families if f != "latent"]
            order += [f for f in ("vae", "attributes") if "latent" in families and f not in order] + (
                ["latent"] if "latent" in families else [])  # fmt: skip
            for family in order:
                table = {"fabric_ae": "fabric", "classifier": "folder"}.get(family, "celeba")
                if family == "latent":
                    result = _judge_latent(spark, base, trained, datasets["celeba"], server.url, Path(args.out))
                else:
                    result = _train_one(spark, base, family, datasets[table], root, server.url, args.epochs,
                                        args.overrides)  # fmt: skip
                    trained[family] = result
                    if family in FACES_OF:
                        embedders[family] = result["model_uri"]
                if family not in families:
                    continue
                figures = derived(family, result["metrics"])
                if family == "attributes":
                    text, misses = fidelity_table(figures)
                    print(text, f"\nfair attributes further than {FIDELITY_POINTS:g} points from real CelebA: {misses}",
                          flush=True)  # fmt: skip
                    Path(args.out).mkdir(parents=True, exist_ok=True)
                    (Path(args.out) / "fidelity.md").write_text(text + "\n")
                for label, key, goal, direction in GOALS[family]:
                    value = float(figures.get(key, float("nan")))
                    met = value >= goal if direction == ">=" else value <= goal
                    rows.append((family, label, value, goal, f"{direction} {goal:g}: {'met' if met else 'NOT met'}"))
                print(f"{family}: trained in {result['seconds']:.0f} s, best epoch {result['best_epoch'] + 1}"
                      if family != "latent" else f"latent: judged in {result['seconds']:.0f} s: {result['curves']}",
                      flush=True)  # fmt: skip
            if "face_embed" in embedders:
                rows = _faces_rows(spark, base, datasets["celeba"], server.url, embedders, rows)
        finally:
            spark.stop()
            tracking.stop_server(root / "mlflow")
    table = ["| model | metric | value | goal |", "|---|---|---|---|"]
    table += [f"| {f} | {label} | {value:.3f} | {verdict} |" for f, label, value, _, verdict in rows]
    text = "\n".join(table)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.md").write_text(text + "\n")
    print(f"wrote {out / 'quality.md'}")
    return 0


def _faces_rows(spark, base: Config, data_dir: Path, uri: str, embedders: dict[str, str],
                rows: list[tuple[str, str, float, float, str]]) -> list[tuple[str, str, float, float, str]]:  # fmt: skip
    """``faces evaluate`` on the held-out identities: the face_embed goals replaced by its figures,
    and the VAE's ``mu`` figures beside them (no goal)."""
    from sparkvision.identification import evaluate
    from sparkvision.tracking import Tracking

    result = evaluate(spark, list(embedders.values()), str(data_dir), base.faces, tracking=Tracking(uri))
    out = [r for r in rows if r[0] != "face_embed"]
    for family, m in zip(embedders, result["models"], strict=True):
        print(f"faces evaluate {family} ({m['embedding']}): rank-1 {m['rank1']}, TAR {m['tar']} at FAR {m['far']} "
              f"({m['identities']:.0f} enrolled identities, {m['probes']:.0f} probes, {m['impostors']:.0f} impostors)")  # fmt: skip
        for label, key, goal, direction in GOALS["face_embed"]:
            value = float(m[key.removeprefix("faces_")] if m[key.removeprefix("faces_")] is not None else "nan")
            if family == "face_embed":
                met = value >= goal if direction == ">=" else value <= goal
                out.append((family, label, value, goal, f"{direction} {goal:g}: {'met' if met else 'NOT met'}"))
            else:
                out.append((f"{family} ({m['embedding']})", label, value, goal, "for comparison"))
    return out


def _train_one(spark, base: Config, family: str, data_dir: Path, root: Path, uri: str, epochs: int,
               overrides: list[str]) -> dict[str, Any]:  # fmt: skip
    from sparkvision.data import publish
    from sparkvision.training import train

    manifest = json.loads(publish.current(data_dir).location.join("manifest.json").read_text())
    settings = {"train.model": family, "train.image_size": str(manifest["image_size"]),
                "train.experiment": f"quality-{uuid.uuid4().hex[:8]}", "paths.store": str(root / "store"),
                "mlflow.tracking_uri": uri}  # fmt: skip
    if epochs:
        settings["train.epochs"] = str(epochs)
    if family == "fabric_ae":
        settings["train.latent_dim"] = "32"
    settings.update(item.split("=", 1) for item in overrides)
    started = time.perf_counter()
    result = train(spark, base.replace(**settings), str(data_dir), resume=False)
    return {**result, "seconds": time.perf_counter() - started}


def _judge_latent(spark, base: Config, trained: dict[str, dict[str, Any]], data_dir: Path, uri: str,
                  out: Path) -> dict[str, Any]:  # fmt: skip
    """The VAE's attribute vectors over the train split, judged by the attribute CNN on 64 test faces."""
    from sparkvision import latent
    from sparkvision.tracking import Tracking

    started = time.perf_counter()
    vae, judge = (f"models:/{trained[f]['registered_model']}/{trained[f]['version']}" for f in ("vae", "attributes"))
    names = list(LATENT_MOVED)
    tracking = Tracking(uri)
    judged = latent.judge_vectors(spark, tracking, vae, judge, str(data_dir), [*names, *STAY], LATENT_FACTORS,
                                  base.score, rows=64, moved=names)  # fmt: skip
    # One morph grid to look at (first test faces along each judged vector), kept beside quality.md.
    model = latent.load_model(vae, tracking)
    vectors, x = judged["vectors"], judged["x"][:3]
    rows = [[face, *latent.morph(model, face, vectors.vector(a), LATENT_FACTORS)[0]] for a in names for face in x]
    titles = [f"{a}" for a in names for _ in x]
    path, artifact = latent.save_and_log(rows, out, "morph_judged.png", model, tracking, row_titles=titles,
                                         col_titles=["input", *(f"{f:+g}" for f in LATENT_FACTORS)])  # fmt: skip
    print(f"latent: morph grid {path} (run {model.run_id} artifact {artifact})", flush=True)
    metrics = {f"rise_{a}": r for a, r in judged["rise"].items()}
    metrics.update({f"others_{a}": max(abs(v) for v in o.values()) for a, o in judged["others"].items()})
    print(f"latent: changes of {STAY} at +2: {judged['others']}", flush=True)
    judge_auroc = {a: round(trained["attributes"]["metrics"].get(f"test_auroc_{a}", float("nan")), 3) for a in names}
    print(f"latent: the judge's test AUROC {judge_auroc}; vectors from {judged['counts']['used']} train images",
          flush=True)  # fmt: skip
    return {"metrics": metrics, "curves": judged["curves"], "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    sys.exit(main())
