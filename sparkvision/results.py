"""Where a pipeline's results are: the run behind a registered model, its HTML report, and a
closing summary (how each model did against its baseline, then where to look). Pipelines call
these as ``python:`` steps.
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


def registered_metrics(tracking: Tracking | None, cfg: Config, models: Sequence[str]) -> dict[str, dict | None]:
    """The metrics of the run behind each registered model ``<train.registered_model_prefix>-<model>@<train.alias>``.

    Args:
        tracking: The MLflow server; None: no server, every model has no run.
        cfg: Configuration (registry prefix and alias).
        models: Model families.

    Returns:
        Family → the run's metrics (latest values), or None when no version holds the alias.
    """
    found: dict[str, dict | None] = {}
    for model in models:
        ref = tracking.alias_ref(f"{cfg.train.registered_model_prefix}-{model}", cfg.train.alias) if tracking else None
        found[model] = dict(tracking.run(ref.run_id).data.metrics) if ref is not None and ref.run_id else None
    return found


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


def where_to_look(
    cfg: Config, reports: str = "", scores: Sequence[str] = (), models: Sequence[str] = ()
) -> dict[str, Any]:
    """Print how each model did against its baseline, then where the results of a pipeline are.

    Args:
        cfg: Configuration (tracking server, registry prefix and alias, ``train.experiment``).
        reports: Folder of the HTML reports.
        scores: Score tables to list.
        models: Model families to judge (``headlines.HEADLINES``), read from the run behind each
            registered ``<prefix>-<model>@<alias>``; none: no table.

    Returns:
        ``mlflow`` (the experiment's runs page), ``reports``, ``scores`` and ``verdicts``
        (family → ``clears the bar``, ``does not clear the bar`` or ``not logged``).
    """
    from sparkvision.headlines import verdict_table, verdicts
    from sparkvision.tracking import Tracking, TrackingError, tracking_uri

    try:
        tracking: Tracking | None = Tracking(tracking_uri(cfg))
    except TrackingError:
        tracking = None
    judged = verdicts(registered_metrics(tracking, cfg, models), models) if models else []
    ui = tracking.experiment_url(cfg.train.experiment) if tracking else "(no MLflow server running)"
    found_reports = sorted(str(p) for p in Path(reports).glob("*.html")) if reports else []
    lines = [*verdict_table(judged), ""] if judged else []
    lines += [f"MLflow UI:      {ui}"]
    lines += [f"report:         {r}" for r in found_reports]
    lines += [f"scores:         {s}" for s in scores]
    lines += [
        f"configuration:  sparkvision config show --env {cfg.env}",
        f"stop MLflow:    sparkvision mlflow stop --env {cfg.env}",
    ]
    print("\n".join(lines))
    return {"mlflow": ui, "reports": found_reports, "scores": list(scores),
            "verdicts": {v.headline.family: v.outcome for v in judged}}  # fmt: skip
