"""Fault injection: odd and broken inputs through ingest AND scoring, and a killed training driver.

``CASES`` is the table: a file put on disk → what ingest does with it (kept, excluded on
purpose, or its quarantine reason) and what scoring does (scored, or its ``error_code``). All
cases share one data set folder, ingested once and scored once (module fixtures), so the table
costs two Spark jobs; every case checks its own row, and the folder as a whole checks that
every file on disk is one output row or one quarantine row (or one excluded file).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from sparkvision.config import Config
from sparkvision.data import images, publish
from sparkvision.data.schema import ERROR_CODE, QUARANTINE_REASON

ACCEPTED = "accepted"
SCORED = None
EXCLUDED = "excluded"
EXCLUDE = ("*.skip.png",)


def _pixels(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (8-bit grey) with a tiny, wrong IDAT: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _sixteen_bit() -> bytes:
    arr = np.full((24, 24), 32768, dtype=np.uint16)
    return _encode(Image.fromarray(arr), "PNG")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_pixels(40, 30, 7), "JPEG", exif=exif.tobytes())


def _truncated() -> bytes:
    data = _encode(_pixels(64, 64, 8), "JPEG")
    return data[: len(data) // 3]


Writer = Callable[[Path, Path], None]
"""Writes one case: ``(path of the case, folder outside the data set)``."""


def _bytes(data: Callable[[], bytes]) -> Writer:
    return lambda path, _outside: path.write_bytes(data())


def _dangling(path: Path, outside: Path) -> None:
    path.symlink_to(outside / f"gone-{path.name}")


def _link_to_good(path: Path, outside: Path) -> None:
    target = outside / f"target-{path.name}.png"
    target.write_bytes(_encode(_pixels(30, 30, 21), "PNG"))
    path.symlink_to(target)


def _duplicate(path: Path, _outside: Path) -> None:
    path.write_bytes((path.parents[1] / "good" / "00.png").read_bytes())


# (id, path below the data set root, writer, ingest outcome, scoring outcome)
CASES: list[tuple[str, str, Writer, str, str | None]] = [
    ("png", "cases/rgb.png", _bytes(lambda: _encode(_pixels(30, 20, 1), "PNG")), ACCEPTED, SCORED),
    ("jpeg", "cases/rgb.jpg", _bytes(lambda: _encode(_pixels(30, 20, 2), "JPEG")), ACCEPTED, SCORED),
    ("grey", "cases/grey.png", _bytes(lambda: _encode(_pixels(30, 20, 3, "L"), "PNG")), ACCEPTED, SCORED),
    ("rgba", "cases/rgba.png", _bytes(lambda: _encode(_pixels(30, 20, 4, "RGBA"), "PNG")), ACCEPTED, SCORED),
    ("palette", "cases/palette.png", _bytes(lambda: _encode(_pixels(30, 20, 5, "P"), "PNG")), ACCEPTED, SCORED),
    ("exif-rotated", "cases/rotated.jpg", _bytes(_exif_rotated), ACCEPTED, SCORED),
    ("tif", "cases/x.tif", _bytes(lambda: _encode(_pixels(30, 20, 6), "TIFF")), ACCEPTED, SCORED),
    ("tiff-upper", "cases/x2.TIFF", _bytes(lambda: _encode(_pixels(30, 20, 9), "TIFF")), ACCEPTED, SCORED),
    ("webp", "cases/x.webp", _bytes(lambda: _encode(_pixels(30, 20, 10), "WEBP", lossless=True)), ACCEPTED, SCORED),
    ("symlink", "cases/link.png", _link_to_good, ACCEPTED, SCORED),
    ("zero-byte", "cases/empty.png", _bytes(lambda: b""), images.ZERO_BYTES, images.ZERO_BYTES),
    ("not-an-image", "cases/text.jpg", _bytes(lambda: b"just some text\n"), images.NOT_AN_IMAGE, images.NOT_AN_IMAGE),
    ("truncated", "cases/truncated.jpg", _bytes(_truncated), images.TRUNCATED, images.TRUNCATED),
    ("cmyk", "cases/cmyk.jpg", _bytes(lambda: _encode(_pixels(30, 20, 11, "CMYK"), "JPEG")),
     images.UNEXPECTED_MODE, images.UNEXPECTED_MODE),
    ("grey-alpha", "cases/la.png", _bytes(lambda: _encode(_pixels(30, 20, 12, "LA"), "PNG")),
     images.UNEXPECTED_MODE, images.UNEXPECTED_MODE),
    ("16-bit", "cases/deep.png", _bytes(_sixteen_bit), images.UNEXPECTED_MODE, images.UNEXPECTED_MODE),
    ("1x1", "cases/dot.png", _bytes(lambda: _encode(_pixels(1, 1, 13), "PNG")),
     images.UNEXPECTED_SIZE, images.UNEXPECTED_SIZE),
    ("10000x10", "cases/strip.png", _bytes(lambda: _encode(_pixels(10000, 10, 14, "L"), "PNG")),
     images.UNEXPECTED_SIZE, images.UNEXPECTED_SIZE),
    ("bomb", "cases/bomb.png", _bytes(lambda: _png_header_only(40000, 40000)), images.TOO_LARGE, images.TOO_LARGE),
    ("bomb-pil-only-warns", "cases/bomb2.png", _bytes(lambda: _png_header_only(10000, 9000)),
     images.TOO_LARGE, images.TOO_LARGE),
    ("duplicate", "zcopy/dup.png", _duplicate, images.DUPLICATE_CONTENT, SCORED),
    ("outside-class-folder", "loose.png", _bytes(lambda: _encode(_pixels(30, 20, 15), "PNG")),
     images.MISSING_ANNOTATION, SCORED),
    ("hidden", "cases/.hidden.jpg", _bytes(lambda: _encode(_pixels(30, 20, 16), "JPEG")),
     images.HIDDEN_FILE, images.HIDDEN_FILE),
    ("underscore", "cases/_under.jpg", _bytes(lambda: _encode(_pixels(30, 20, 17), "JPEG")),
     images.HIDDEN_FILE, images.HIDDEN_FILE),
    ("in-hidden-folder", "cases/.cache/x.jpg", _bytes(lambda: _encode(_pixels(30, 20, 18), "JPEG")),
     images.HIDDEN_FILE, images.HIDDEN_FILE),
    ("extensionless-jpeg", "cases/noext", _bytes(lambda: _encode(_pixels(30, 20, 19), "JPEG")),
     images.UNSUPPORTED_EXTENSION, images.UNSUPPORTED_EXTENSION),
    ("text-file", "cases/notes.txt", _bytes(lambda: b"notes\n"), images.UNSUPPORTED_EXTENSION,
     images.UNSUPPORTED_EXTENSION),
    ("dangling-symlink", "cases/dead.jpg", _dangling, images.BROKEN_LINK, images.BROKEN_LINK),
    ("excluded", "cases/a.skip.png", _bytes(lambda: _encode(_pixels(30, 20, 20), "PNG")), EXCLUDED, SCORED),
    ("same-name-a", "a/same.png", _bytes(lambda: _encode(_pixels(30, 20, 22), "PNG")), ACCEPTED, SCORED),
    ("same-name-b", "b/same.png", _bytes(lambda: _encode(_pixels(30, 20, 23), "PNG")), ACCEPTED, SCORED),
]  # fmt: skip
GOOD = 6


def files_on_disk(root: Path) -> list[str]:
    """Every regular file and symbolic link (dangling too) under ``root``, relative, sorted."""
    found = []
    for folder, _dirs, names in os.walk(root):
        found += [Path(folder, n).relative_to(root).as_posix() for n in names]
    return sorted(found)


@pytest.fixture(scope="module")
def faults_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data set: ``good/`` (6 images) plus one file per case of ``CASES``."""
    root = tmp_path_factory.mktemp("faults") / "set"
    outside = tmp_path_factory.mktemp("faults-outside")
    (root / "good").mkdir(parents=True)
    for i in range(GOOD):
        (root / "good" / f"{i:02d}.png").write_bytes(_encode(_pixels(32, 32, 100 + i), "PNG"))
    for _, rel, write, _, _ in CASES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write(root / rel, outside)
    return root


@pytest.fixture(scope="module")
def ingested(spark, cfg: Config, faults_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from sparkvision.data.ingest import ingest

    out = tmp_path_factory.mktemp("faults-out") / "ds"
    icfg = cfg.replace(**{"ingest.exclude": json.dumps(list(EXCLUDE))}).ingest
    manifest = ingest(spark, "folder", str(faults_dir), str(out), icfg, workers=1)
    folder = publish.current(out).location.path
    data = pads.dataset(f"{folder}/data", format="parquet", partitioning="hive").to_table().to_pylist()
    quarantine = pads.dataset(f"{folder}/quarantine", format="parquet").to_table().to_pylist()
    return {"manifest": manifest, "data": data, "quarantine": quarantine}


@pytest.fixture(scope="module")
def scored(spark, cfg: Config, tracking, register_model, faults_dir: Path, tmp_path_factory) -> dict:
    from sparkvision.models import REGISTRY
    from sparkvision.scoring import score

    task = REGISTRY["attributes"]
    meta = task.prepare_meta({"table": "celeba", "image_size": cfg.train.image_size, "output": "faults"}, cfg.train)
    ref = register_model(task.build(cfg.train, meta).model, "attributes", meta, f"faults-{uuid.uuid4().hex[:6]}",
                         "fault-tests")  # fmt: skip
    out = tmp_path_factory.mktemp("faults-score") / "scores"
    summary = score(spark, ref.uri, str(faults_dir), str(out), cfg.score, tracking=tracking, log_to_run=False)
    rows = pads.dataset(publish.current(out).location.path, format="parquet").to_table().to_pylist()
    return {"summary": summary, "rows": rows}


def test_every_file_on_disk_is_a_row_or_quarantined_or_excluded(ingested: dict, faults_dir: Path) -> None:
    m, data, quarantine = ingested["manifest"], ingested["data"], ingested["quarantine"]
    on_disk = files_on_disk(faults_dir)
    assert len(on_disk) == GOOD + len(CASES)
    assert m["files_on_disk"] == len(on_disk)
    assert m["excluded_files"] == 1
    assert m["input_files"] == len(on_disk) - m["excluded_files"]
    assert m["input_files"] == m["source_images"] + m["quarantined"] == len(data) + len(quarantine)
    assert m["quarantined"] == sum(m["quarantine_by_reason"].values())
    seen = sorted([str(faults_dir / r["id"]) for r in data] + [r["source_path"] for r in quarantine])
    expected = sorted(str(faults_dir / rel) for rel in on_disk if not rel.endswith(".skip.png"))
    assert seen == expected


@pytest.mark.parametrize(("rel", "outcome"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_ingest_outcome(ingested: dict, faults_dir: Path, rel: str, outcome: str) -> None:
    ids = {r["id"] for r in ingested["data"]}
    reasons = {r["source_path"]: r[QUARANTINE_REASON] for r in ingested["quarantine"]}
    path = str(faults_dir / rel)
    if outcome == ACCEPTED:
        assert rel in ids and path not in reasons
    elif outcome == EXCLUDED:
        assert rel not in ids and path not in reasons
    else:
        assert reasons.get(path) == outcome and rel not in ids
        message = next(r["message"] for r in ingested["quarantine"] if r["source_path"] == path)
        assert path in message or rel.rsplit("/", 1)[-1] in message


def test_every_file_on_disk_is_a_score_row_with_a_unique_id(scored: dict, faults_dir: Path) -> None:
    rows, summary = scored["rows"], scored["summary"]
    on_disk = files_on_disk(faults_dir)
    assert sorted(r["source_path"] for r in rows) == sorted(str(faults_dir / rel) for rel in on_disk)
    assert sorted(r["id"] for r in rows) == on_disk  # the path below the input: unique across folders
    assert summary["inputs"] == summary["rows"] == len(on_disk) == summary["scored"] + summary["failed"]
    assert summary["failed"] == sum(r[ERROR_CODE] is not None for r in rows)


@pytest.mark.parametrize(("rel", "code"), [(c[1], c[4]) for c in CASES], ids=[c[0] for c in CASES])
def test_scoring_outcome(scored: dict, rel: str, code: str | None) -> None:
    row = next(r for r in scored["rows"] if r["id"] == rel)
    assert row[ERROR_CODE] == code
    if code is None:
        assert row["probabilities"] is not None and len(row["probabilities"]) == 40
    else:
        assert row["probabilities"] is None and row["error_message"]


def test_scoring_refuses_what_ingest_refuses(ingested: dict, scored: dict, faults_dir: Path) -> None:
    """The one validation: every file ingest quarantined for what it is (not for duplicates or
    a missing class folder, which are data-set facts) gets the same code from scoring."""
    codes = {r["id"]: r[ERROR_CODE] for r in scored["rows"]}
    dataset_facts = (images.DUPLICATE_CONTENT, images.MISSING_ANNOTATION)
    for r in ingested["quarantine"]:
        if r[QUARANTINE_REASON] not in dataset_facts:
            assert codes[Path(r["source_path"]).relative_to(faults_dir).as_posix()] == r[QUARANTINE_REASON]


# --------------------------------------------------------------------------- a killed driver

TRAIN_SCRIPT = """
import sys
from sparkvision.config import load_config
from sparkvision.tracking import Tracking
from sparkvision.training import train
from sparkvision.training.backend import InProcessBackend

data, uri, store, experiment = sys.argv[1:5]
cfg = load_config("test", ["train.epochs=500", "train.workers=1", "train.model=vae", f"paths.store={store}",
                           f"train.experiment={experiment}"])
train(None, cfg, data, backend=InProcessBackend(), tracking=Tracking(uri))
"""


def _run_with_driver(tracking, experiment: str, driver: dict, age_s: float) -> str:
    from sparkvision.tracking import liveness

    run_id = tracking.create_run(experiment, "fake-driver")
    tracking.set_tags(run_id, {liveness.DRIVER_TAG: json.dumps(driver),
                               liveness.HEARTBEAT_TAG: f"{time.time() - age_s:.3f}"})  # fmt: skip
    return run_id


def test_a_killed_driver_is_marked_killed_by_runs_clean(
    cfg: Config, tracking, celeba_parquet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparkvision import commands, procs, tempdirs
    from sparkvision.tracking import liveness

    experiment = f"faults-kill-{uuid.uuid4().hex[:6]}"
    log = (tmp_path / "train.log").open("w")
    child = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(celeba_parquet), tracking.uri,
                              str(tmp_path / "store"), experiment], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    ticks = procs.start_ticks(child.pid)
    try:
        deadline = time.time() + 180
        run = None
        while time.time() < deadline and child.poll() is None:
            exp = tracking.client.get_experiment_by_name(experiment)
            runs = tracking.client.search_runs([exp.experiment_id]) if exp else []
            run = runs[0] if runs else None
            if run is not None and run.data.tags.get(liveness.LAST_EPOCH_TAG):
                break
            time.sleep(0.5)
        assert run is not None and run.data.tags.get(liveness.LAST_EPOCH_TAG), (tmp_path / "train.log").read_text()
        temp = tempdirs.base_dir() / f"{child.pid}-{ticks}"
        assert temp.is_dir() and any(p.name.startswith("sv-train-") for p in temp.iterdir())
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    assert tracking.run(run.info.run_id).info.status == "RUNNING"  # nobody finished it
    alive = _run_with_driver(tracking, experiment, json.loads(liveness.driver_tags()[liveness.DRIVER_TAG]), 3600)
    elsewhere = _run_with_driver(tracking, experiment, {"host": "elsewhere.invalid", "pid": 1}, 3600)

    mine = tempdirs.mkdtemp("sv-test-")
    short = cfg.replace(**{"train.heartbeat_timeout_s": "1"})
    time.sleep(1.5)
    assert commands.runs(short, action="clean", experiment=experiment, tracking_uri=tracking.uri) == 0
    printed = capsys.readouterr().out
    killed = tracking.run(run.info.run_id)
    assert killed.info.status == "KILLED"
    last = killed.data.tags[liveness.LAST_EPOCH_TAG]
    assert int(last) >= 1 and f"after epoch {last}" in killed.data.tags[liveness.KILLED_TAG]
    assert f"{run.info.run_id}  killed" in printed and "1 marked KILLED" in printed
    assert tracking.run(alive).info.status == "RUNNING"  # this process is its driver: alive
    assert tracking.run(elsewhere).info.status == "RUNNING"  # another host: not checked, not marked
    assert not temp.exists()  # swept: its process is gone
    assert mine.is_dir()  # this process's own folder is kept
    assert socket.gethostname() in killed.data.tags[liveness.DRIVER_TAG]


def test_temp_sweep_keeps_live_processes_and_foreign_names(tmp_path: Path) -> None:
    from sparkvision import tempdirs

    mine = tempdirs.mkdtemp("sv-test-")
    dead = tempdirs.base_dir() / "999999999-1"
    dead.mkdir(parents=True, exist_ok=True)
    other = tempdirs.base_dir() / "not-a-process-folder"
    other.mkdir(exist_ok=True)
    removed = tempdirs.sweep()
    assert dead in removed and not dead.exists()
    assert mine.is_dir() and other.is_dir()
    shutil.rmtree(other)


def _dead_driver() -> dict:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    from sparkvision import procs

    ticks = procs.start_ticks(child.pid)
    child.kill()
    child.wait()
    return {"host": socket.gethostname(), "pid": child.pid, "ticks": ticks}


@pytest.mark.parametrize(
    ("driver", "age_s", "status"),
    [("dead", 3600, "KILLED"), ("dead", 0, "RUNNING"), ("this process", 3600, "RUNNING"),
     ("other host", 3600, "RUNNING")],
    ids=["stale-and-gone", "fresh-heartbeat", "driver-alive", "driver-elsewhere"],
)  # fmt: skip
def test_the_next_train_marks_only_stale_runs_of_gone_drivers(
    cfg: Config, tracking, driver: str, age_s: float, status: str
) -> None:
    """What ``trainer.train`` runs before it starts or resumes a run (``sweep_killed_runs``)."""
    from sparkvision.tracking import liveness
    from sparkvision.training.trainer import sweep_killed_runs

    experiment = f"faults-sweep-{uuid.uuid4().hex[:6]}"
    who = {"dead": _dead_driver, "this process": lambda: json.loads(liveness.driver_tags()[liveness.DRIVER_TAG]),
           "other host": lambda: {"host": "elsewhere.invalid", "pid": 1}}[driver]()  # fmt: skip
    run_id = _run_with_driver(tracking, experiment, who, age_s)
    swept = sweep_killed_runs(tracking, cfg.replace(**{"train.experiment": experiment}))
    assert [s.run_id for s in swept] == [run_id]
    assert tracking.run(run_id).info.status == status
