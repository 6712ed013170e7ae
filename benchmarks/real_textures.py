"""Fabric inspection on real texture photos: image AUROC, pixel AUROC and AUPRO of ``sparkvision
inspect`` on whole test images, per texture, with the training time.

    .venv/bin/python benchmarks/real_textures.py --textures felt,concrete,gravel \\
        --set train.simulated_defects=0.5 --label draem

No labelled defect photos can be downloaded here, but real texture photos ship in packages. They are
fetched once into ``--cache`` (nothing is fetched while a job runs):

- ``felt``: the PyPI wheel robosuite 1.5.2 (MIT), ``robosuite/models/assets/textures/gray-felt.png``,
  a grey needle-felt carpet, 854x854 (``pip download --no-deps``, the one file unzipped);
- ``concrete``: the Debian package ufoai-textures 2.5-2 (GPL-2), ``0textures.pk3`` (a zip) ->
  ``textures/tex_ctp1/concrete_g_{4,5,8}.jpg``, gravelly concrete, three photos of 1024x1024
  (``apt-get download``);
- ``gravel``: scikit-image's ``skimage/data/gravel.png`` (CC0), 512x512 grey, installed with the
  project's dev extras (the same photo ``tests/training/test_quality_fabric.py`` learns from).

Per texture: ``sparkvision generate photos`` cuts an MVTec category from the photos (training crops
from the upper ``generate.photo_train_share`` of each photo's rows, test crops below, five painted
defect types: ``sparkvision.data.generators.texture_photos``), ``ingest --format mvtec`` stores each
image whole (one tile), ``train --model fabric_ae`` on 2 workers with the configuration's defaults
plus ``--set``, then ``inspect`` on ``test/`` (its ``_evaluation.json``). Results go to
``--out``/results.jsonl, one line per texture and ``--label``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPARKVISION = [sys.executable, "-m", "sparkvision.cli"]


def fetch_felt(cache: Path) -> Path:
    out = cache / "felt"
    if not (out / "gray-felt.png").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp,
                            "robosuite==1.5.2"], check=True)  # fmt: skip
            wheel = next(Path(tmp).glob("robosuite-*.whl"))
            out.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(wheel) as z:
                (out / "gray-felt.png").write_bytes(z.read("robosuite/models/assets/textures/gray-felt.png"))
    return out


def fetch_concrete(cache: Path) -> Path:
    out = cache / "concrete"
    names = [f"concrete_g_{n}.jpg" for n in (4, 5, 8)]
    if not all((out / n).is_file() for n in names):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", "ufoai-textures=2.5-2"], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
            deb = next(Path(tmp).glob("ufoai-textures_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
            pk3 = next((Path(tmp) / "x").rglob("0textures.pk3"))
            out.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(pk3) as z:
                for n in names:
                    (out / n).write_bytes(z.read(f"textures/tex_ctp1/{n}"))
    return out


def fetch_gravel(cache: Path) -> Path:
    import skimage

    out = cache / "gravel"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(skimage.data_dir) / "gravel.png", out / "gravel.png")
    return out


TEXTURES = {
    # name: (fetch, crop side in photo pixels, image side, train share of the rows)
    "felt": (fetch_felt, 256, 256, 0.65),
    "concrete": (fetch_concrete, 256, 256, 0.7),
    "gravel": (fetch_gravel, 128, 128, 0.7),
}


def run(args: list[str], log: Path) -> float:
    """Run ``sparkvision ARGS``, output appended to ``log``; its wall seconds."""
    start = time.perf_counter()
    with log.open("a") as f:
        f.write(f"$ sparkvision {' '.join(args)}\n")
        f.flush()
        done = subprocess.run([*SPARKVISION, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"sparkvision {args[0]} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--textures", default="felt,concrete", help="comma-separated: " + ", ".join(TEXTURES))
    ap.add_argument("--cache", default=str(ROOT / "data" / "photos"), help="where the photos are kept")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "real_textures"))
    ap.add_argument("--label", default="defaults", help="names this configuration in the results")
    ap.add_argument("--train-count", type=int, default=100, help="defect-free training images")
    ap.add_argument("--test-count", type=int, default=10, help="test images per defect type and good")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="train.*=value overrides, repeatable")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(a.cache)
    sets = [x for s in a.set for x in ("--set", s)]
    print(f"{'texture':10} {'label':14} {'image AUROC':>11} {'pixel AUROC':>11} {'AUPRO':>6} {'train s':>8}")
    for name in a.textures.split(","):
        fetch, crop, side, share = TEXTURES[name]
        photos = fetch(cache)
        work = out / name / a.label
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log = work / "log.txt"
        raw, parquet = work / "raw", work / "parquet"
        run(["generate", "photos", "--photos", str(photos), "--out", str(raw), "--count", str(a.train_count),
             "--set", f"generate.fabric_test_count={a.test_count}", "--set", f"generate.photo_crop={crop}",
             "--set", f"generate.photo_image_size={side}", "--set", f"generate.photo_train_share={share}"], log)  # fmt: skip
        run(["ingest", "--format", "mvtec", "--input", str(raw), "--output", str(parquet),
             "--set", f"ingest.tile_size={side}", "--set", f"ingest.tile_stride={side}",
             "--set", "ingest.tile_resize=0", "--set", "ingest.min_row_groups=2"], log)  # fmt: skip
        prefix = f"bench-{name}-{a.label}"
        seconds = run(["train", "--model", "fabric_ae", "--data", str(parquet), "--workers", str(a.workers),
                       "--set", f"train.image_size={side}", "--set", f"train.registered_model_prefix={prefix}",
                       *sets], log)  # fmt: skip
        run(["inspect", "--model-uri", f"models:/{prefix}-fabric_ae@candidate", "--input", str(raw / "test"),
             "--output", str(work / "inspected")], log)  # fmt: skip
        evaluation = json.loads(next((work / "inspected").glob("v-*/_evaluation.json")).read_text())
        figures = evaluation["by_defect_type"]
        a_ = figures["all"]
        print(f"{name:10} {a.label:14} {a_['image_auroc']:11.3f} {a_['pixel_auroc']:11.3f} {a_['aupro']:6.3f} "
              f"{seconds:8.0f}", flush=True)  # fmt: skip
        for kind, f in sorted(figures.items()):
            if kind != "all":
                print(f"{'':10} {kind:14} {f['image_auroc']:11.3f} {f['pixel_auroc']:11.3f} {f['aupro']:6.3f}")
        with (out / "results.jsonl").open("a") as f:
            f.write(json.dumps({"texture": name, "label": a.label, "set": a.set, "train_seconds": round(seconds, 1),
                                "evaluation": figures, "at": time.strftime("%Y-%m-%d %H:%M")}) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
