"""Batch scoring end to end: real registered models on the real MLflow server, local Spark."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparkvision.config import Config
from sparkvision.data import publish
from sparkvision.data.images import REASONS

LINEAGE = ["source_path", "content_hash", "model_name", "model_version", "model_run_id", "model_uri", "scored_at"]
OUTPUTS = {"attributes": ["probabilities", "predicted"], "vae": ["mu", "recon_error"]}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def read_output(out: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(publish.current(out).location.path).to_pandas()


def pyfunc_reference(uri: str, files: list[Path]) -> pd.DataFrame:
    """What the pyfunc itself predicts on the same bytes, in one process."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(uri)
    pred = model.predict(pd.DataFrame({"image": [p.read_bytes() for p in files]}))
    pred.index = [str(p.absolute()) for p in files]
    return pred


@pytest.fixture(scope="module")
def scored(spark, cfg: Config, tracking, attributes_model: dict[str, str], new_images: Path, tmp_path_factory) -> dict:
    from sparkvision.scoring import score

    out = tmp_path_factory.mktemp("score") / "attributes"
    summary = score(
        spark, attributes_model["uri"], str(new_images), str(out), cfg.score, incremental=False, tracking=tracking
    )
    return {"out": out, "summary": summary, "frame": read_output(out)}


def test_one_row_per_input_with_lineage(scored: dict, attributes_model: dict[str, str], new_images: Path) -> None:
    frame, summary = scored["frame"], scored["summary"]
    files = all_files(new_images)  # notes.txt too: an unsupported_extension row
    assert sorted(frame["source_path"]) == sorted(str(p.absolute()) for p in files)
    assert sorted(frame["id"]) == sorted(p.relative_to(new_images).as_posix() for p in files)
    assert frame["source_path"].is_unique
    assert set(LINEAGE + OUTPUTS["attributes"] + ["error_code", "error_message"]) <= set(frame.columns)
    assert (frame["model_name"] == attributes_model["name"]).all()
    assert (frame["model_version"] == attributes_model["version"]).all()
    assert (frame["model_run_id"] == attributes_model["run_id"]).all()
    assert (frame["model_uri"] == f"models:/{attributes_model['name']}/{attributes_model['version']}").all()
    assert frame["scored_at"].nunique() == 1
    import hashlib

    for p in image_files(new_images):
        row = frame[frame["source_path"] == str(p.absolute())].iloc[0]
        assert row["content_hash"] == hashlib.sha256(p.read_bytes()).hexdigest()
    # deterministic order: by content hash (none for files never read: first), then path
    hashes = list(frame["content_hash"].fillna(""))
    assert hashes == sorted(hashes)
    assert summary["inputs"] == len(files) and summary["scored"] == len(files) - 3 and summary["failed"] == 3
    assert (
        json.loads((Path(publish.current(scored["out"]).location.path) / "_summary.json").read_text())[
            "failed_by_reason"
        ]
        == summary["failed_by_reason"]
    )
    assert summary["model"]["run_id"] == attributes_model["run_id"]
    assert summary["images_per_s"] > 0
    from mlflow import MlflowClient

    logged = MlflowClient().list_artifacts(attributes_model["run_id"], f"scoring/{scored['out'].name}")
    assert [a.path for a in logged] == [summary["logged_to_run"]]


def test_corrupt_files_get_error_rows_and_others_are_scored(scored: dict) -> None:
    frame = scored["frame"]
    bad = frame[frame["source_path"].str.endswith(("broken.jpg", "empty.png", "notes.txt"))].set_index("id")
    assert len(bad) == 3
    assert bad.loc["sub/empty.png", "error_code"] == "zero_bytes"
    assert bad.loc["notes.txt", "error_code"] == "unsupported_extension"
    assert bad.loc["broken.jpg", "error_code"] in REASONS and bad["error_message"].notna().all()
    assert bad["probabilities"].isna().all() and bad["predicted"].isna().all()
    assert scored["summary"]["failed_by_reason"] == bad["error_code"].value_counts().sort_index().to_dict()
    good = frame[~frame["id"].isin(bad.index)]
    assert good["error_code"].isna().all() and good["error_message"].isna().all()
    assert all(len(p) == 40 and np.all((p >= 0) & (p <= 1)) for p in good["probabilities"])


def test_predictions_equal_pyfunc_predict(scored: dict, attributes_model: dict[str, str], new_images: Path) -> None:
    files = [p for p in image_files(new_images) if p.name not in ("broken.jpg", "empty.png")]
    ref = pyfunc_reference(attributes_model["uri"], files)
    frame = scored["frame"].set_index("source_path")
    for path in ref.index:
        np.testing.assert_allclose(frame.loc[path, "probabilities"], ref.loc[path, "probabilities"], atol=1e-5)
        assert list(frame.loc[path, "predicted"]) == list(ref.loc[path, "predicted"])


def test_rerun_is_identical_except_scored_at(
    spark, cfg: Config, tracking, scored: dict, attributes_model, new_images
) -> None:
    from sparkvision.scoring import score

    again = score(
        spark,
        attributes_model["uri"],
        str(new_images),
        str(scored["out"]),
        cfg.score,
        incremental=False,
        tracking=tracking,
    )
    second = read_output(scored["out"])
    first = scored["frame"]
    assert len(second) == len(first) and second["source_path"].is_unique
    assert again["version"] != scored["summary"]["version"]
    cols = [c for c in first.columns if c != "scored_at"]
    pd.testing.assert_frame_equal(first[cols].reset_index(drop=True), second[cols].reset_index(drop=True))


@pytest.mark.parametrize("task", ["vae"])
def test_other_task_outputs(
    spark, cfg: Config, tracking, vae_model, new_images: Path, tmp_path: Path, task: str
) -> None:
    from sparkvision.scoring import score

    files = [p for p in image_files(new_images) if p.name not in ("broken.jpg", "empty.png")][:4]
    folder = tmp_path / "in"
    folder.mkdir()
    for p in files:
        shutil.copy(p, folder / p.name)
    summary = score(spark, vae_model["uri"], str(folder / "*"), str(tmp_path / "out"), cfg.score, tracking=tracking)
    frame = read_output(tmp_path / "out").set_index("source_path")
    assert summary["scored"] == 4 and set(OUTPUTS[task]) <= set(frame.columns)
    ref = pyfunc_reference(vae_model["uri"], [folder / p.name for p in files])
    for path in ref.index:
        np.testing.assert_allclose(frame.loc[path, "mu"], ref.loc[path, "mu"], atol=1e-5)
        np.testing.assert_allclose(frame.loc[path, "recon_error"], ref.loc[path, "recon_error"], rtol=1e-4)


def test_incremental_scores_only_new_files(
    spark, cfg: Config, tracking, attributes_model, new_images, tmp_path: Path
) -> None:
    from sparkvision.data.generators.celeba import generate_new_images
    from sparkvision.scoring import score

    folder = tmp_path / "in"
    shutil.copytree(new_images, folder)
    out = tmp_path / "out"
    first = score(spark, attributes_model["uri"], str(folder), str(out), cfg.score, incremental=True, tracking=tracking)
    before = read_output(out)
    assert first["scored"] + first["failed"] == len(before) == len(all_files(folder))
    new = generate_new_images(tmp_path / "more", count=1, seed=99)[0]
    shutil.copy(new, folder / "added.png")
    second = score(
        spark, attributes_model["uri"], str(folder), str(out), cfg.score, incremental=True, tracking=tracking
    )
    after = read_output(out)
    assert second["scored"] == 1 and second["failed"] == 0 and second["skipped"] == len(before)
    assert len(after) == len(before) + 1 and after["source_path"].is_unique
    added = after[after["source_path"] == str((folder / "added.png").absolute())]
    assert len(added) == 1 and added["scored_at"].iloc[0] != before["scored_at"].iloc[0]
    old = after[after["source_path"] != str((folder / "added.png").absolute())].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before.reset_index(drop=True))


def test_two_concurrent_incremental_scorings_one_commits_the_other_is_refused(
    spark, cfg: Config, tracking, attributes_model, new_images, race_writers, tmp_path: Path
) -> None:
    """Two ``score --incremental`` runs on one output: the first to commit wins, the other is
    refused in one line naming the committed version, and no scored row is lost."""
    from sparkvision.data.generators.celeba import generate_new_images
    from sparkvision.scoring import score

    folder = tmp_path / "in"
    shutil.copytree(new_images, folder)
    out = tmp_path / "out"
    score(spark, attributes_model["uri"], str(folder), str(out), cfg.score, incremental=True, tracking=tracking)
    before = read_output(out)
    shutil.copy(generate_new_images(tmp_path / "more", count=1, seed=98)[0], folder / "added.png")
    won, lost = race_writers(lambda i: score(spark, attributes_model["uri"], str(folder), str(out), cfg.score,
                                             incremental=True, tracking=tracking))  # fmt: skip
    message = str(lost[0])
    assert "\n" not in message and f"committed version {won[0]['version']}" in message, message
    after = read_output(out)
    assert publish.current(out).version == won[0]["version"]
    assert len(after) == len(before) + 1 and after["source_path"].is_unique
    assert str((folder / "added.png").absolute()) in set(after["source_path"])


def test_every_image_extension_is_listed(spark, every_format_dir: Path) -> None:
    """TIFF and upper-case names too: scoring lists what ingest reads (``IMAGE_EXTENSIONS``)."""
    from sparkvision.scoring.batch import read_input

    listed = read_input(spark, str(every_format_dir)).select("source_path").toPandas()["source_path"]
    expected = [str(p.absolute()) for p in every_format_dir.glob("*/*") if p.suffix != ".txt"]
    assert sorted(listed) == sorted(expected)
    assert str((every_format_dir / "cat" / "05.tif").absolute()) in set(listed)


def test_input_partitions_hold_equal_file_counts_whatever_the_file_sizes(spark, tmp_path: Path) -> None:
    """Scoring time follows the image count, so partitions are packed by count: 8 large PNGs of noise
    (about 200 KB each) and 24 small JPEGs (about 1 KB) split into 4 partitions of 8 files, give or take
    the one file per partition of Spark's next-fit packing; packing by bytes put the large files in
    partitions of 2 and the small ones in partitions of up to 18."""
    from PIL import Image
    from pyspark.sql import functions as F

    from sparkvision.config import ScoreConfig
    from sparkvision.scoring.batch import job_conf, read_input
    from sparkvision.spark import session_conf

    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(tmp_path / f"big_{i}.png")
    for i in range(24):
        Image.new("RGB", (32, 32), (i * 10, 0, 0)).save(tmp_path / f"small_{i:02d}.jpg")
    with session_conf(spark, job_conf(spark, ScoreConfig(partitions=4))):
        counts = (
            read_input(spark, str(tmp_path)).groupBy(F.spark_partition_id().alias("p")).count().toPandas()
        )  # fmt: skip
    assert len(counts) == 4 and counts["count"].sum() == 32
    assert counts["count"].max() - counts["count"].min() <= 3, sorted(counts["count"])


def test_one_listing_finds_the_empty_and_unusable_files_of_a_folder_and_none_beside_a_file(tmp_path: Path) -> None:
    """``survey_input`` lists a folder once: zero-byte images (which Spark's scan drops) are in
    ``empty``, the files Spark never reads in ``unusable_files``. A single file input is that file
    alone: its neighbours are not inputs."""
    from sparkvision.scoring.batch import survey_input, unusable_files

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "empty.png").write_bytes(b"")
    (tmp_path / "sub" / ".hidden.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "ok.png").write_bytes(b"x")
    survey = survey_input(str(tmp_path))
    assert survey is not None and survey.empty == ["sub/empty.png"]
    assert sorted(u[1] for u in unusable_files(str(tmp_path), survey)) == ["notes.txt", "sub/.hidden.png"]
    assert survey_input(str(tmp_path / "ok.png")) is None and unusable_files(str(tmp_path / "ok.png")) == []
