"""Face enroll/identify with a VAE trained a few epochs in-process on the ingested tiny CelebA set,
logged and registered on the real MLflow server.

Enrollment uses the first image of each train identity; the other images of those identities
are the "known" probes, and val/test identities (never enrolled; partitions are identity-disjoint)
are the impostors. Assertions are on what must hold whatever the embedding quality: enrolled
images map to their own identity with similarity ~1, the threshold chosen on val meets the
false-accept target there, and "unknown" is exactly "best similarity below the threshold".
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparkvision.config import Config
from sparkvision.data import publish


@pytest.fixture(scope="module")
def vae_uri(register_model, cfg: Config, celeba_parquet: Path) -> str:
    """A VAE trained 30 epochs on the train split with ``model.fit``, registered as ``@candidate``."""
    import pyarrow.parquet as pq
    import tensorflow as tf

    from sparkvision.models import REGISTRY
    from sparkvision.training.optim import make_optimizer

    tf.keras.utils.set_random_seed(0)
    task = REGISTRY["vae"]
    manifest = json.loads((Path(publish.current(celeba_parquet).location.path) / "manifest.json").read_text())
    meta = task.prepare_meta(manifest, cfg.train)
    model = task.build(cfg.train, meta).compile(make_optimizer(cfg.train, 1))
    frame = pq.read_table(str(Path(publish.current(celeba_parquet).location.path) / "data" / "split=train")).to_pandas()
    x, _ = task.arrays(frame, meta)
    model.fit(x, x, epochs=30, batch_size=8, verbose=0)
    name = f"faces-test-vae-{uuid.uuid4().hex[:6]}"
    return register_model(model, "vae", meta, name, "faces-tests").uri


@pytest.fixture(scope="module")
def enrolled(spark, cfg: Config, tracking, vae_uri: str, celeba_parquet: Path, tmp_path_factory) -> dict:
    from sparkvision.identification import enroll

    gallery = tmp_path_factory.mktemp("gallery") / "g"
    manifest = enroll(spark, vae_uri, str(celeba_parquet), str(gallery), cfg.faces, images_per_identity=1,
                      tracking=tracking)  # fmt: skip
    return {"gallery": gallery, "manifest": manifest}


@pytest.fixture(scope="module")
def identified(spark, cfg: Config, tracking, enrolled: dict, celeba_parquet: Path, tmp_path_factory) -> dict:
    import pyarrow.parquet as pq

    from sparkvision.identification import identify

    out = tmp_path_factory.mktemp("identified") / "out"
    summary = identify(spark, str(enrolled["gallery"]), str(celeba_parquet), str(out), cfg.faces, tracking=tracking)
    return {"summary": summary, "frame": pq.read_table(_current(out)).to_pandas(), "out": out}


def _current(out: Path) -> str:
    """The folder of the version ``out``'s pointer names now."""
    return publish.current(out).location.path


def splits_of(dataset: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(_current(dataset) + "/data", columns=["id", "identity", "split"]).to_pandas()


def test_gallery_tables_and_threshold(enrolled: dict, celeba_parquet: Path, cfg: Config) -> None:
    import pyarrow.parquet as pq

    rows = splits_of(celeba_parquet)
    train_ids = set(rows.loc[rows["split"] == "train", "identity"])
    m, gallery = enrolled["manifest"], enrolled["gallery"]
    assert json.loads((Path(_current(gallery)) / "manifest.json").read_text())["threshold"] == m["threshold"]
    idents = pq.read_table(_current(gallery) + "/identities").to_pandas()
    assert set(idents["identity"]) == train_ids and (idents["n_images"] == 1).all()
    assert m["identities"] == len(train_ids) == m["images"]
    norms = np.linalg.norm(np.stack(idents["centroid"].to_numpy()), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    emb = pq.read_table(_current(gallery) + "/embeddings").to_pandas()
    assert len(emb) == len(train_ids) and set(emb["split"]) == {"train"}
    assert m["threshold_source"] == "val" and m["val_probes"] == int((rows["split"] == "val").sum())
    assert m["val_far"] <= cfg.faces.target_far
    assert m["model"]["pinned_uri"].startswith("models:/faces-test-vae-")


def test_identify_mechanics_and_accuracy(identified: dict, enrolled: dict, celeba_parquet: Path) -> None:
    frame, s = identified["frame"], identified["summary"]
    threshold = enrolled["manifest"]["threshold"]
    assert len(frame) == len(splits_of(celeba_parquet)) == s["inputs"] and frame["source_path"].is_unique
    assert frame["error_code"].isna().all()
    # enrolled images: their own identity, similarity ~1
    own = frame[frame["enrolled"]]
    assert len(own) == enrolled["manifest"]["images"]
    assert (own["best_identity"] == own["true_identity"]).all() and (own["similarity"] > 0.9999).all()
    # open-set rule, row by row
    accepted = frame["similarity"] >= np.float32(threshold)
    assert (frame.loc[~accepted, "predicted_label"] == "unknown").all()
    assert frame.loc[~accepted, "predicted_identity"].isna().all()
    assert (frame.loc[accepted, "predicted_identity"] == frame.loc[accepted, "best_identity"]).all()
    # val identities were never enrolled: the false-accept rate chosen on them holds
    val = frame[frame["split"] == "val"]
    assert (val["similarity"] < np.float32(threshold)).mean() >= 1 - enrolled["manifest"]["target_far"]
    # summary figures agree with the rows
    known = frame[(frame["split"] == "train") & ~frame["enrolled"]]
    assert s["known_probes"] == len(known)
    assert s["rank1_accuracy"] == round((known["best_identity"] == known["true_identity"]).mean(), 4)
    impostors = frame[frame["split"] != "train"]
    assert s["unknown_probes"] == len(impostors) and s["far"] == round(accepted[impostors.index].mean(), 4)
    assert s["enrolled_self_match"] == round((own["predicted_identity"] == own["true_identity"]).mean(), 4)
    print(f"\nfaces: rank-1 {s['rank1_accuracy']} top-1 {s['top1_accuracy']} (chance "
          f"{1 / enrolled['manifest']['identities']:.2f}, {s['known_probes']} known probes), FAR {s['far']} at threshold {threshold:.4f}")  # fmt: skip
    # a trained VAE's mu separates the generated identities better than chance
    assert s["rank1_accuracy"] > 1.5 / enrolled["manifest"]["identities"]


def test_unknown_when_threshold_above_best_similarity(
    spark, cfg: Config, tracking, enrolled, identified, tmp_path
) -> None:
    """An identity not enrolled is 'unknown' once the threshold exceeds its best similarity."""
    from sparkvision.data.generators.celeba import generate_new_images
    from sparkvision.identification import identify

    folder = tmp_path / "new"
    generate_new_images(folder, count=3, seed=11)  # new identities, mixed formats, plain folder input
    first = identify(
        spark,
        str(enrolled["gallery"]),
        str(folder),
        str(tmp_path / "a"),
        cfg.faces,
        threshold=-1.0,
        tracking=tracking,
    )
    import pyarrow.parquet as pq

    rows = pq.read_table(_current(tmp_path / "a")).to_pandas()
    assert first["accepted"] == 3 and "top1_accuracy" not in first  # threshold -1 accepts everybody
    above = float(rows["similarity"].max()) + 1e-4
    second = identify(
        spark,
        str(enrolled["gallery"]),
        str(folder),
        str(tmp_path / "b"),
        cfg.faces,
        threshold=above,
        tracking=tracking,
    )
    again = pq.read_table(_current(tmp_path / "b")).to_pandas()
    assert second["unknown"] == 3 and (again["predicted_label"] == "unknown").all()
    assert (again["model_version"] == rows["model_version"]).all() and again["model_run_id"].notna().all()
