"""Where a pipeline's results are: the run behind a registered model, its HTML report, and a
closing "where to look" summary. Pipelines call these as ``python:`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkvision.config import Config

if TYPE_CHECKING:
    from sparkvision.tracking import Tracking


def registered_run(tracking: Tracking, cfg: Config, model: str) -> str:
    """The MLflow run id that produced ``<train.registered_model_prefix>-<model>@<train.alias>``."""
    name = f"{cfg.train.registered_model_prefix}-{model}"
    return str(tracking.resolve(f"models:/{name}@{cfg.train.alias}").run_id)


def report_registered(cfg: Config, models: Sequence[str], out_dir: str = "") -> list[str]:
    """Write the HTML report of the run behind each registered model (``<prefix>-<model>@<alias>``).

    Args:
        cfg: Configuration (registry prefix, alias, tracking server, ``paths.runs``).
        models: Model families, e.g. ``[vae, attributes]``.
        out_dir: Folder of the reports; default ``<paths.runs>/reports``.

    Returns:
        The written HTML files.
    """
    from sparkvision.reporting import write_report
    from sparkvision.tracking import Tracking

    tracking = Tracking.from_config(cfg)
    folder = Path(out_dir) if out_dir else cfg.path("runs") / "reports"
    paths = []
    for model in models:
        run_id = registered_run(tracking, cfg, model)
        # write_report logs the path; where_to_look lists them all at the end
        paths.append(str(write_report(tracking, run_id, folder / f"{model}-{run_id}.html")))
    return paths


def where_to_look(cfg: Config, reports: str = "", scores: Sequence[str] = ()) -> dict[str, Any]:
    """Print where the results of a pipeline are: MLflow UI, reports, score tables, how to stop the server."""
    from sparkvision.tracking import TrackingError, tracking_uri

    try:
        ui = tracking_uri(cfg)
    except TrackingError:
        ui = "(no MLflow server running)"
    found_reports = sorted(str(p) for p in Path(reports).glob("*.html")) if reports else []
    lines = [f"MLflow UI:      {ui}"]
    lines += [f"report:         {r}" for r in found_reports]
    lines += [f"scores:         {s}" for s in scores]
    lines += [
        f"configuration:  sparkvision config show --env {cfg.env}",
        f"stop MLflow:    sparkvision mlflow stop --env {cfg.env}",
    ]
    print("\n".join(lines))
    return {"mlflow": ui, "reports": found_reports, "scores": list(scores)}
