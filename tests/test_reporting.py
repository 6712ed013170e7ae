"""The HTML run report against a real MLflow server: the headline verdict first, curves, embedded
pictures, registered versions with aliases, scoring summaries, metrics, the parameters last;
logged back to the run."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def reported_run(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A finished VAE run with params, a 3-step metric history, its headline metric, two pictures and a
    registered version."""
    import mlflow
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("report-run")
    pics = tmp / "pictures"
    pics.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(pics / "recon.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(pics / "boxes.jpg")
    (tmp / "notes.txt").write_text("not a picture")
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("report-test")
    with mlflow.start_run(run_name="report-me", tags={"sparkvision.task": "vae"}) as run:
        mlflow.log_params({"epochs": 3, "latent_dim": 16})
        mlflow.log_metric("test_recon_mse_ratio", 0.25)
        for step, (loss, val) in enumerate([(1.5, 1.7), (0.9, 1.1), (0.4, 0.8)]):
            mlflow.log_metric("loss", loss, step=step)
            mlflow.log_metric("val_loss", val, step=step)
        mlflow.log_metric("test_accuracy", 0.875)
        mlflow.log_artifacts(str(pics), "pictures")
        mlflow.log_artifact(str(tmp / "notes.txt"), "pictures")
    client = MlflowClient()
    name = "report-test-model"
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/pictures", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "candidate", mv.version)
    return {"run_id": run.info.run_id, "name": name, "version": str(mv.version), "tmp": str(tmp)}


def test_report_has_metrics_curves_pictures_versions_and_is_logged(
    reported_run: dict[str, str], mlflow_server: str, tracking, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from sparkvision.reporting import log_scoring_summary, write_report

    run_id = reported_run["run_id"]
    summary = {"output": "/data/scored/celeba-new", "inputs": 12, "scored": 11, "failed": 1,
               "failed_by_reason": {"truncated": 1}, "images_per_s": 321.5}  # fmt: skip
    assert log_scoring_summary(tracking, run_id, summary) == "scoring/celeba-new/_summary.json"

    out = write_report(tracking, run_id, tmp_path / "r.html",
                       summaries=[{"output": "/x/passed", "inputs": 5, "top1_accuracy": 0.6}])  # fmt: skip
    text = out.read_text()

    # what a person came for first, the parameters last
    headings = re.findall(r"<h2 id='([a-z]+)'>", text)
    assert headings == ["headline", "curves", "pictures", "versions", "scoring", "metrics", "run", "parameters"]
    headline = text.split("<h2 id='headline'>")[1].split("<h2")[0]
    assert re.search(r"<td>test recon_mse_ratio</td><td class='num'>0.250</td><td>1.000 \(mean image\)</td>"
                     r"<td>&lt;= 0.2</td><td class='fail'>does not clear the bar</td>", headline), headline  # fmt: skip
    assert text.index("id='headline'") < text.index("id='curves'") < text.index("id='parameters'")
    assert text.index("<td>latent_dim</td>") > text.index("id='parameters'")

    metrics = text.split("id='metrics'")[1].split("<h2")[0]
    assert re.search(
        r"<td>loss</td><td class=\"num\">0.4</td><td class=\"num\">2</td><td class=\"num\">3</td>", metrics
    )
    assert '<td>test_accuracy</td><td class="num">0.875</td>' in metrics
    assert "<td>latent_dim</td><td>16</td>" in text
    # one chart for loss+val_loss (test_accuracy has a single point) and both pictures, embedded
    images = re.findall(r"src='data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)'", text)
    assert [m for m, _ in images] == ["image/png", "image/jpeg", "image/png"]
    recon = Path(reported_run["tmp"]) / "pictures" / "recon.png"
    assert base64.b64decode(images[2][1]) == recon.read_bytes()
    assert "notes.txt" not in text
    assert "http" not in text.replace(mlflow_server, "")  # no external assets
    assert re.search(
        rf"<td>{reported_run['name']}</td><td class=\"num\">{reported_run['version']}</td><td>candidate</td>", text
    )
    assert "celeba-new" in text and '<td>truncated</td><td class="num">1</td>' in text
    assert "passed in #1" in text and "top1_accuracy" in text

    client = MlflowClient(mlflow_server)
    logged = [a.path for a in client.list_artifacts(run_id, "report")]
    assert logged == ["report/report.html"]
    import mlflow

    copy = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="report/report.html",
                                               dst_path=str(tmp_path / "dl"))  # fmt: skip
    assert Path(copy).read_text() == text
    summary_back = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="scoring/celeba-new/_summary.json",
                                                       dst_path=str(tmp_path / "dl2"))  # fmt: skip
    assert json.loads(Path(summary_back).read_text())["failed_by_reason"] == {"truncated": 1}


def test_report_unknown_run_fails(tracking, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    from sparkvision.reporting import write_report

    with pytest.raises(MlflowException):
        write_report(tracking, "0" * 32, tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
