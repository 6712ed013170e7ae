"""Self-contained HTML report of one MLflow run, logged back to the run as ``report/report.html``.

The page needs nothing but itself: CSS is inline and every image (metric curves drawn from the
metric history, the run's ``pictures/`` and ``latent/`` artifacts: the training-time pictures and
those of ``sparkvision vae``) is embedded as a base64 ``data:`` URI, so it
can be mailed, attached to a ticket or opened from the MLflow UI's artifact view.

Sections, what a person came for first: the headline metric beside its baseline and verdict
(``sparkvision.headlines``, when the run's family has one), metric curves, pictures, registered
model versions and aliases, scoring summaries (``scoring/**/_summary.json`` artifacts written by
``log_scoring_summary``, plus any passed in), promotion decisions, inspections, the final metrics,
the run's facts and, last, its parameters.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkvision.tracking import Tracking

log = logging.getLogger(__name__)

PICTURE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
REPORT_ARTIFACT_DIR = "report"
SCORING_ARTIFACT_DIR = "scoring"
PROMOTION_ARTIFACT_DIR = "promotion"
"""``sparkvision.promotion.ARTIFACT_DIR``: the promotion decisions about this run's model."""
INSPECTION_ARTIFACT_DIR = "inspection"
"""``sparkvision.scoring.inspect.ARTIFACT_DIR``: whole-image inspections with this run's model."""
PICTURE_DIRS = ("pictures/", "latent/")
"""Artifact folders whose pictures the report shows (``latent/``: ``sparkvision vae``'s grids)."""
FAMILY_TAG = "sparkvision.task"
"""Run tag naming the model family (set by ``training.tracking_log.log_inputs``; param ``train.model`` too)."""

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #e4e4e4;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}th,td{border:1px solid #ddd;padding:.3em .7em;text-align:left;vertical-align:top}
th{background:#f4f6f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid figure{margin:0;border:1px solid #e4e4e4;padding:.5em;background:#fafafa}
figure img{max-width:500px;display:block}figcaption{font-size:.85em;color:#555;margin-top:.3em}
.muted{color:#777}pre{background:#f6f8fa;padding:.6em;overflow:auto;font-size:.85em}
nav{font-size:.9em;margin:.4em 0 1em}nav a{margin-right:1em}
table.headline{font-size:1.1em}table.headline td{padding:.5em .9em}
.pass{color:#11772b;font-weight:600}.fail{color:#b3261e;font-weight:600}
"""


def log_scoring_summary(tracking: Tracking, run_id: str, summary: Mapping[str, Any], name: str | None = None) -> str:
    """Log a scoring summary to a run as ``scoring/<name>/_summary.json``.

    Args:
        tracking: The MLflow server of the run.
        run_id: The run to attach the summary to (usually the run that trained the model).
        summary: The dict returned by ``sparkvision.scoring.score`` (or ``faces.identify``).
        name: Folder under ``scoring/``; default the output folder's name.

    Returns:
        The artifact path of the logged file.
    """
    label = name or Path(str(summary.get("output") or "job")).name or "job"
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    tracking.log_text(
        run_id, json.dumps(summary, indent=2, default=str), f"{SCORING_ARTIFACT_DIR}/{label}/_summary.json"
    )
    return f"{SCORING_ARTIFACT_DIR}/{label}/_summary.json"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def metric_curves(histories: Mapping[str, Sequence[tuple[int, float]]]) -> list[tuple[str, bytes]]:
    """PNG line charts of metric histories; ``x`` and ``val_x`` share one chart.

    Charts of what the model learned come first: those with a validation twin (losses before the
    rest), then the others (learning rate, epoch time, throughput, input wait).

    Args:
        histories: Metric key → ``(step, value)`` points.

    Returns:
        ``(title, png bytes)`` per chart, for metrics with at least two points.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups: dict[str, list[str]] = {}
    for key in sorted(histories):
        if len(histories[key]) >= 2:
            groups.setdefault(re.sub(r"^(val|validation|test)_", "", key), []).append(key)

    def learned_first(item: tuple[str, list[str]]) -> tuple[bool, bool, str]:
        title, keys = item
        return not any(k.startswith(("val_", "validation_")) for k in keys), "loss" not in title, title

    charts = []
    for title, keys in sorted(groups.items(), key=learned_first):
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
        for key in keys:
            steps, values = zip(*sorted(histories[key]), strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=key)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        charts.append((title, buf.getvalue()))
    return charts


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f'<td class="num">{v:.6g}</td>'
        if isinstance(v, int) and not isinstance(v, bool):
            return f'<td class="num">{v}</td>'
        return f"<td>{html.escape('' if v is None else str(v))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _time(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else ""


def _summary_html(source: str, s: Mapping[str, Any]) -> str:
    keys = ("output", "inputs", "scored", "failed", "skipped", "rows", "seconds", "images_per_s", "scored_at")
    facts = [(k, s[k]) for k in keys if k in s]
    model = s.get("model") if isinstance(s.get("model"), Mapping) else {}
    for k in ("name", "version", "run_id", "task"):
        if model.get(k) is not None:
            facts.append((f"model {k}", model[k]))
    for k, v in s.items():  # anything else scalar (accuracy, far, threshold, ...)
        if k not in keys and isinstance(v, (int, float, str)) and k not in ("input", "version"):
            facts.append((k, v))
    reasons = s.get("failed_by_reason") or {}
    extra = _table(["reason", "rows"], sorted(reasons.items())) if reasons else ""
    return f"<h3>{html.escape(source)}</h3>" + _table(["key", "value"], facts) + extra


def _promotion_html(decisions: Sequence[Mapping[str, Any]]) -> list[str]:
    """The promotion decisions (oldest first), each with its comparison of every shared metric."""
    if not decisions:
        return []
    parts = ["<h2 id='promotion'>Promotion</h2>"]
    for d in sorted(decisions, key=lambda d: str(d.get("decided_at"))):
        cand, champ = d.get("candidate") or {}, d.get("champion") or {}
        ours, theirs = cand.get("metrics") or {}, champ.get("metrics") or {}
        names = [d["metric"], *sorted(k for k in ours if k != d["metric"])]
        head = f"<h3>{html.escape(str(d.get('decided_at')))}: {html.escape(str(d.get('outcome')))}</h3>"
        parts.append(head + f"<p>{html.escape(str(d.get('reason')))} (dataset {html.escape(str(d.get('dataset')))}; "
                     f"{html.escape(str(d['metric']))}: {html.escape(str(d.get('direction')))} wins, floor "
                     f"{d.get('floor')}, minimum improvement {d.get('min_improvement')})</p>")  # fmt: skip
        champion = f"champion v{champ.get('version')}" if champ else "champion (none)"
        parts.append(_table(["metric", f"candidate v{cand.get('version')}", champion],
                            [(n, ours.get(n), theirs.get(n)) for n in names]))  # fmt: skip
    return parts


def _inspection_html(
    summaries: Sequence[tuple[str, Mapping[str, Any]]], overlays: Sequence[tuple[str, str]]
) -> list[str]:
    """Whole-image inspections: their facts, per-defect-type figures and the logged heatmap overlays."""
    if not summaries and not overlays:
        return []
    parts = ["<h2 id='inspection'>Inspection</h2>"]
    for source, s in summaries:
        keys = ("output", "version", "inputs", "inspected", "defective", "good", "failed", "threshold", "seconds")
        parts.append(f"<h3>{html.escape(source)}</h3>" + _table(["key", "value"], [(k, s[k]) for k in keys if k in s]))
        by_type = (s.get("evaluation") or {}).get("by_defect_type") or {}
        if by_type:
            cols = ["images", "image_auroc", "pixel_auroc", "aupro"]
            parts.append(_table(["defect type", *cols], [(t, *(m.get(c) for c in cols)) for t, m in by_type.items()]))
        folder = source.rsplit("/", 1)[0] + "/"
        pics = [(p, src) for p, src in overlays if p.startswith(folder)]
        if pics:
            parts.append("<div class='grid'>" + "".join(
                f"<figure><img alt='{html.escape(p)}' src='{src}'><figcaption>{html.escape(Path(p).name)}"
                "</figcaption></figure>" for p, src in pics) + "</div>")  # fmt: skip
    return parts


def _headline_html(run: Any) -> list[str]:
    """The run's headline metric beside its baseline, bar and verdict; nothing when its family has none."""
    from sparkvision.headlines import headline, verdict

    family = run.data.tags.get(FAMILY_TAG) or run.data.params.get("train.model")
    h = headline(family) if family else None
    if h is None:
        return []
    v = verdict(h, run.data.metrics)
    style = {True: "pass", False: "fail", None: "muted"}[v.passed]
    row = (f"<tr><td>{html.escape(h.label)}</td><td class='num'>{html.escape(v.value_text)}</td>"
           f"<td>{html.escape(v.baseline_text)}</td><td>{html.escape(h.bar_text)}</td>"
           f"<td class='{style}'>{html.escape(v.outcome)}</td></tr>")  # fmt: skip
    head = "".join(f"<th>{c}</th>" for c in ("headline metric", "value", "baseline", "bar", "verdict"))
    note = f"<p class='muted'>{html.escape(v.note)}</p>" if v.note else ""
    return ["<h2 id='headline'>Headline</h2>",
            f"<table class='headline'><thead><tr>{head}</tr></thead><tbody>{row}</tbody></table>{note}"]  # fmt: skip


def write_report(
    tracking: Tracking,
    run_id: str,
    out: str | os.PathLike[str],
    summaries: Sequence[Mapping[str, Any]] = (),
    log_to_run: bool = True,
) -> Path:
    """Write the HTML report of ``run_id`` and log it to the run as ``report/report.html``.

    Args:
        tracking: The MLflow server of the run.
        run_id: The MLflow run.
        out: HTML file to write.
        summaries: Scoring summaries to show besides those logged under ``scoring/``.
        log_to_run: Also log the file to the run.

    Returns:
        The path of the HTML file.

    Raises:
        mlflow.exceptions.MlflowException: Unknown run id (message from the server).
    """
    client = tracking.client
    run = tracking.run(run_id)
    out = Path(out)
    experiment = client.get_experiment(run.info.experiment_id)

    histories = tracking.histories(run_id)
    charts = metric_curves(histories)
    artifacts = tracking.list_artifacts(run_id)
    pictures: list[tuple[str, str]] = []
    found: list[tuple[str, Mapping[str, Any]]] = []
    decisions: list[Mapping[str, Any]] = []
    inspections: list[tuple[str, Mapping[str, Any]]] = []
    overlays: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in artifacts:
            suffix = Path(path).suffix.lower()
            if path.startswith(f"{PROMOTION_ARTIFACT_DIR}/") and suffix == ".json":
                decisions.append(json.loads(tracking.download(run_id, path, tmp).read_text()))
            elif path.startswith(f"{INSPECTION_ARTIFACT_DIR}/") and path.endswith("_summary.json"):
                inspections.append((path, json.loads(tracking.download(run_id, path, tmp).read_text())))
            elif path.startswith(f"{INSPECTION_ARTIFACT_DIR}/") and suffix in PICTURE_TYPES:
                data = tracking.download(run_id, path, tmp).read_bytes()
                overlays.append((path, _data_uri(data, PICTURE_TYPES[suffix])))
            elif path.startswith(PICTURE_DIRS) and suffix in PICTURE_TYPES:
                data = tracking.download(run_id, path, tmp).read_bytes()
                pictures.append((path, _data_uri(data, PICTURE_TYPES[suffix])))
            elif path.startswith(f"{SCORING_ARTIFACT_DIR}/") and path.endswith("_summary.json"):
                found.append((path, json.loads(tracking.download(run_id, path, tmp).read_text())))
    found += [(f"passed in #{i + 1}", s) for i, s in enumerate(summaries)]
    # the model's own pictures first; training-time curve_*.png repeat the metric curves above
    pictures.sort(key=lambda item: (Path(item[0]).name.startswith("curve"), item[0]))

    versions = []
    for mv in client.search_model_versions(f"run_id='{run_id}'"):
        full = client.get_model_version(mv.name, mv.version)
        versions.append(
            (full.name, int(full.version), ", ".join(sorted(getattr(full, "aliases", []) or [])), full.status,
             _time(full.creation_timestamp), full.source)
        )  # fmt: skip
    versions.sort()

    info = run.info
    facts = [
        ("run id", info.run_id), ("run name", info.run_name), ("experiment", experiment.name),
        ("status", info.status), ("started", _time(info.start_time)), ("ended", _time(info.end_time)),
        ("tracking server", tracking.uri),
    ]  # fmt: skip
    headline = _headline_html(run)
    sections = [(anchor, title) for anchor, title, shown in (
        ("headline", "Headline", headline), ("curves", "Metric curves", True), ("pictures", "Pictures", True),
        ("versions", "Registered model versions", True), ("scoring", "Scoring", True),
        ("promotion", "Promotion", decisions), ("inspection", "Inspection", inspections or overlays),
        ("metrics", "Final metrics", True), ("run", "Run", True), ("parameters", "Parameters", True)) if shown]  # fmt: skip
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>sparkvision run {html.escape(run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Run {html.escape(info.run_name or run_id)}</h1>",
        f"<p class='muted'>{html.escape(experiment.name)} · {html.escape(info.status)} · "
        f"{_time(info.start_time)} · generated {datetime.now(UTC):%Y-%m-%d %H:%M:%S UTC} by sparkvision report</p>",
        "<nav>" + "".join(f"<a href='#{a}'>{t}</a>" for a, t in sections) + "</nav>",
        *headline,
        "<h2 id='curves'>Metric curves</h2>",
        "<div class='grid'>" + "".join(
            f"<figure><img alt='{html.escape(t)}' src='{_data_uri(png, 'image/png')}'><figcaption>{html.escape(t)}"
            "</figcaption></figure>" for t, png in charts) + "</div>" if charts else "<p>no metric has two points</p>",
        "<h2 id='pictures'>Pictures</h2>",
        "<div class='grid'>" + "".join(
            f"<figure><img alt='{html.escape(p)}' src='{src}'><figcaption>{html.escape(p)}</figcaption></figure>"
            for p, src in pictures) + "</div>" if pictures else "<p>no pictures/ or latent/ artifacts</p>",
        "<h2 id='versions'>Registered model versions</h2>",
        _table(["model", "version", "aliases", "status", "created", "source"], versions)
        if versions else "<p>no registered model version comes from this run</p>",
        "<h2 id='scoring'>Scoring</h2>",
        "".join(_summary_html(src, s) for src, s in found) if found else "<p>no scoring summaries</p>",
        *_promotion_html(decisions),
        *_inspection_html(inspections, overlays),
        "<h2 id='metrics'>Final metrics</h2>",
        _table(["metric", "value", "step", "points"],
               [(k, float(v), max((s for s, _ in histories[k]), default=0), len(histories[k]))
                for k, v in sorted(run.data.metrics.items())])
        if run.data.metrics else "<p>none</p>",
        "<h2 id='run'>Run</h2>",
        _table(["", ""], facts),
        "<h2 id='parameters'>Parameters</h2>",
        _table(["parameter", "value"], sorted(run.data.params.items())) if run.data.params else "<p>none</p>",
        "</body></html>",
    ]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    tmp_out.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp_out, out)
    if log_to_run:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "report.html"
            copy.write_bytes(out.read_bytes())
            tracking.log_artifact(run_id, copy, REPORT_ARTIFACT_DIR)
    log.info("report of run %s: %s (%d charts, %d pictures)", run_id, out, len(charts), len(pictures))
    return out
