"""A pipeline's closing summary against a real MLflow server: the verdict of the run behind each
registered model, then the experiment's Training runs page and the other places to look."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from sparkvision.config import Config


def _registered_run(tracking, experiment: str, name: str, metrics: dict[str, float]) -> str:
    """A finished run with ``metrics``, registered as ``name@candidate``; returns its run id."""
    run_id = tracking.create_run(experiment, f"{name}-train")
    tracking.log_metrics(run_id, metrics, step=0)
    tracking.finish_run(run_id)
    client = tracking.client
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{tracking.run(run_id).info.artifact_uri}/model", run_id=run_id)
    client.set_registered_model_alias(name, "candidate", mv.version)
    return run_id


def test_where_to_look_judges_each_model_then_links_the_runs_page(cfg: Config, tracking, capsys,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    from sparkvision.results import where_to_look

    prefix = f"results-{uuid.uuid4().hex[:6]}"
    run_cfg = cfg.replace(**{"mlflow.tracking_uri": tracking.uri, "train.registered_model_prefix": prefix,
                             "train.experiment": prefix, "train.alias": "candidate"})  # fmt: skip
    _registered_run(tracking, prefix, f"{prefix}-vae", {"test_recon_mse_ratio": 0.15})
    _registered_run(tracking, prefix, f"{prefix}-detector", {"test_mae_ratio": 0.5, "test_shifted_mae_ratio": 1.2})
    _registered_run(tracking, prefix, f"{prefix}-fabric_ae", {"test_loss": 0.1})  # its headline never logged
    (tmp_path / "vae-x.html").write_text("<html></html>")
    capsys.readouterr()  # MLflow's "View run" lines

    got = where_to_look(run_cfg, reports=str(tmp_path), models=["vae", "detector", "face_embed", "fabric_ae"])
    lines = capsys.readouterr().out.splitlines()

    assert lines[0].split()[:3] == ["model", "headline", "metric"]
    assert lines[1].startswith("vae") and re.search(r"<= 0.2 +clears the bar$", lines[1])
    assert lines[2].startswith("detector") and "1.200" in lines[2] and lines[2].endswith("does not clear the bar")
    assert lines[3].startswith("face_embed") and lines[3].endswith("not logged (no run)")  # not registered
    assert lines[4].startswith("fabric_ae") and lines[4].endswith("not logged (no test_image_auroc)")
    assert lines[5] == ""
    experiment = tracking.client.get_experiment_by_name(prefix).experiment_id
    runs_page = f"{tracking.uri}/#/experiments/{experiment}/runs"
    assert lines[6] == f"MLflow UI:      {runs_page}"
    assert lines[7] == f"report:         {tmp_path / 'vae-x.html'}"
    assert got["mlflow"] == runs_page
    assert got["verdicts"] == {"vae": "clears the bar", "detector": "does not clear the bar",
                               "face_embed": "not logged", "fabric_ae": "not logged"}  # fmt: skip


def test_without_models_no_table(cfg: Config, tracking, capsys) -> None:
    from sparkvision.results import where_to_look

    run_cfg = cfg.replace(**{"mlflow.tracking_uri": tracking.uri, "train.experiment": f"none-{uuid.uuid4().hex[:6]}"})
    got = where_to_look(run_cfg)
    lines = capsys.readouterr().out.splitlines()
    # no such experiment yet: the server's address
    assert lines[0] == f"MLflow UI:      {tracking.uri}" and got["verdicts"] == {}
