"""``sparkvision vae``: the attribute vectors of the Spark job equal the same means computed on the
driver, and the four commands work through the CLI: what the user reads, the files in ``--out``
and the artifacts under ``latent/`` of the model's run, one line per bad request.

A registered VAE with random weights is enough for the mechanics; that trained vectors move faces
the way the attribute CNN sees it is ``tests/training/test_quality.py``'s
``test_vae_attribute_vectors_move_held_out_faces`` (and ``benchmarks/quality.py --families latent``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from sparkvision.config import Config


@pytest.fixture(scope="module")
def vae_ref(register_model, cfg: Config, celeba_parquet: Path):
    from sparkvision.data import publish
    from sparkvision.models import REGISTRY

    manifest = json.loads((Path(publish.current(celeba_parquet).location.path) / "manifest.json").read_text())
    meta = REGISTRY["vae"].prepare_meta(manifest, cfg.train)
    model = REGISTRY["vae"].build(cfg.train, meta).model
    return register_model(model, "vae", meta, f"latent-vae-{uuid.uuid4().hex[:6]}", "latent-tests")


def test_vectors_of_the_spark_job_are_the_attribute_means(spark, cfg: Config, tracking, vae_ref,
                                                          celeba_parquet: Path) -> None:  # fmt: skip
    """Every train row is used once; a vector with ``MIN_PAIRS`` people who have images with and without the
    attribute is the mean over them of (their mean mu with it minus without it), any other the mean mu of all
    images with it minus all without, as numpy says."""
    from sparkvision import latent
    from sparkvision.data import publish
    from sparkvision.data.schema import CELEBA_ATTRIBUTES
    from sparkvision.models.common import decode_column, stack_column
    from sparkvision.scoring import batch

    vectors, counts = latent.compute_vectors(spark, batch.resolve_model(spark, vae_ref.uri, tracking),
                                             str(celeba_parquet), cfg.score)  # fmt: skip
    folder = Path(publish.current(celeba_parquet).location.path)
    train = (spark.read.parquet(str(folder / "data")).where("split = 'train'")
             .select("image", "attributes", "identity").toPandas())  # fmt: skip
    assert counts["used"] == len(train) == json.loads((folder / "manifest.json").read_text())["splits"]["train"]
    assert counts["failed"] == 0
    model = latent.load_model(vae_ref.uri, tracking)
    mu = model.encode(decode_column(train, int(model.meta["image_size"])))
    has = stack_column(train, "attributes") > 0.5
    assert vectors.names == CELEBA_ATTRIBUTES
    np.testing.assert_array_equal(vectors.positives, has.sum(axis=0))
    np.testing.assert_array_equal(vectors.negatives, len(train) - has.sum(axis=0))
    both = [i for i in range(len(CELEBA_ATTRIBUTES)) if 0 < has[:, i].sum() < len(train)]
    assert "Smiling" in [CELEBA_ATTRIBUTES[i] for i in both]
    people = train["identity"].to_numpy()
    for i in both:
        mixed = [p for p in np.unique(people) if 0 < has[people == p, i].sum() < (people == p).sum()]
        assert vectors.pairs[i] == len(mixed)
        if len(mixed) >= latent.MIN_PAIRS:
            expected = np.mean([mu[(people == p) & has[:, i]].mean(axis=0) - mu[(people == p) & ~has[:, i]].mean(axis=0)
                                for p in mixed], axis=0)  # fmt: skip
            assert vectors.methods[i] == "identity"
        else:
            expected = mu[has[:, i]].mean(axis=0) - mu[~has[:, i]].mean(axis=0)
            assert vectors.methods[i] == "global"
        np.testing.assert_allclose(vectors.vectors[i], expected, rtol=1e-4, atol=1e-5)
    assert {"identity", "global"} <= set(vectors.methods), vectors.methods  # Smiling varies within people, Male not
    for i in set(range(len(CELEBA_ATTRIBUTES))) - set(both):
        assert np.isnan(vectors.vectors[i]).all()
        with pytest.raises(latent.LatentError, match="expected train images with and without it"):
            vectors.vector(CELEBA_ATTRIBUTES[i])
    again = latent.Vectors.from_frame(vectors.to_frame())
    np.testing.assert_array_equal(np.nan_to_num(again.vectors), np.nan_to_num(vectors.vectors))
    np.testing.assert_array_equal(again.pairs, vectors.pairs)
    assert again.methods == vectors.methods
    assert again.model_uri == vectors.model_uri == f"models:/{vae_ref.name}/{vae_ref.version}"


@pytest.mark.parametrize(("text", "expected"), [
    ("-3:3:7", [-3, -2, -1, 0, 1, 2, 3]), ("0:1:3", [0, 0.5, 1]), ("-1,0,2.5", [-1, 0, 2.5]), ("2", [2]),
])  # fmt: skip
def test_parse_steps(text: str, expected: list[float]) -> None:
    from sparkvision import latent

    np.testing.assert_allclose(latent.parse_steps(text), expected)


@pytest.mark.parametrize("text", ["1:2", "a:b:3", "0:1:0", "x"])
def test_parse_steps_rejects(text: str) -> None:
    from sparkvision import latent

    with pytest.raises(latent.LatentError, match="expected START:STOP:COUNT"):
        latent.parse_steps(text)


def test_parse_attributes() -> None:
    from sparkvision import latent

    assert latent.parse_attributes("Smiling") == {"Smiling": 1.0}
    assert latent.parse_attributes("Smiling=+2, Eyeglasses=-1.5") == {"Smiling": 2.0, "Eyeglasses": -1.5}
    with pytest.raises(latent.LatentError, match="NAME=WEIGHT"):
        latent.parse_attributes("Smiling=lots")


def test_vae_commands_through_the_cli(vae_ref, celeba_parquet: Path, tracking, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import pandas as pd

    from sparkvision.cli import main
    from sparkvision.data.generators.celeba import generate_new_images

    photos = generate_new_images(tmp_path / "photos", count=2, seed=9)
    uri, run, pinned = vae_ref.uri, vae_ref.run_id, f"models:/{vae_ref.name}/{vae_ref.version}"
    common = ["--env", "test", "--model-uri", uri, "--out", str(tmp_path / "out")]
    assert main(["vae", "morph", *common, "--image", str(photos[0])]) == 2
    errors = _errors(capsys.readouterr().err)
    assert len(errors) == 1 and f"run: sparkvision vae vectors --model-uri {uri} --data DATASET" in errors[0], errors

    assert main(["vae", "vectors", *common, "--data", str(celeba_parquet)]) == 0
    out = capsys.readouterr().out
    assert f"attribute vectors of {pinned} over " in out and f"run {run} artifact latent/attribute_vectors" in out
    table = pd.read_parquet(tmp_path / "out" / "attribute_vectors.parquet")
    assert list(table["attribute"])[:3] == ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive"] and len(table) == 40
    assert set(table.columns) >= {"positives", "negatives", "norm", "vector", "model_uri", "dataset"}

    assert main(["vae", "generate", *common, "--count", "12", "--seed", "3", "--temperature", "0.7"]) == 0
    assert main(["vae", "morph", *common, "--image", str(photos[0]), "--attribute", "Smiling=+2,Male=+1",
                 "--steps", "-1:1:3"]) == 0  # fmt: skip
    assert main(["vae", "interpolate", *common, "--a", str(photos[0]), "--b", str(photos[1]), "--steps", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ["generate_seed3_t0.7.png", "morph_Smiling_Male.png", "interpolate.png"]
    assert [ln.split(": ", 1)[0] for ln in lines] == [f"vae {a} with {pinned}" for a in
                                                      ("generate", "morph", "interpolate")], lines  # fmt: skip
    for line, name in zip(lines, names, strict=True):
        assert (tmp_path / "out" / name).is_file() and line.endswith(f"run {run} artifact latent/{name}"), line
    assert set(tracking.list_artifacts(run, "latent")) == {f"latent/{n}" for n in [*names, "attribute_vectors.parquet"]}

    for argv, message in (
        (["morph", "--image", str(photos[0]), "--attribute", "Smilng"], "did you mean Smiling?"),
        (["morph", "--image", str(photos[0]), "--steps", "1:2"], "--steps: expected START:STOP:COUNT"),
        (["morph", "--image", str(tmp_path / "none.png")], "expected an image file, found nothing there"),
        (["morph", "--image", str(tmp_path / "photos")], "expected an image file"),
        (["interpolate", "--a", str(photos[0])], "expected --a and --b"),
        (["generate", "--temperature", "warm"], "--temperature: expected a number"),
        (["vectors"], "--data"),
    ):
        assert main(["vae", *argv, *common]) == 2
        errors = _errors(capsys.readouterr().err)
        assert len(errors) == 1 and message in errors[0], errors


def _errors(err: str) -> list[str]:
    """The user-error lines of stderr (our INFO progress lines may precede them)."""
    return [line for line in err.splitlines() if line.startswith("sparkvision: error: ")]
